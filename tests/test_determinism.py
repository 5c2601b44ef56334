"""Integration: two runs of the tiny pipeline with the same seed produce identical data and metrics."""
import json
import pathlib

import pytest

from rarejax import main as main_lib

pytestmark = pytest.mark.integration

# The same command line as test_pipeline.py, so one shared run could serve both files.
TINY = ["--gin_file", "experiments/tiny.gin", "--gin_bindings", "LoopConfig.checkpoint_every = 2"]
TIMINGS = ("wall_seconds", "tokens_per_second", "train/tokens_per_second", "written_at")
SKIPPED = ("checkpoints", "export")  # orbax files, named by random ids


def _run(workdir: pathlib.Path) -> pathlib.Path:
  assert main_lib.main(["--workdir", str(workdir), *TINY]) == 0
  return workdir


def _comparable(value, workdir: pathlib.Path):
  """A result/metrics value without timings and with the workdir replaced by '<workdir>'."""
  if isinstance(value, dict):
    return {k: _comparable(v, workdir) for k, v in value.items() if k not in TIMINGS}
  if isinstance(value, list):
    return [_comparable(v, workdir) for v in value]
  if isinstance(value, str):
    return value.replace(str(workdir), "<workdir>")
  return value


def _reported(path: pathlib.Path):
  if path.suffix == ".json":
    return json.loads(path.read_text())
  if path.suffix == ".jsonl":
    return [json.loads(line) for line in path.read_text().splitlines()]
  return path.read_text()  # .tsv


def _outputs(workdir: pathlib.Path) -> dict[str, object]:
  """Everything a run reports (every stage's results, metric lines, tables) and the bytes of
  the datasets and the tokenizer the data stage built."""
  reports = [p.relative_to(workdir) for p in workdir.rglob("*")
             if p.suffix in (".json", ".jsonl", ".tsv")]
  out = {str(p): _reported(workdir / p) for p in reports if not set(p.parts) & set(SKIPPED)
         and (p.parts[0] != "data" or p.name == "result.json")}  # datasets: compared as bytes
  data = sorted((workdir / "data").rglob("*.tfrecord*")) + sorted(
      (workdir / "data" / "vocab").glob("*.model"))
  assert data and {"data/result.json", "cpt/metrics.jsonl", "eval/result.json"} <= set(out)
  out["data files"] = {str(p.relative_to(workdir)): p.read_bytes() for p in data}
  return _comparable(out, workdir)


@pytest.fixture(scope="module")
def tiny_pipeline_run(tmp_path_factory) -> pathlib.Path:
  """A finished run of the tiny pipeline (a candidate for a conftest fixture that
  test_pipeline.py's uninterrupted run could share)."""
  return _run(tmp_path_factory.mktemp("tiny") / "run")


def test_same_seed_gives_identical_data_and_metrics(tiny_pipeline_run, tmp_path):
  first = _outputs(tiny_pipeline_run)
  second = _outputs(_run(tmp_path / "again"))
  assert set(first) == set(second)
  for name in first:
    assert first[name] == second[name], f"{name} differs between two runs with the same seed"
  train_losses = [r["train/loss"] for r in first["cpt/metrics.jsonl"] if "train/loss" in r]
  assert len(train_losses) == 6  # the comparison covered every step
  assert len(first) > 10  # results, metrics, tables and data of every stage
