"""Tests for experiments/fuse_ranks.py: reciprocal-rank fusion of two methods' lists in cases.tsv."""
import csv

import pytest

from tests import conftest

COLUMNS = ("benchmark", "case_id", "method", "gold_ids", "gold_rank", "n_findings", "rank",
           "disease_id", "label", "score", "confidence")


@pytest.fixture(scope="module")
def fuse_ranks():
  return conftest.experiment_script("fuse_ranks")


def _write(path, lists):
  """lists: {(case, method): (gold_rank or '', [ids])}."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for (case, method), (gold_rank, ids) in lists.items():
      for rank, disease in enumerate(ids, 1):
        writer.writerow(("b", case, method, "OMIM:9", gold_rank, 3, rank, disease, "", 0, ""))


def test_fusion_ranks_the_disease_both_lists_hold_first(fuse_ranks, tmp_path):
  assert fuse_ranks.fuse(["x", "g", "y"], ["g", "z"], k=60) == ["g", "x", "z", "y"]
  cases_tsv, out = tmp_path / "cases.tsv", tmp_path / "ranks.tsv"
  _write(cases_tsv, {
      ("c1", "model.text"): (2, ["OMIM:1", "OMIM:9", "OMIM:2"]),  # right at 2 in both
      ("c1", "rrf.text"): (2, ["OMIM:3", "OMIM:9"]),
      ("c2", "model.text"): ("", ["OMIM:1", "OMIM:2"]),  # only rrf finds it (at 3)
      ("c2", "rrf.text"): (3, ["OMIM:5", "OMIM:6", "OMIM:8"]),
      ("c3", "model.text"): ("", ["OMIM:1"]),  # neither
      ("c3", "rrf.text"): ("", ["OMIM:2"]),
  })
  assert fuse_ranks.main([str(cases_tsv), "--a", "model.text", "--b", "rrf.text",
                          "--out", str(out)]) == 0
  with open(out, newline="") as f:
    fused = {(r["case_id"], r["method"]): r["gold_rank"] for r in csv.DictReader(f, delimiter="\t")}
  assert fused["c1", "model+rrf.text"] == "1"
  assert fused["c2", "model+rrf.text"] == "5"  # behind model's 1, rrf's 5, model's 2, rrf's 6
  assert fused["c3", "model+rrf.text"] == ""
  assert fused["c2", "rrf.text"] == "3" and fused["c1", "model.text"] == "2"


def test_cases_without_both_methods_are_refused(fuse_ranks, tmp_path):
  cases_tsv = tmp_path / "cases.tsv"
  _write(cases_tsv, {("c1", "model.text"): (1, ["OMIM:9"])})
  with pytest.raises(SystemExit, match="lack rows of"):
    fuse_ranks.main([str(cases_tsv), "--a", "model.text", "--b", "rrf.text",
                     "--out", str(tmp_path / "o.tsv")])
