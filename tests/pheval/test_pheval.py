"""Tests for rarejax as a PhEval runner: its settings and result reading, then `pheval run` with
Resnik and likelihood ratio on four phenopackets and `pheval-utils benchmark` comparing them.

The PhEval tests skip when pheval (the `pheval` extra) is not installed. The corpus,
tests/fixtures/pheval_corpus/phenopackets, holds one simulated patient (rarejax PatientSimulator,
seed 7) of each of Marfan syndrome, cystic fibrosis, Huntington disease and Prader-Willi
syndrome, written as Phenopacket v2 files.
"""
import csv
import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from rarejax.pheval import options as options_lib
from rarejax.pheval import results
from tests.paths import EXPERIMENTS, FIXTURES, ROOT

CORPUS = FIXTURES / "pheval_corpus"
PHENOPACKETS = CORPUS / "phenopackets"
INPUT_DIRS = EXPERIMENTS / "pheval"
RUNNERS = ("resnik", "likelihood_ratio")
GOLD = {"rarejax_sim_1": "OMIM:154700", "rarejax_sim_2": "OMIM:219700",
        "rarejax_sim_3": "OMIM:143100", "rarejax_sim_4": "OMIM:176270"}


# ---- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    (None, "must be a mapping with at least 'method'"),
    ({"method": "phenomizer"}, ".method: got 'phenomizer'; set one of model, resnik"),
    ({"method": "resnik", "modes": "oracle"}, ".modes: unknown setting"),
    ({"method": "resnik", "mode": "audio"}, ".mode: got 'audio'; set one of oracle, text"),
    ({"method": "model", "mode": "oracle"}, ".mode: the model reads the note"),
    ({"method": "resnik", "top_k": 0}, ".top_k: got 0; set a whole number >= 1"),
    ({"method": "resnik", "top_k": True}, ".top_k: got True"),
    ({"method": "resnik", "checkpoint": "export"}, ".checkpoint: only the model reads"),
    ({"method": "resnik", "exclude_pmids": "pmids.txt"}, ".exclude_pmids: got 'pmids.txt'"),
    ({"method": "case_knn"}, ".train_cases: case_knn ranks by similar training cases"),
    ({"method": "rrf", "train_cases": ["texts:cases"]}, ".train_cases[0]: got 'texts:cases'"),
])
def test_bad_settings_name_file_field_and_fix(raw, message):
  with pytest.raises(options_lib.ConfigError) as error:
    options_lib.parse(raw, "inputs/resnik")
  assert str(error.value).startswith("inputs/resnik/config.yaml: tool_specific_configuration_"
                                     "options") and message in str(error.value)


def test_settings_give_the_evaluate_command_with_paths_from_the_input_dir():
  options = options_lib.parse({"method": "rrf", "mode": "text", "top_k": 5,
                               "exclude_pmids": ["pmids.txt", "/abs/more.txt"],
                               "train_cases": ["phenopackets:train.zip"]}, "inputs/rrf")
  assert options.result_name == "rrf.text"
  assert options_lib.evaluate_argv(options, "corpus/phenopackets", "out/raw_results") == [
      "--benchmark", "phenopackets:corpus/phenopackets", "--methods", "rrf", "--modes", "text",
      "--top_k", "5", "--out", "out/raw_results", "--quiet",
      "--exclude_pmids", "inputs/rrf/pmids.txt", "--exclude_pmids", "/abs/more.txt",
      "--train_cases", "phenopackets:inputs/rrf/train.zip"]
  model = options_lib.parse({"method": "model", "checkpoint": "export"}, "inputs/model")
  assert model.result_name == "model.text" and model.checkpoint == "inputs/model/export"


def test_committed_input_dirs_are_valid():
  for name in (*RUNNERS, "model"):
    config = yaml.safe_load((INPUT_DIRS / name / "config.yaml").read_text())
    assert config["disease_analysis"] is True and config["gene_analysis"] is False
    assert options_lib.parse(config["tool_specific_configuration_options"],
                             INPUT_DIRS / name).method == name


# ---- result reading ---------------------------------------------------------------------------

def test_case_files_map_phenopacket_ids_to_file_names(tmp_path):
  assert results.case_files(PHENOPACKETS) == {name: name for name in GOLD}
  (tmp_path / "a.json").write_text(json.dumps({"id": "same"}))
  (tmp_path / "b.json").write_text(json.dumps({"id": "same"}))
  with pytest.raises(ValueError, match="share the phenopacket id 'same'"):
    results.case_files(tmp_path)
  with pytest.raises(FileNotFoundError, match="TESTDATA_DIR/phenopackets/"):
    results.case_files(tmp_path / "phenopackets")
  (tmp_path / "a.json").unlink()
  (tmp_path / "b.json").write_text("not json")
  assert results.case_files(tmp_path) == {}


def test_ranked_lists_read_one_method_and_name_what_is_missing(tmp_path):
  rows = ["benchmark\tcase_id\tmethod\tgold_ids\tgold_rank\tn_findings\trank\tdisease_id\tlabel"
          "\tscore\tconfidence",
          "b\tc1\tresnik.oracle\tOMIM:1\t2\t3\t1\tOMIM:2\tTwo\t2.5\t",
          "b\tc1\tresnik.oracle\tOMIM:1\t2\t3\t2\tOMIM:1\tOne\t1.5\t",
          "b\tc1\tmodel.text\tOMIM:1\t\t3\t1\t\tunknown name\t1\t",
          "b\tc2\tmodel.text\tOMIM:1\t\t3\t\t\t\t\t"]
  (tmp_path / "cases.tsv").write_text("\n".join(rows) + "\n")
  lists = results.ranked_lists(tmp_path / "cases.tsv", "resnik.oracle")
  assert lists == {"c1": [results.Ranked("OMIM:2", "Two", 2.5),
                          results.Ranked("OMIM:1", "One", 1.5)]}
  assert results.ranked_lists(tmp_path / "cases.tsv", "model.text") == {"c1": [], "c2": []}
  with pytest.raises(ValueError, match="no row for method 'rrf.text'"):
    results.ranked_lists(tmp_path / "cases.tsv", "rrf.text")
  with pytest.raises(FileNotFoundError, match="run that step first"):
    results.ranked_lists(tmp_path / "missing.tsv", "resnik.oracle")


# ---- PhEval -----------------------------------------------------------------------------------

def _command(name):
  """A PhEval console script of the running environment."""
  script = pathlib.Path(sys.executable).parent / name
  return str(script) if script.exists() else shutil.which(name)


def _runner(tmp_path, settings, **analysis):
  from rarejax.pheval.runner import RarejaxPhEvalRunner
  input_dir = tmp_path / "input"
  input_dir.mkdir()
  config = {"tool": "rarejax", "tool_version": "0.1.0", "variant_analysis": False,
            "gene_analysis": False, "disease_analysis": True,
            "tool_specific_configuration_options": settings, **analysis}
  (input_dir / "config.yaml").write_text(yaml.safe_dump(config))
  out = tmp_path / "out"
  out.mkdir()
  runner = RarejaxPhEvalRunner(input_dir, CORPUS, tmp_path, out, None, "0.1.0")
  runner.build_output_directory_structure()
  return runner


def test_runner_refuses_gene_analysis_and_a_missing_corpus(tmp_path):
  pytest.importorskip("pheval")
  runner = _runner(tmp_path, {"method": "resnik"}, gene_analysis=True)
  with pytest.raises(options_lib.ConfigError, match="set disease_analysis: true, gene_analysis"):
    runner.prepare()
  runner.input_dir_config.gene_analysis = False
  runner.testdata_dir = tmp_path
  with pytest.raises(FileNotFoundError, match="TESTDATA_DIR/phenopackets/"):
    runner.prepare()


def test_run_step_names_rarejax_evaluate_error(tmp_path):
  pytest.importorskip("pheval")
  runner = _runner(tmp_path, {"method": "model", "checkpoint": "no_such_export"})
  runner.prepare()
  with pytest.raises(RuntimeError, match="rarejax evaluate exited 2: .*no_such_export"):
    runner.run()


@pytest.fixture(scope="module")
def benchmarked(tmp_path_factory):
  """`pheval run` for each runner, then `pheval-utils benchmark` with the committed
  experiments/pheval/benchmark.yaml (its results folders moved to a temporary one)."""
  pytest.importorskip("pheval")
  duckdb = pytest.importorskip("duckdb")
  root = tmp_path_factory.mktemp("pheval")
  for name in RUNNERS:
    (root / name).mkdir()
    subprocess.run([_command("pheval"), "run", "--input-dir", str(INPUT_DIRS / name),
                    "--testdata-dir", str(CORPUS), "--runner", "rarejaxphevalrunner",
                    "--output-dir", str(root / name), "--version", "0.1.0"], check=True)
  config = yaml.safe_load((INPUT_DIRS / "benchmark.yaml").read_text())
  assert [run["run_identifier"] for run in config["runs"]] == list(RUNNERS)
  for run in config["runs"]:
    run.update(phenopacket_dir=str(ROOT / run["phenopacket_dir"]),
               results_dir=str(root / run["run_identifier"]))
  (root / "benchmark.yaml").write_text(yaml.safe_dump(config))
  subprocess.run([_command("pheval-utils"), "benchmark", "--run-yaml", str(root / "benchmark.yaml"),
                  "--output-dir", str(root / "benchmark"), "--no-curves"], check=True)
  connection = duckdb.connect(str(root / "benchmark" / f"{config['benchmark_name']}.duckdb"),
                              read_only=True)
  yield root, connection
  connection.close()


def _expected_rank(root, runner, case_id):
  """PhEval's rank of the gold disease from rarejax's own list: candidates scoring at least as
  high as the gold one (ties share the worst rank); 0 when it is not listed."""
  with open(root / runner / "raw_results" / "cases.tsv", newline="") as stream:
    rows = [r for r in csv.DictReader(stream, delimiter="\t") if r["case_id"] == case_id]
  scores = {r["disease_id"]: float(r["score"]) for r in rows}
  gold = scores.get(GOLD[case_id])
  return 0 if gold is None else sum(score >= gold for score in scores.values())


def test_benchmark_ranks_are_rarejax_ranks(benchmarked):
  root, connection = benchmarked
  table = connection.execute(
      'SELECT result_file, disease_identifier, resnik, likelihood_ratio, rank_change '
      'FROM "resnik_vs_likelihood_ratio_disease_rank_changes" ORDER BY result_file').fetchall()
  assert [(r[0], r[1]) for r in table] == [(f"{case}-disease_result.parquet", gold)
                                           for case, gold in GOLD.items()]
  ranks = {name: {r[0].split("-")[0]: r[2 + i] for r in table} for i, name in enumerate(RUNNERS)}
  for name in RUNNERS:
    assert ranks[name] == {case: _expected_rank(root, name, case) for case in GOLD}
  assert sum(rank > 0 for rank in ranks["resnik"].values()) >= 3  # simulated: most are found
  summary = dict(connection.execute(
      'SELECT run_identifier, top1 FROM "rarejax_rankers_disease_summary"').fetchall())
  assert summary == {name: sum(rank == 1 for rank in ranks[name].values()) for name in RUNNERS}


def test_run_metadata_records_the_settings(benchmarked):
  root, _ = benchmarked
  meta = yaml.safe_load((root / "resnik" / "results.yml").read_text())
  assert meta["tool"] == "rarejax" and meta["tool_version"] == "0.1.0"
  assert meta["tool_specific_configuration_options"]["method"] == "resnik"
  assert (root / "resnik" / "raw_results" / "report.md").exists()
