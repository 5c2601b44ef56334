"""Integration: every stage of the method at test scale, then the ablation notebook executed on its
artifacts (nbclient), so the notebook never drifts from the result files the pipeline writes."""
import json
import os

import nbclient
import nbformat
import pytest

from rarejax import main as main_lib
from tests.paths import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tiny_full")
  assert main_lib.main(["--workdir", str(workdir), "--gin_file", "experiments/tiny_full.gin"]) == 0
  return workdir


def test_every_stage_completes_and_is_evaluated(full_run):
  stages = ("data", "cpt", "sft", "rers", "trajectory_sft", "rl", "eval")
  results = {s: json.loads((full_run / s / "result.json").read_text()) for s in stages}
  assert results["rl"]["steps"] == 2 and results["trajectory_sft"]["steps"] == 2
  assert results["rers"]["n_cases"] == 4
  for stage in ("cpt", "sft", "trajectory_sft", "rl"):
    assert 0.0 <= results["eval"][f"model.{stage}"]["top10"] <= 1.0


def test_ablation_notebook_runs_on_the_artifacts(full_run, tmp_path):
  ablations = tmp_path / "ablations"
  ablations.mkdir()
  (ablations / "rers_vs_rejection.json").write_text(json.dumps(
      {"title": "RERS vs rejection (planted)", "columns": ["top1"],
       "arms": {"rers": {"top1": 0.5}, "rejection": {"top1": 0.25}}}))
  notebook = nbformat.read(ROOT / "notebooks" / "ablation.ipynb", as_version=4)
  env = {"RAREJAX_WORKDIR": str(full_run), "RAREJAX_ABLATIONS": str(ablations)}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
  finally:
    for k, v in old.items():
      os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
  text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
  for expected in ("trajectory_sft", "model.rl", "resnik.text", "cases covered:",
                   "RERS vs rejection (planted)", "rejection  0.25"):
    assert expected in text, expected
  images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert len(images) >= 2  # the accuracy bars and the RL reward curves
