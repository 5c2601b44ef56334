"""Tests for evaluation outputs: metrics from hand-made rankings through the report path, the JSON
schema, per-case TSV rows, PhEval files, plots and the markdown that links them."""
import csv
import json
import re

import pytest

from rarejax.cases import Case
from rarejax.evaluate import benchmarks, methods, report
from rarejax.knowledge import grounding

EQUIVALENCE = grounding.IdEquivalence({"OMIM:100001": ["ORPHA:1"]})
GOLD = ["OMIM:100001", "OMIM:100002", "OMIM:100003", "OMIM:100004"]
FINDINGS = [2, 5, 1, 8]
DISTRACTORS = [f"OMIM:2000{i:02d}" for i in range(20)]


def _case(i):
  return Case(id=f"case/{i}", note="A note.", gold_ids=(GOLD[i],), pmid=f"PMID:{i}",
              observed=tuple(f"HP:{j:07d}" for j in range(FINDINGS[i])))


def _ranking(gold, rank, n=10, confident=False):
  """n candidates with `gold` at `rank` (None: absent); optional confidences 0.9, 0.5, 0.1..."""
  ids = [d for d in DISTRACTORS][:n]
  if rank is not None:
    ids[rank - 1] = gold
  return tuple(methods.Candidate(d, f"Disease {d}", float(n - r),
                                 confidence=(0.9 if r == 0 else 0.1) if confident else None)
               for r, d in enumerate(ids))


def _method(name, ranks, confident=False):
  cases = [_case(i) for i in range(4)]
  outputs = [methods.MethodOutput(c.id, _ranking(c.gold_ids[0], r, confident=confident))
             for c, r in zip(cases, ranks)]
  return report.MethodResult(name, {"kind": "hand-made"}, outputs,
                             [o.gold_rank(c.gold_ids, EQUIVALENCE) for o, c in zip(outputs, cases)])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  bench = benchmarks.Benchmark("hand", tuple(_case(i) for i in range(4)), "4 hand-made cases")
  ranker = _method("ranker.text", [1, 3, None, 2])
  model = _method("model.text", [1, 1, 5, None], confident=True)
  oracle = _method("ranker.oracle", [1, 1, 1, 1])
  oracle.outputs[2] = None  # not applicable to case 2
  result = report.BenchmarkResult(bench, [ranker, model, oracle], FINDINGS,
                                  seen=[True, False, True, False],
                                  annotated=[True, True, False, True])
  folder = tmp_path_factory.mktemp("report")
  provenance = report.provenance({"evaluation": {"digest": "abc", "n_excluded_pmids": 4}},
                                 {"argv": ["test"]})
  paths = report.write_report(folder, [result], provenance, n_bootstrap=200)
  return folder, paths


def test_metrics_from_hand_made_rankings(written):
  folder, paths = written
  doc = json.loads(paths["metrics"].read_text())
  ranker = doc["benchmarks"]["hand"]["methods"]["ranker.text"]
  m = ranker["metrics"]["all"]
  assert m["n"] == 4
  assert m["top1"]["value"] == pytest.approx(0.25) and m["top3"]["value"] == pytest.approx(0.75)
  assert m["mrr"]["value"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
  assert m["found"]["value"] == pytest.approx(0.75)
  assert m["top1"]["low"] <= 0.25 <= m["top1"]["high"]
  assert ranker["topk_curve"][:3] == pytest.approx([0.25, 0.5, 0.75])
  slices = ranker["metrics"]
  assert (slices["seen"]["n"], slices["unseen"]["n"], slices["few_findings"]["n"]) == (2, 2, 2)
  assert slices["unseen"]["top1"]["value"] == 0.0 and slices["few_findings"]["top1"]["value"] == 0.5
  assert slices["unannotated"]["n"] == 1 and slices["unannotated"]["found"]["value"] == 0.0
  model_unannotated = doc["benchmarks"]["hand"]["methods"]["model.text"]["metrics"]["unannotated"]
  assert model_unannotated["top10"]["value"] == 1.0  # its gold ranked 5th
  oracle = doc["benchmarks"]["hand"]["methods"]["ranker.oracle"]
  assert oracle["n_applicable"] == 3 and oracle["metrics"]["all"]["top1"]["value"] == 1.0
  assert [r["bin"] for r in ranker["by_findings"]] == ["1", "2", "4-5", "6-8"]


def test_metrics_json_schema_and_provenance(written):
  _, paths = written
  doc = json.loads(paths["metrics"].read_text())
  assert doc["schema"] == report.SCHEMA and doc["ks"] == [1, 3, 5, 10]
  bench = doc["benchmarks"]["hand"]
  assert bench["n_cases"] == 4 and bench["n_excluded_publications"] == 4
  assert bench["slices"] == {"all": 4, "seen": 2, "unseen": 2, "unannotated": 1,
                             "few_findings": 2}
  for entry in bench["methods"].values():
    assert set(entry) == {"config", "n_applicable", "well_formed_rate", "flags", "metrics",
                          "topk_curve", "by_findings", "calibration"}
    assert set(entry["metrics"]["all"]) == {"n", "top1", "top3", "top5", "top10", "mrr", "found"}
  prov = doc["provenance"]
  assert {"written_at", "knowledge", "versions", "git", "config"} <= set(prov)
  assert prov["versions"]["numpy"] and prov["config"]["argv"] == ["test"]


def test_calibration_only_for_methods_with_confidences(written):
  _, paths = written
  methods_doc = json.loads(paths["metrics"].read_text())["benchmarks"]["hand"]["methods"]
  assert methods_doc["ranker.text"]["calibration"] is None
  calibration = methods_doc["model.text"]["calibration"]
  assert calibration["n_candidates"] == 40
  top = [b for b in calibration["bins"] if b["low"] == pytest.approx(0.9)][0]
  assert top["n"] == 4 and top["accuracy"] == pytest.approx(0.5)  # top-1 right in 2 of 4
  assert 0.0 <= calibration["ece"] <= 1.0


def test_case_tsv_rows(written):
  _, paths = written
  with open(paths["cases"], newline="") as stream:
    rows = list(csv.DictReader(stream, delimiter="\t"))
  assert list(rows[0]) == list(report.TSV_COLUMNS)
  assert len(rows) == 10 * (4 + 4 + 3)
  first = [r for r in rows if r["method"] == "ranker.text" and r["case_id"] == "case/1"]
  assert [r["rank"] for r in first] == [str(i) for i in range(1, 11)]
  assert first[2]["disease_id"] == "OMIM:100002" and first[0]["gold_rank"] == "3"
  assert {r["gold_rank"] for r in rows if r["case_id"] == "case/2"
          and r["method"] == "ranker.text"} == {""}


def test_markdown_links_plots_that_exist(written):
  folder, paths = written
  text = paths["report"].read_text()
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
  assert sorted(links) == ["plots/hand_calibration.png", "plots/hand_findings.png",
                           "plots/hand_topk.png"]
  for link in links:
    assert (folder / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| ranker.text | 4 | 0.250" in text
  assert "| ranker | 1.000 | 0.250 | +0.750 |" in text  # oracle vs text gap
  assert not list(folder.rglob(".*.tmp"))


def test_write_atomic_replaces_whole_files(tmp_path):
  path = tmp_path / "sub" / "file.txt"
  report.write_atomic(path, "old")
  report.write_atomic(path, b"new")
  assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["file.txt"]


def _styled(styles):
  """The 4 hand-made cases, their notes rendered in `styles` (None: not rendered)."""
  cases = tuple(Case(id=c.id, note=c.note, gold_ids=c.gold_ids, pmid=c.pmid, observed=c.observed,
                     provenance={"renderer": {"style": s}} if s else {})
                for c, s in zip((_case(i) for i in range(4)), styles))
  return report.BenchmarkResult(benchmarks.Benchmark("styled", cases, "4 styled cases"),
                                [_method("ranker.text", [1, 3, None, 2])], FINDINGS, seen=None)


def test_rendered_notes_are_sliced_and_tabled_by_style(tmp_path):
  result = _styled(["hpi", "clinical", "hpi", None])
  slices = result.slices()
  assert slices["style:hpi"].tolist() == [True, False, True, False]
  assert slices["style:clinical"].tolist() == [False, True, False, False]
  paths = report.write_report(tmp_path, [result], report.provenance({}, {}), n_bootstrap=10)
  metrics = json.loads(paths["metrics"].read_text())["benchmarks"]["styled"]
  assert metrics["methods"]["ranker.text"]["metrics"]["style:hpi"]["top1"]["value"] == 0.5
  text = paths["report"].read_text()
  assert "Note styles" in text and "| style:clinical (n=1) top-1 / top-10 |" in text
  assert not any(name.startswith("style:") for name in _styled(["hpi"] * 3 + [None]).slices())
