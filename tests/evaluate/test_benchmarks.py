"""Tests for benchmark loading: spec parsing, JSONL/text/simulated loaders, honest exclusion lists,
and clear errors on bad input."""
import json

import pytest

from rarejax.cases import Case, pmids
from rarejax.evaluate import benchmarks

TEXT_CASE = """[source]
pmid = PMID:111
[diagnosis]
disease_id = OMIM:154700
[text]
A tall boy with ectopia lentis.
"""


@pytest.mark.parametrize("spec, expected", [
    ("phenopackets:/data/store.zip", benchmarks.BenchmarkSpec("phenopackets", "/data/store.zip")),
    ("phenopackets:/data/store.zip:validation",
     benchmarks.BenchmarkSpec("phenopackets", "/data/store.zip", "validation")),
    ("texts:/data/texts", benchmarks.BenchmarkSpec("texts", "/data/texts")),
    ("jsonl:cases.jsonl", benchmarks.BenchmarkSpec("jsonl", "cases.jsonl")),
    ("simulated:20:3", benchmarks.BenchmarkSpec("simulated", n_diseases=20, n_per_disease=3)),
])
def test_parse_spec(spec, expected):
  assert benchmarks.parse_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("csv:/x", "KIND one of"), ("texts", "KIND one of"), ("texts:", "KIND one of"),
    ("simulated:20", "simulated:N_DISEASES:N_PER"), ("simulated:0:2", "positive integers"),
    ("simulated:a:b", "positive integers"),
])
def test_parse_spec_rejects_bad_specs(spec, message):
  with pytest.raises(ValueError, match=message):
    benchmarks.parse_spec(spec)


def test_jsonl_and_texts_benchmarks_exclude_their_publications(tmp_path):
  lines = [{"id": "a", "note": "Seizures.", "gold_ids": ["OMIM:1"], "pmid": "PMID:2"},
           {"id": "b", "note": "Scoliosis.", "gold_ids": ["OMIM:2"]}]
  path = tmp_path / "cases.jsonl"
  path.write_text("\n".join(map(json.dumps, lines)) + "\n")
  jsonl = benchmarks.load_jsonl(path)
  assert [c.id for c in jsonl.cases] == ["a", "b"] and jsonl.exclude_pmids == ("PMID:2",)
  (tmp_path / "texts").mkdir()
  (tmp_path / "texts" / "one.txt").write_text(TEXT_CASE)
  texts = benchmarks.load_texts(tmp_path / "texts")
  assert texts.cases[0].gold_ids == ("OMIM:154700",) and texts.config["kind"] == "texts"
  assert benchmarks.knowledge_exclusions([jsonl, texts]) == ["PMID:111", "PMID:2"]


def test_inner_phenopacket_benchmark_excludes_the_outer_validation_too(kb, phenopacket_folder):
  folder = phenopacket_folder([str(20_000_000 + i) for i in range(30)])
  outer = benchmarks.load_phenopackets(folder, kb, "validation", 0.3, seed=0)
  inner = benchmarks.load_phenopackets(folder, kb, "inner", 0.3, seed=0)
  outer_val, outer_train = set(pmids(outer.cases)), set(pmids(outer.train_cases))
  inner_val, inner_train = set(pmids(inner.cases)), set(pmids(inner.train_cases))
  assert inner_val and inner_train and outer_val
  assert inner_val | inner_train == outer_train and not inner_val & inner_train
  assert set(inner.heldout_pmids) == outer_val and outer.heldout_pmids == ()
  assert set(inner.exclude_pmids) == inner_val | outer_val
  assert inner.config["n_heldout_publications"] == len(outer_val)
  assert benchmarks.parse_spec(f"phenopackets:{folder}:inner").split == "inner"


def test_simulated_benchmark_is_deterministic_and_excludes_nothing(kb):
  first = benchmarks.load_simulated(kb, n_diseases=4, n_per_disease=2, seed=5)
  again = benchmarks.load_simulated(kb, n_diseases=4, n_per_disease=2, seed=5)
  assert first.cases == again.cases and len(first.cases) == 8
  assert all(c.note and c.source == "simulated" for c in first.cases)
  assert first.exclude_pmids == () and not first.from_publications
  assert len({c.gold_ids for c in first.cases}) == 4
  assert benchmarks.choose_diseases(kb, 4, 5) == sorted({c.gold_ids[0] for c in first.cases})
  with pytest.raises(ValueError, match="n_diseases must be in"):
    benchmarks.choose_diseases(kb, 0, 5)


def test_missing_paths_name_the_path(tmp_path):
  for load in (benchmarks.load_texts, benchmarks.load_jsonl):
    with pytest.raises(FileNotFoundError, match="nowhere"):
      load(tmp_path / "nowhere")


def test_empty_or_unreadable_sources_are_errors(tmp_path, kb):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"id": "a"}\n')
  with pytest.raises(ValueError, match="no readable JSONL cases.*missing required field"):
    benchmarks.load_jsonl(path)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no readable case texts"):
    benchmarks.load_texts(tmp_path / "empty")
  with pytest.raises(ValueError, match="no readable phenopackets"):
    benchmarks.load_phenopackets(tmp_path / "empty", kb)
  with pytest.raises(ValueError, match="split must be one of"):
    benchmarks.load_phenopackets(tmp_path / "empty", kb, split="test")


def test_benchmark_needs_cases_with_notes():
  with pytest.raises(ValueError, match="has no cases"):
    benchmarks.Benchmark("x", (), "nothing")
  with pytest.raises(ValueError, match="have no note"):
    benchmarks.Benchmark("x", (Case(id="a", note="", gold_ids=("OMIM:1",)),), "structured")
