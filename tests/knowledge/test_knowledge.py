"""Tests for rarejax.knowledge: OBO/HPOA parsing, obsolete ids, exclusion by PMID, stamps, cache."""
import pickle

import pytest

from rarejax import knowledge
from rarejax.knowledge import annotations, sources

OBO = """format-version: 1.2
data-version: hp/releases/2099-01-01

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000002
name: Abnormality of body height
def: "Deviation of height." []
synonym: "Height abnormality" EXACT layperson []
synonym: "Stature problem" RELATED []
alt_id: HP:0000900
is_a: HP:0000118

[Term]
id: HP:0004322
name: Short stature
is_a: HP:0000002

[Term]
id: HP:0000003
name: Old term
is_obsolete: true
replaced_by: HP:0004322

[Term]
id: HP:0000005
name: Mode of inheritance
is_a: HP:0000001

[Term]
id: HP:0000006
name: Autosomal dominant inheritance
is_a: HP:0000005
"""

HEADER = ("database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\t"
          "sex\tmodifier\taspect\tbiocuration\n")
ROWS = [
    "OMIM:1\tDisease one\t\tHP:0004322\tPMID:11;PMID:12\tPCS\t\t3/4\t\t\tP\tx",
    "OMIM:1\tDisease one\t\tHP:0000002\tPMID:13\tPCS\t\tHP:0040283\t\t\tP\tx",
    "OMIM:1\tDisease one\tNOT\tHP:0000118\tOMIM:1\tTAS\t\t\t\t\tP\tx",
    "OMIM:1\tDisease one\t\tHP:0000006\tOMIM:1\tTAS\t\t\t\t\tI\tx",
    "ORPHANET:2\tDisease two\t\tHP:0000002\tPMID:12\tTAS\t\t50%\tFEMALE\t\tP\tx",
]


@pytest.fixture()
def tiny_hpo(tmp_path):
  (tmp_path / "hp.obo").write_text(OBO)
  (tmp_path / "phenotype.hpoa").write_text("#version: 2099-01-01\n" + HEADER + "\n".join(ROWS) + "\n")
  return tmp_path


def _load(hpo_dir, **kwargs):
  return knowledge.load_knowledge(hpo_dir=hpo_dir, cache_dir=hpo_dir / "cache", **kwargs)


@pytest.mark.parametrize("text,value", [
    ("", None), ("HP:0040281", 0.895), ("HP:0040285", 0.0), ("3/4", 0.75), ("0/0", None),
    ("12.5%", 0.125), ("50 %", 0.5), ("5/4", 1.0)])
def test_parse_frequency(text, value):
  assert annotations.parse_frequency(text) == value


def test_parse_frequency_rejects_garbage():
  with pytest.raises(ValueError, match="unrecognised frequency"):
    annotations.parse_frequency("often")


def test_ontology_structure_and_obsolete_resolution(tiny_hpo):
  onto = _load(tiny_hpo).ontology
  assert onto.version == "2099-01-01"
  assert onto.resolve("HP:0000900") == "HP:0000002"          # alt_id
  assert onto.resolve("HP:0000003") == "HP:0004322"          # obsolete → replaced_by
  assert onto.resolve("HP:9999999") is None
  assert onto.ancestors("HP:0004322") == {"HP:0004322", "HP:0000002", "HP:0000118", "HP:0000001"}
  assert "HP:0004322" not in onto.ancestors("HP:0004322", include_self=False)
  assert onto.descendants("HP:0000118") == {"HP:0000118", "HP:0000002", "HP:0004322"}
  assert onto.is_phenotype("HP:0004322") and not onto.is_phenotype("HP:0000006")
  term = onto.terms["HP:0000002"]
  assert term.definition == "Deviation of height."
  assert knowledge.Synonym("Height abnormality", "EXACT", "layperson") in term.synonyms
  assert onto.children("HP:0000002") == ("HP:0004322",)


def test_diseases_parsed_with_frequencies_inheritance_and_not(tiny_hpo):
  kb = _load(tiny_hpo)
  one = kb.diseases["OMIM:1"]
  assert one.phenotype_ids() == ("HP:0004322", "HP:0000002")
  assert one.frequency_of("HP:0004322") == 0.75
  assert one.frequency_of("HP:0000002") == 0.17
  assert [a.hpo_id for a in one.excluded] == ["HP:0000118"]
  assert one.inheritance == ("HP:0000006",)
  assert one.phenotypes[0].references == ("PMID:11", "PMID:12")
  two = kb.diseases["ORPHA:2"]                                 # ORPHANET: prefix normalized
  assert two.phenotypes[0].sex == "FEMALE" and two.frequency_of("HP:0000002") == 0.5
  assert kb.disease_ids("OMIM") == ["OMIM:1"]


def test_exclusion_drops_every_row_citing_a_pmid(tiny_hpo):
  kb = _load(tiny_hpo, exclude_pmids=["12"])
  assert kb.version.n_excluded_rows == 2                       # both rows citing PMID:12
  assert kb.diseases["OMIM:1"].phenotype_ids() == ("HP:0000002",)
  assert "ORPHA:2" not in kb.diseases or not kb.diseases["ORPHA:2"].phenotypes
  cited = {r for d in kb.diseases.values() for a in d.phenotypes for r in a.references}
  assert "PMID:12" not in cited
  assert kb.version.excluded_pmids == ("PMID:12",)
  assert kb.version.digest != _load(tiny_hpo).version.digest


def test_exclusion_rejects_non_pmids(tiny_hpo):
  with pytest.raises(ValueError, match="not a PubMed id"):
    _load(tiny_hpo, exclude_pmids=["OMIM:1"])


def test_information_content_is_monotone_on_the_dag(tiny_hpo):
  kb = _load(tiny_hpo)
  assert kb.ic("HP:0000118") == pytest.approx(0.0)             # both diseases reach the root
  assert kb.ic("HP:0004322") > kb.ic("HP:0000002") >= kb.ic("HP:0000118")


def test_cache_round_trip_and_damaged_cache_is_rebuilt(tiny_hpo):
  first = _load(tiny_hpo)
  cached = list((tiny_hpo / "cache").glob("kb-*.pkl"))
  assert len(cached) == 1
  assert _load(tiny_hpo).version == first.version
  cached[0].write_bytes(b"not a pickle")
  rebuilt = _load(tiny_hpo)
  assert rebuilt.version == first.version
  pickle.loads(cached[0].read_bytes())                         # rewritten intact


def test_malformed_hpoa_names_file_line_and_field(tiny_hpo):
  path = tiny_hpo / "phenotype.hpoa"
  path.write_text(HEADER + "OMIM:1\tD\t\tHP:0004322\tPMID:1\tPCS\t\toften\t\t\tP\tx\n")
  with pytest.raises(knowledge.HpoaFormatError, match=r"phenotype.hpoa:2: field 'frequency'"):
    _load(tiny_hpo, use_cache=False)
  path.write_text(HEADER + "OMIM:1\tD\tHP:0004322\n")
  with pytest.raises(knowledge.HpoaFormatError, match="expected 12 tab-separated columns"):
    _load(tiny_hpo, use_cache=False)


def test_missing_or_bad_sources_are_named(tiny_hpo, tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    _load(tiny_hpo, ordo_path=tmp_path / "nowhere.json")
  bad = tmp_path / "bad.json"
  bad.write_text("{}")
  with pytest.raises(sources.SourceFormatError, match="bad.json"):
    _load(tiny_hpo, ordo_path=bad, use_cache=False)
  (tiny_hpo / "hp.obo").write_text("this is not obo [[[")
  with pytest.raises(knowledge.OboFormatError, match="hp.obo"):
    _load(tiny_hpo, use_cache=False)


def test_embedded_release(kb):
  assert kb.version.hpo_release == "2025-01-16"
  assert len(kb.disease_ids("OMIM")) > 8000
  marfan = kb.diseases["OMIM:154700"]
  assert marfan.name == "Marfan syndrome" and "HP:0000006" in marfan.inheritance
  assert kb.ontology.name("HP:0001250") == "Seizure"
  assert any(s.kind == "layperson" for s in kb.ontology.terms["HP:0001250"].synonyms)


def test_real_exclusion_removes_all_citations(kb):
  pmid = next(r for a in kb.diseases["OMIM:154700"].phenotypes for r in a.references
              if r.startswith("PMID:"))
  held_out = knowledge.load_knowledge(exclude_pmids=[pmid])
  expected = sum(1 for d in kb.diseases.values() for a in (*d.phenotypes, *d.excluded)
                 if pmid in a.references)
  assert held_out.version.n_excluded_rows >= expected > 0
  assert all(pmid not in a.references for d in held_out.diseases.values() for a in d.phenotypes)


def test_ordo_and_mondo_enrichment(kb_with_sources):
  marfan = kb_with_sources.diseases["OMIM:154700"]
  assert "ORPHA:558" in marfan.xrefs and "MONDO:0007947" in marfan.xrefs
  assert marfan.definition.startswith("Marfan syndrome")
  assert kb_with_sources.version.digest != knowledge.load_knowledge().version.digest
