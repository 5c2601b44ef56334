"""Tests for the FastHPOCR recognizer adapter on a tiny ontology (no network): ids and negation
flags of a sentence, the cached index (the same file FastHPOCR itself writes), the merged
negation of overlapping character spans, and the clear errors when FastHPOCR is missing or the
hp.obo is not the knowledge's."""
import importlib.metadata

import pytest

from rarejax.evaluate import run as run_lib
from rarejax.knowledge import ontology as ontology_lib
from rarejax.phenotypes import concepts
from rarejax.phenotypes import fasthpocr
from rarejax.phenotypes import recognizers

SEIZURE, MICROCEPHALY, HYPOTONIA, SCOLIOSIS = "HP:0001250", "HP:0000252", "HP:0001252", "HP:0002650"
OBO = """format-version: 1.2
data-version: hp/releases/2025-01-16
synonymtypedef: layperson "layperson term"
ontology: hp

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0001250
name: Seizure
synonym: "Epileptic seizure" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000252
name: Microcephaly
synonym: "Small head" EXACT layperson []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001252
name: Hypotonia
synonym: "Muscular hypotonia" EXACT []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0002650
name: Scoliosis
is_a: HP:0000118 ! Phenotypic abnormality
"""


@pytest.fixture(scope="module")
def obo(tmp_path_factory):
  path = tmp_path_factory.mktemp("hpo") / "hp.obo"
  path.write_text(OBO)
  return path


@pytest.fixture(scope="module")
def recognizer(obo, tmp_path_factory):
  pytest.importorskip("FastHPOCR")
  index = fasthpocr.build_index(obo, cache_dir=tmp_path_factory.mktemp("cache"))
  return fasthpocr.FastHPOCRRecognizer(index, ontology_lib.read_obo(obo))


def test_known_and_negated_terms_give_ids_and_flags(recognizer):
  found = recognizer.recognize("A boy with seizures and a small head, but no hypotonia. "
                               "Scoliosis was ruled out.")
  assert found.observed == (SEIZURE, MICROCEPHALY)
  assert found.excluded == (HYPOTONIA, SCOLIOSIS)
  assert [(m.hpo_id, m.text, m.negated) for m in found.mentions] == [
      (SEIZURE, "seizures", False), (MICROCEPHALY, "small head", False),
      (HYPOTONIA, "hypotonia", True), (SCOLIOSIS, "Scoliosis", True)]
  assert recognizer.recognize("No seizures. Microcephaly.").excluded == (SEIZURE,)


def test_index_is_cached_and_equals_fasthpocrs_own(obo, tmp_path):
  pytest.importorskip("FastHPOCR")
  from FastHPOCR.IndexHPO import IndexHPO  # pylint: disable=import-outside-toplevel
  index = fasthpocr.build_index(obo, cache_dir=tmp_path / "cache")
  stamp = index.stat().st_mtime_ns
  assert fasthpocr.build_index(obo, cache_dir=tmp_path / "cache") == index
  assert index.stat().st_mtime_ns == stamp  # read from the cache, not rebuilt
  own = tmp_path / "own"
  own.mkdir()
  IndexHPO(str(obo), str(own), indexConfig=fasthpocr.FastHPOCRConfig().index_config()).index()
  assert (own / fasthpocr.INDEX_FILE).read_text() == index.read_text()


def test_overlapping_character_spans_share_one_negation():
  negation = concepts.NegationDetector()
  note = "No short stature or seizures; microcephaly."
  spans = [(3, 16), (9, 16), (20, 28), (30, 42), (28, 29)]  # the last one touches no word
  assert [note[i:j] for i, j in spans] == ["short stature", "stature", "seizures",
                                           "microcephaly", ";"]
  assert negation.negated_chars(note, spans) == [True, True, True, False, False]


def test_missing_fasthpocr_names_the_extra(kb, monkeypatch, capsys, tmp_path):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "version", not_installed)
  with pytest.raises(fasthpocr.MissingExtraError, match=r"'fasthpocr' extra"):
    recognizers.make_recognizer("fasthpocr", kb)
  with pytest.raises(SystemExit):
    run_lib.main(["--benchmark", "simulated:2:1", "--out", str(tmp_path), "--recognizer",
                  "fasthpocr"])
  assert "pip install -e '.[fasthpocr]'" in capsys.readouterr().err


def test_an_obo_that_is_not_the_knowledges_is_refused(kb, obo):
  pytest.importorskip("FastHPOCR")
  with pytest.raises(ValueError, match="not the hp.obo this knowledge base was read from"):
    fasthpocr.FastHPOCRRecognizer.from_knowledge(kb, obo_path=obo)
  with pytest.raises(ValueError, match="option of the rarejax recognizer"):
    recognizers.make_recognizer("fasthpocr", kb, related=True)
