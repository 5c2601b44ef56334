"""Tests for experiments/choose_prior_weight.py: the declared rule picks the weight, ties go to the
smaller one, and a report without a sweep is refused."""
import json

import pytest

from tests import conftest


@pytest.fixture(scope="module")
def chooser():
  return conftest.experiment_script("choose_prior_weight")


def _metrics(top1, top10):
  cell = lambda v: {"value": v, "low": v, "high": v}  # noqa: E731
  return {s: {"top1": cell(top1), "top10": cell(top10)} for s in ("all", "seen")}


def _report(tmp_path, methods):
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps({"benchmarks": {"phenopackets_inner": {
      "n_cases": 10, "methods": {name: {"metrics": m} for name, m in methods.items()}}}}))
  return path


def test_highest_mean_of_top1_and_top10_wins(chooser, tmp_path, capsys):
  path = _report(tmp_path, {"model.text.w0": _metrics(0.30, 0.40),
                            "model.text.w0.5": _metrics(0.28, 0.46),   # mean 0.37
                            "model.text.w1": _metrics(0.20, 0.50),     # mean 0.35
                            "rrf.text": _metrics(0.9, 0.9)})            # not a weight
  out = tmp_path / "choice.json"
  assert chooser.main([str(path), "--out", str(out)]) == 0
  assert json.loads(out.read_text())["prior_weight"] == 0.5
  assert "| 0.5 | 0.280 / 0.460 | 0.280 / 0.460 |" in capsys.readouterr().out


def test_a_tie_goes_to_the_smaller_weight(chooser):
  per_weight = {1.0: _metrics(0.3, 0.4), 0.25: _metrics(0.4, 0.3), 0.5: _metrics(0.2, 0.3)}
  assert chooser.choose(per_weight) == 0.25


def test_a_report_without_a_sweep_is_refused(chooser, tmp_path, capsys):
  path = _report(tmp_path, {"model.text": _metrics(0.3, 0.4)})
  with pytest.raises(SystemExit):
    chooser.main([str(path)])
  assert "--prior_weight w1,w2" in capsys.readouterr().err
