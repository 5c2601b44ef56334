"""Tests for the evaluation runner and its CLI: clear errors on bad input and a tiny honest run end to
end (no shared data needed)."""
import dataclasses
import json

import pytest

from rarejax.cases import PatientSimulator, render_cases, write_jsonl
from rarejax.evaluate import run

DISEASES = ["OMIM:154700", "OMIM:219700", "OMIM:143100", "OMIM:176270"]


def _main(capsys, *argv):
  with pytest.raises(SystemExit) as exit_info:
    run.main(list(argv))
  return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--benchmark", "texts:/no/such/dir", "--methods", "resnik"],
     "case-text source not found: /no/such/dir"),
    (["--benchmark", "jsonl:/no/such.jsonl", "--methods", "resnik"],
     "JSONL file not found: /no/such.jsonl"),
    (["--benchmark", "phenopackets:/no/such.zip:validation"],
     "phenopacket source not found: /no/such.zip"),
    (["--benchmark", "csv:/x"], "bad benchmark 'csv:/x'"),
    (["--benchmark", "simulated:5:2", "--methods", "resnik,phenomizer"],
     "unknown method 'phenomizer'"),
    (["--benchmark", "simulated:5:2", "--modes", "oracle,audio"], "unknown mode 'audio'"),
    (["--benchmark", "simulated:5:2", "--methods", "resnik,resnik"], "at least one distinct"),
    (["--benchmark", "simulated:5:2", "--validation_fraction", "1.5"], "must be in (0, 1)"),
    (["--benchmark", "simulated:5:2", "--methods", "case_knn"], "need training cases"),
    (["--benchmark", "simulated:5:2", "--train_cases", "texts:/x"], "kind must be one of"),
    (["--benchmark", "simulated:5:2", "--methods", "resnik", "--exclude_pmids", "/no/such.txt"],
     "PMID exclusion file not found: /no/such.txt"),
])
def test_bad_inputs_give_clear_errors(capsys, tmp_path, argv, message):
  code, err = _main(capsys, *argv, "--out", str(tmp_path / "out"), "--quiet")
  assert code == 2 and message in err


def test_empty_benchmark_is_an_error(capsys, tmp_path):
  (tmp_path / "empty.jsonl").write_text("\n")
  code, err = _main(capsys, "--benchmark", f"jsonl:{tmp_path / 'empty.jsonl'}", "--methods",
                    "resnik", "--out", str(tmp_path / "out"), "--quiet")
  assert code == 2 and "no readable JSONL cases" in err


def test_tiny_honest_run_end_to_end(kb, tmp_path, capsys):
  simulator = PatientSimulator(kb)
  evaluated = render_cases(simulator.simulate_many(DISEASES, 2, seed=11), kb, seed=11)
  train = render_cases(simulator.simulate_many(DISEASES[:3], 3, seed=12), kb, seed=12)
  evaluated = [dataclasses.replace(c, pmid=f"PMID:90000{i}") for i, c in enumerate(evaluated)]
  evaluated[0] = dataclasses.replace(evaluated[0], gold_ids=("OMIM:999999",))  # no annotation
  train = [dataclasses.replace(c, pmid=f"PMID:80000{i % 4}") for i, c in enumerate(train)]
  write_jsonl(evaluated, tmp_path / "eval.jsonl")
  write_jsonl(train, tmp_path / "train.jsonl")
  out = tmp_path / "out"
  assert run.main(["--benchmark", f"jsonl:{tmp_path / 'eval.jsonl'}", "--benchmark",
                   "simulated:3:1", "--train_cases", f"jsonl:{tmp_path / 'train.jsonl'}",
                   "--tuning_fraction", "0.5", "--out", str(out), "--n_bootstrap", "50",
                   "--quiet"]) == 0
  printed = capsys.readouterr().out
  assert "| rrf.text |" in printed and "report.md" in printed
  doc = json.loads((out / "metrics.json").read_text())
  assert set(doc["benchmarks"]) == {"jsonl", "simulated_3x1"}
  jsonl = doc["benchmarks"]["jsonl"]
  assert set(jsonl["methods"]) == {f"{n}.{m}" for m in ("oracle", "text") for n in
                                   ("resnik", "likelihood_ratio", "case_resnik", "rrf")}
  styles = {k: n for k, n in jsonl["slices"].items() if k.startswith("style:")}
  assert {k: n for k, n in jsonl["slices"].items() if k not in styles} == {
      "all": 8, "seen": 5, "unseen": 3, "unannotated": 1, "few_findings": 0}
  assert sum(styles.values()) == 8 and len(styles) > 1  # rendered notes, sliced by style
  assert jsonl["methods"]["resnik.oracle"]["metrics"]["unannotated"]["found"]["value"] == 0.0
  assert jsonl["n_excluded_publications"] == 8
  assert doc["provenance"]["knowledge"]["n_excluded_pmids"] == 8
  assert doc["provenance"]["config"]["n_train_cases"] == 9
  assert "fusion_tuning" in doc["provenance"]["knowledge_stamps"]
  assert (out / "report.md").exists() and (out / "cases.tsv").exists()
