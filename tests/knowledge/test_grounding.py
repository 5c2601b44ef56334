"""Tests for rarejax.knowledge.grounding: id parsing, name normalization, matching, equivalence."""
import pytest

from rarejax.knowledge import grounding

ENTRIES = [
    ("OMIM:154700", ["Marfan syndrome", "MFS"]),
    ("ORPHA:558", ["Marfan syndrome"]),
    ("OMIM:101000", ["Neurofibromatosis, type II"]),
    ("OMIM:232300", ["Glycogen storage disease II", "Pompe disease"]),
    ("OMIM:310400", ["Myopathy, centronuclear, X-linked"]),
    ("OMIM:209900", ["Bardet-Biedl syndrome 1"]),
    ("OMIM:615994", ["Bardet-Biedl syndrome 17"]),
    ("OMIM:615995", ["Bardet-Biedl syndrome 18"]),
    ("OMIM:104300", ["Alzheimer disease"]),
    ("OMIM:137763", ["Glaucoma - sleep apnea"]),
    ("OMIM:231300", ["Glaucoma 3, primary congenital, A"]),
]
XREFS = {
    "OMIM:154700": ["ORPHA:558", "MONDO:0007947"],
    "ORPHA:558": ["OMIM:154700", "MONDO:0007947"],
}


@pytest.fixture(scope="module")
def index():
  return grounding.GroundingIndex(ENTRIES, XREFS)


@pytest.mark.parametrize("text", [
    "OMIM:154700", "#154700", "OMIM #154700", "OMIM: #154700", "MIM:154700", "omim 154700",
    "omim.org/entry/154700", "Marfan syndrome (OMIM:154700)", "MARFAN SYNDROME; MFS (#154700)",
])
def test_omim_id_formats_ground_to_the_id(index, text):
  result = index.ground(text)
  assert (result.id, result.kind, result.score) == ("OMIM:154700", "id", 100.0)
  assert result.matched_name == "Marfan syndrome"


@pytest.mark.parametrize("text", ["ORPHA:558", "Orphanet_558", "Orphanet:558", "ORPHANET 558",
                                  "(ORPHA:558)", "http://www.orpha.net/ORDO/Orphanet_558"])
def test_orphanet_id_formats_ground_to_the_id(index, text):
  assert (index.ground(text).id, index.ground(text).kind) == ("ORPHA:558", "id")


def test_mondo_id_grounds_through_xrefs_to_every_indexed_disease(index):
  result = index.ground("MONDO:0007947")
  assert (result.id, result.kind, result.alternatives) == ("OMIM:154700", "id", ("ORPHA:558",))
  assert index.ground("MONDO_7947").id == "OMIM:154700"


@pytest.mark.parametrize("written, canonical", [
    ("Orphanet_558", "ORPHA:558"), ("ORPHA:0558", "ORPHA:558"), ("OMIM #154700", "OMIM:154700"),
    ("%300000", "OMIM:300000"), ("MONDO:7947", "MONDO:0007947"), ("mondo_0007947", "MONDO:0007947"),
    (" DECIPHER:1 ", "DECIPHER:1"), ("HP:0001166", "HP:0001166"),
    ("UMLS:C0024796", "UMLS:C0024796"),
])
def test_canonical_id(written, canonical):
  assert grounding.canonical_id(written) == canonical


@pytest.mark.parametrize("text", ["OMIM", "ORPHAN 12", "*154700", "#15470", "X154700",
                                  "room 154700", "MIMIC 12"])
def test_non_ids_are_not_parsed(text):
  assert grounding.find_disease_ids(text) == []


@pytest.mark.parametrize("text, name, disease_id", [
    ("Marfan syndrome (OMIM:154700)", "Marfan syndrome", "OMIM:154700"),
    ("Marfan syndrome - OMIM:154700", "Marfan syndrome", "OMIM:154700"),
    ("Marfan syndrome [ORPHA:558; OMIM:154700]", "Marfan syndrome", "ORPHA:558"),
    ("OMIM #154700 MARFAN SYNDROME; MFS", "MARFAN SYNDROME; MFS", "OMIM:154700"),
    ("(OMIM:154700) Marfan syndrome", "Marfan syndrome", "OMIM:154700"),
    ("OMIM:154700", "", "OMIM:154700"),
    ("**Marfan syndrome**", "Marfan syndrome", None),
    ("Cat-Eye Syndrome (Type I)", "Cat-Eye Syndrome (Type I)", None),
])
def test_split_name_and_id(text, name, disease_id):
  assert grounding.split_name_and_id(text) == (name, disease_id)


@pytest.mark.parametrize("variant, expected", [
    ("Neurofibromatosis type 2", "OMIM:101000"),
    ("neurofibromatosis, type II", "OMIM:101000"),
    ("NEUROFIBROMATOSIS TYPE II; NF2", "OMIM:101000"),
    ("Neurofibromatosis 2", "OMIM:101000"),
    ("Glycogen storage disease type 2", "OMIM:232300"),
    ("glycogen-storage disease, type II", "OMIM:232300"),
    ("X-linked centronuclear myopathy", "OMIM:310400"),
    ("Alzheimer's disease", "OMIM:104300"),
    ("Alzheimer’s Disease", "OMIM:104300"),
    ("POMPE DISEASE", "OMIM:232300"),
    ("MFS", "OMIM:154700"),
])
def test_name_variants_ground_exactly(index, variant, expected):
  result = index.ground(variant)
  assert (result.id, result.kind, result.score) == (expected, "exact", 100.0)


@pytest.mark.parametrize("name, expected", [
    ("Neurofibromatosis, type II", "neurofibromatosis 2"),
    ("Glycogen storage disease Ia", "glycogen storage disease 1a"),
    ("Charcot-Marie-Tooth disease, type IIb", "charcot marie tooth disease 2b"),
    ("Factor X deficiency", "factor 10 deficiency"),
    ("Trisomy X", "trisomy x"),
    ("X-linked ichthyosis", "x linked ichthyosis"),
    ("46,XX testicular DSD", "46 xx testicular dsd"),
    ("β-Thalassemia", "beta thalassemia"),
    ("Hirschsprung's disease", "hirschsprung disease"),
    ("Café-au-lait spots & freckles", "cafe au lait spots and freckles"),
    ("Anaemia with oedema", "anemia with edema"),
])
def test_normalize(name, expected):
  assert grounding.normalize(name) == expected


@pytest.mark.parametrize("typo, expected", [
    ("Marfan syndrom", "OMIM:154700"),
    ("Marfans syndrome", "OMIM:154700"),
    ("Bardet-Bidel syndrome 18", "OMIM:615995"),
    ("Alzheimer disaese", "OMIM:104300"),
])
def test_fuzzy_typos(index, typo, expected):
  result = index.ground(typo)
  assert (result.id, result.kind) == (expected, "fuzzy")
  assert grounding.DEFAULT_FUZZY_CUTOFF <= result.score < 100


LOOKALIKES = grounding.GroundingIndex([
    ("OMIM:1", ["Meckel syndrome 9"]), ("OMIM:2", ["Methylmalonic aciduria, cblD type"]),
    ("OMIM:3", ["PAPA syndrome"]), ("OMIM:4", ["Microcephaly, isolated"]),
    ("OMIM:5", ["Hypoparathyroidism, familial isolated"]),
    ("OMIM:6", ["Progressive cerebellar ataxia"]), ("OMIM:7", ["African trypanosomiasis"]),
    ("OMIM:8", ["Glycogen storage disease due to glycogen branching enzyme deficiency"]),
    ("OMIM:9", ["Esotropia, congenital"]), ("OMIM:10", ["Chromosome 17q12 deletion syndrome"]),
], fuzzy_cutoff=80)


@pytest.mark.parametrize("other_disease", [
    "Seckel syndrome 9", "Methylmalonic aciduria, cblC type", "PFAPA syndrome",
    "Macrocephaly, isolated", "Hyperparathyroidism, familial isolated",
    "Non-progressive cerebellar ataxia", "American trypanosomiasis",
    "Glycogen storage disease due to glycogen debranching enzyme deficiency",
    "Exotropia, congenital", "Chromosome 17q12 duplication syndrome",
])
def test_fuzzy_rejects_lookalike_names_of_other_diseases(other_disease):
  assert LOOKALIKES.ground(other_disease) == grounding.NOT_FOUND


@pytest.mark.parametrize("typo, expected", [
    ("Microcephally, isolated", "OMIM:4"), ("Esotropia, congenitla", "OMIM:9"),
    ("Hypoparathyroidsm, familial isolated", "OMIM:5"), ("Chromosome 17q12 deletoin syndrome",
                                                        "OMIM:10"),
])
def test_fuzzy_accepts_lookalike_typos(typo, expected):
  assert (LOOKALIKES.ground(typo).id, LOOKALIKES.ground(typo).kind) == (expected, "fuzzy")


def test_fuzzy_never_changes_a_number(index):
  assert index.ground("Bardet-Biedl syndrome 19").kind == "none"
  assert index.ground("Bardet-Biedl syndrome").kind == "none"
  assert index.ground("Bardet-Biedl syndrome 17").id == "OMIM:615994"


@pytest.mark.parametrize("text", ["", "   ", "Tall stature", "syndrome", "??", "Marfan"])
def test_unrelated_text_does_not_ground(index, text):
  assert index.ground(text) == grounding.NOT_FOUND


def test_fuzzy_cutoff_100_disables_fuzzy_matching():
  strict = grounding.GroundingIndex(ENTRIES, fuzzy_cutoff=100)
  assert strict.ground("Marfan syndrom").kind == "none"
  assert strict.ground("Marfan syndrome").kind == "exact"
  with pytest.raises(ValueError, match="fuzzy_cutoff"):
    grounding.GroundingIndex(ENTRIES, fuzzy_cutoff=101)


def test_known_id_wins_unknown_id_falls_back_to_the_name(index):
  assert index.ground("Alzheimer disease (OMIM:154700)").id == "OMIM:154700"
  result = index.ground("Alzheimer disease (OMIM:999999)")
  assert (result.id, result.kind) == ("OMIM:104300", "exact")
  assert index.ground("Alzheimer disease", disease_id="ORPHA:558").id == "ORPHA:558"


def test_explanation_after_a_name_is_dropped_only_when_the_full_name_fails(index):
  assert index.ground("Marfan syndrome - tall stature, ectopia lentis").id == "OMIM:154700"
  assert index.ground("Alzheimer disease: memory loss").id == "OMIM:104300"
  assert index.ground("Glaucoma - sleep apnea").id == "OMIM:137763"


def test_ambiguous_names_choose_deterministically_and_expose_alternatives(index):
  result = index.ground("Marfan syndrome")
  assert (result.id, result.alternatives) == ("OMIM:154700", ("ORPHA:558",))
  assert result.candidates == ("OMIM:154700", "ORPHA:558")
  reordered = grounding.GroundingIndex(list(reversed(ENTRIES)), prefix_order=("ORPHA", "OMIM"))
  assert reordered.ground("Marfan syndrome").candidates == ("ORPHA:558", "OMIM:154700")


def test_a_primary_label_beats_a_synonym_on_ties():
  index = grounding.GroundingIndex(ENTRIES + [("ORPHA:99", ["MFS"])])
  assert index.ground("MFS").candidates == ("ORPHA:99", "OMIM:154700")


def test_equivalence_is_symmetric_one_hop_and_canonical():
  equivalence = grounding.IdEquivalence({"OMIM:1": ["MONDO:0000009"], "OMIM:2": ["MONDO:9"],
                                         "ORPHA:3": ["Orphanet_3", "OMIM:1"]})
  assert equivalence.same("OMIM:1", "OMIM:1")
  assert equivalence.same("MONDO:0000009", "OMIM:1") and equivalence.same("OMIM:1", "MONDO:9")
  assert equivalence.same("Orphanet_3", "#000001") is False  # '#' needs 6 digits
  assert equivalence.same("Orphanet_3", "OMIM:1")
  assert not equivalence.same("OMIM:1", "OMIM:2")  # shared MONDO, but not listed as equivalent
  assert equivalence.equivalents("ORPHA:3") == {"ORPHA:3", "OMIM:1"}
  assert equivalence.matches_any("OMIM:2", ["ORPHA:3", "MONDO:0000009"])


def test_index_equivalence_uses_xrefs(index):
  assert index.equivalence.same("ORPHA:558", "OMIM:154700")
  assert not index.equivalence.same("OMIM:101000", "OMIM:154700")
  assert "OMIM:154700" in index and "Orphanet_558" in index and "MONDO:0007947" not in index
  assert len(index) == len(ENTRIES)


class _FakeDisease:

  def __init__(self, disease_id, name, synonyms=(), xrefs=()):
    self.id, self.name, self.synonyms, self.xrefs = disease_id, name, synonyms, xrefs


class _FakeKnowledge:

  def __init__(self, diseases):
    self.diseases = {d.id: d for d in diseases}


def test_from_knowledge_reads_names_synonyms_and_xrefs():
  kb = _FakeKnowledge([_FakeDisease("OMIM:154700", "Marfan syndrome", ("MFS",), ("ORPHA:558",)),
                       _FakeDisease("ORPHA:558", "Marfan syndrome")])
  index = grounding.GroundingIndex.from_knowledge(kb, fuzzy_cutoff=95)
  assert index.fuzzy_cutoff == 95
  assert index.ground("mfs").id == "OMIM:154700"
  assert index.ground("ORPHA:558").matched_name == "Marfan syndrome"
  assert index.equivalence.same("ORPHA:558", "OMIM:154700")


@pytest.fixture(scope="module")
def kb_index(kb):
  return grounding.GroundingIndex.from_knowledge(kb)


def test_every_knowledge_base_label_grounds_to_its_disease(kb, kb_index):
  assert len(kb_index) == len(kb.diseases)
  missing = [d.id for d in kb.diseases.values()
             if d.id not in kb_index.ground(d.name).candidates]
  assert not missing, missing[:10]


@pytest.mark.parametrize("text, expected", [
    ("Marfan syndrome", "OMIM:154700"), ("marfan syndrom", "OMIM:154700"),
    ("OMIM #154700", "OMIM:154700"), ("Neurofibromatosis type 2", "OMIM:101000"),
    ("X-linked centronuclear myopathy", "ORPHA:596"),
])
def test_knowledge_base_examples(kb_index, text, expected):
  assert kb_index.ground(text).id == expected


@pytest.mark.data
def test_knowledge_base_with_sources_grounds_synonyms_and_mondo(kb_with_sources):
  index = grounding.GroundingIndex.from_knowledge(kb_with_sources)
  assert index.ground("MONDO:0007947").id == "OMIM:154700"
  assert index.ground("Aase-Smith II syndrome").kind == "exact"  # an ORDO synonym
  assert index.equivalence.same("ORPHA:558", "OMIM:154700")
  assert index.equivalence.same("MONDO:0007947", "ORPHA:558")

