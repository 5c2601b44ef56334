"""Data test of the evaluation runner: the phenopacket development protocol (DESIGN.md) on a small
subset of ../shared/data/phenopacket-store (skips when the data is absent)."""
import json
import zipfile

import pytest

from tests import conftest
from rarejax.cases import pmids, read_phenopackets, split_by_publication
from rarejax.evaluate import run


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
  """The first 25 gene cohorts of the development zip (~350 phenopackets)."""
  source = conftest.shared_path("phenopacket-store", "phenopacket-store-dev.zip")
  path = tmp_path_factory.mktemp("store") / "small.zip"
  with zipfile.ZipFile(source) as full, zipfile.ZipFile(path, "w") as small:
    names = full.namelist()
    cohorts = sorted({n.split("/")[0] for n in names})[:25]
    for name in names:
      if name.split("/")[0] in cohorts:
        small.writestr(name, full.read(name))
  return path


def test_phenopacket_dev_protocol_on_a_subset(small_store, tmp_path, kb):
  out = tmp_path / "dev"
  assert run.main(["--benchmark", f"phenopackets:{small_store}:validation", "--out", str(out),
                   "--n_bootstrap", "50", "--quiet"]) == 0
  doc = json.loads((out / "metrics.json").read_text())
  bench = doc["benchmarks"]["phenopackets_validation"]
  cases, _ = read_phenopackets(small_store, kb=kb)
  split = split_by_publication(cases, 0.2, 0)
  validation = [c for c in split if c.split == "validation"]
  train = [c for c in split if c.split == "train"]
  assert bench["n_cases"] == len(validation)
  assert doc["provenance"]["knowledge"]["n_excluded_pmids"] == len(pmids(validation))
  assert not set(pmids(validation)) & set(pmids(train))
  assert doc["provenance"]["config"]["n_train_cases"] == len(train)
  stamps = doc["provenance"]["knowledge_stamps"]
  assert stamps["fusion_tuning"]["n_excluded_pmids"] > stamps["evaluation"]["n_excluded_pmids"]
  methods = bench["methods"]
  assert len(methods) == 8 and methods["rrf.oracle"]["config"]["n_tuning_cases"] > 0
  case = methods["case_resnik.oracle"]["metrics"]
  assert case["unseen"]["found"]["value"] == 0.0  # a case ranker cannot name a disease w/o cases
  resnik = methods["resnik.oracle"]["metrics"]
  assert case["seen"]["top10"]["value"] > resnik["seen"]["top10"]["value"]
  assert methods["rrf.oracle"]["metrics"]["unseen"]["found"]["value"] > 0  # the fusion can
