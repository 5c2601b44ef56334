"""Tests for experiments/note_realism.py: per style, text vs oracle and recognition on a few cases."""
import json

from tests.conftest import experiment_script


def test_case_set_reports_each_style_and_the_clinical_gap(kb, tmp_path):
  realism = experiment_script("note_realism")
  cases = realism.simulated_cases(kb, 12, seed=3)
  result = realism.case_set("simulated", cases, kb, kb, ("hpi", "clinical"), seed=3)
  hpi, clinical = result["styles"]["hpi"], result["styles"]["clinical"]
  assert result["n_cases"] == 12
  assert hpi["recognition"]["recall_exact"] > 0.99 and hpi["recognition"]["precision_exact"] > 0.99
  assert clinical["recognition"]["recall_exact"] < hpi["recognition"]["recall_exact"] - 0.05
  for style in (hpi, clinical):
    for entry in style["rankers"].values():
      assert entry["gap_top1"] == entry["oracle"]["top1"] - entry["text"]["top1"]
      assert "ranks" not in entry["text"]
  doc = {"sets": {"simulated": result}, "narrative_texts": None, "command": "x", "seed": 3,
         "versions": {}, "load_average_1min_at_start": 0.0, "load_average_1min_at_end": 0.0}
  table = realism.markdown(json.loads(json.dumps(doc)))
  assert "| simulated, hpi | 12 |" in table and "| simulated, clinical | 12 |" in table
