"""The PhEval runner plugin: rarejax evaluate ranks the corpus, PhEval's post-processing scores it.

prepare checks the settings and the corpus, run ranks every phenopacket with `rarejax evaluate`,
post_process writes PhEval's disease results from rarejax's ranked lists.

Registered as `rarejaxphevalrunner` under PhEval's `pheval.plugins` entry point group (setup.py);
needs the `pheval` extra. Output layout (pheval run --output-dir OUT):

  OUT/raw_results/      rarejax's own report of the run (cases.tsv, metrics.json, report.md)
                        and evaluate.log, the command's output
  OUT/pheval_disease_results/NAME-disease_result.parquet
                        one per phenopacket NAME.json, by pheval's generate_disease_result

PhEval ranks by score and gives tied scores the same, worst rank, so a gold disease that rarejax
placed first among equals (its seeded tie-break) can rank lower in PhEval; the model's
candidates are scored 1/rank (its answers carry ranks, not scores).
"""
from __future__ import annotations

import pathlib
import subprocess
import sys

import polars as pl
from pheval.post_processing import post_processing
from pheval.runners.runner import PhEvalRunner

from rarejax.pheval import options as options_lib
from rarejax.pheval import results

LOG = "evaluate.log"


class RarejaxPhEvalRunner(PhEvalRunner):
  """rarejax's classical rankers, or a rarejax export, as a PhEval disease prioritisation tool."""

  @property
  def phenopacket_dir(self) -> pathlib.Path:
    return pathlib.Path(self.testdata_dir) / "phenopackets"

  def options(self) -> options_lib.Options:
    """The checked settings of INPUT_DIR/config.yaml (raises ConfigError naming the field)."""
    config = self.input_dir_config
    where = pathlib.Path(self.input_dir) / "config.yaml"
    if not config.disease_analysis or config.gene_analysis or config.variant_analysis:
      raise options_lib.ConfigError(
          f"{where}: rarejax ranks diseases only; set disease_analysis: true, gene_analysis: "
          "false and variant_analysis: false")
    return options_lib.parse(config.tool_specific_configuration_options, self.input_dir)

  def prepare(self):
    """Checks the settings and that the corpus's phenopackets can be told apart by id."""
    self.options()
    results.case_files(self.phenopacket_dir)

  def run(self):
    """`rarejax evaluate` on the corpus with the configured method, into raw_results/."""
    argv = options_lib.evaluate_argv(self.options(), self.phenopacket_dir, self.raw_results_dir)
    command = [sys.executable, "-m", "rarejax.evaluate.run", *argv]
    log = self.raw_results_dir / LOG
    with open(log, "w", encoding="utf-8") as stream:
      code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT,
                            check=False).returncode
    if code:
      lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
      raise RuntimeError(f"rarejax evaluate exited {code}: {lines[-1] if lines else '(no output)'}"
                         f" (command: {' '.join(command)}; full output: {log})")

  def post_process(self):
    """One PhEval disease result per phenopacket from the ranked lists in raw_results/cases.tsv;
    a phenopacket rarejax could not read or rank gets PhEval's not-found result."""
    output_dir = pathlib.Path(self.output_dir)
    files = results.case_files(self.phenopacket_dir)
    lists = results.ranked_lists(self.raw_results_dir / "cases.tsv", self.options().result_name)
    unknown = sorted(set(lists) - set(files))
    if unknown:
      raise ValueError(f"{self.raw_results_dir / 'cases.tsv'}: case {unknown[0]!r} is no "
                       f"phenopacket of {self.phenopacket_dir}; rerun pheval run on this corpus")
    post_processing.create_empty_pheval_result(
        self.phenopacket_dir, output_dir / "pheval_disease_results",
        post_processing.ResultType.DISEASE)
    for case_id, ranked in lists.items():
      if not ranked:
        continue
      frame = pl.DataFrame({"disease_identifier": [r.disease_id for r in ranked],
                            "score": [r.score for r in ranked]},
                           schema={"disease_identifier": pl.String, "score": pl.Float64})
      post_processing.generate_disease_result(
          frame, post_processing.SortOrder.DESCENDING, output_dir,
          pathlib.Path(f"{files[case_id]}.json"), self.phenopacket_dir)

  def construct_meta_data(self):
    """PhEval's run metadata (results.yml) with the runner's settings."""
    meta = self.meta_data
    meta.tool_specific_configuration_options = self.options().as_dict()
    return meta
