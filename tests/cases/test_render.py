"""Tests for the note renderer: negations, no diagnosis leakage, phrasing knobs, determinism."""
import dataclasses
import json
import re

import pytest

from rarejax import cases
from rarejax.cases import Case, render, simulate

EXACT_LABELS = render.RenderConfig(synonym_rate=0.0, layperson_rate=0.0)
CUE = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, cases.NEGATION_CUES)) + r")(?!\w)", re.I)
DISEASES = ["OMIM:154700", "OMIM:300155", "OMIM:620311", "OMIM:307000", "ORPHA:558",
            "OMIM:101200", "OMIM:101000"]


@pytest.fixture(scope="module")
def patients(kb):
  config = simulate.SimulatorConfig(n_noise=2, n_excluded=4)
  return simulate.PatientSimulator(kb, config).simulate_many(DISEASES, 12, seed=0)


def _sentences(note):
  return [s for line in note.splitlines() for s in re.split(r"(?<=\.)\s+", line) if s.strip()]


def _surface(kb, hpo_id):
  return render._tidy(kb.ontology.name(hpo_id))


def test_excluded_findings_are_negated_and_observed_are_not(kb, patients):
  n_checked = 0
  for i, case in enumerate(patients):
    note = cases.render_note(case, kb, EXACT_LABELS, seed=i)
    sentences = _sentences(note)
    for hpo_id in case.excluded:
      label = _surface(kb, hpo_id)
      holding = [s for s in sentences if label.lower() in s.lower()]
      assert holding and any(CUE.search(s) for s in holding), (label, note)
      n_checked += 1
    for hpo_id in case.observed:
      label = _surface(kb, hpo_id)
      if not CUE.search(label):
        assert any(label.lower() in s.lower() and not CUE.search(s) for s in sentences), note
  assert n_checked == 4 * len(patients)


def test_no_gold_name_or_disease_id_in_notes(kb, patients):
  for i, case in enumerate(patients):
    note = cases.render_note(case, kb, seed=i)
    assert not cases.leaks(note, cases.forbidden_names(case, kb)), note
    assert not re.search(r"\b(OMIM|ORPHA|MONDO)\b|HP:\d", note)


def test_diseases_named_like_their_findings_are_rephrased_not_leaked(kb):
  """219 diseases are named exactly like one of their phenotypes (e.g. Aniridia): such findings
  must be written with a synonym or left out."""
  tricky = [d for d in kb.disease_ids("OMIM")
            if any(render._name_pattern(kb.diseases[d].name).search(kb.ontology.name(h))
                   for h in kb.diseases[d].phenotype_ids())][:40]
  assert len(tricky) == 40
  sim = simulate.PatientSimulator(kb, simulate.SimulatorConfig(min_findings=50, max_findings=50))
  for i, case in enumerate(sim.simulate_many(tricky, 2, seed=1)):
    for style in render.STYLES:
      config = dataclasses.replace(EXACT_LABELS, styles=(style,))
      note = cases.render_note(case, kb, config, seed=i)
      assert not cases.leaks(note, cases.forbidden_names(case, kb)), (case.gold_ids, note)
      assert "[…]" not in note  # the phrase-level guard sufficed; the last-resort scrub is unused


def test_label_that_names_the_diagnosis_is_replaced_by_a_synonym(kb):
  case = Case(id="x", note="", gold_ids=("OMIM:0",), observed=("HP:0001166", "HP:0004322"),
              provenance={"gold_labels": ["Arachnodactyly"]})
  note = cases.render_note(case, kb, dataclasses.replace(EXACT_LABELS, styles=("summary",)))
  assert "arachnodactyly" not in note.lower() and "short stature" in note
  assert re.search(r"long,? slender fingers|spider fingers", note), note


def test_no_leak_with_ordo_and_mondo_synonyms(kb_with_sources, patients):
  for i, case in enumerate(patients):
    names = cases.forbidden_names(case, kb_with_sources)
    assert len(names) >= 1
    note = cases.render_note(case, kb_with_sources, seed=i)
    assert not cases.leaks(note, names), (names, note)


def test_leaks_finds_names_and_ids():
  assert cases.leaks("Known Marfan  syndrome here.", ["marfan syndrome"]) == ["marfan syndrome"]
  assert cases.leaks("Marfanoid habitus", ["Marfan"]) == []  # whole words only
  assert cases.leaks("see OMIM:154700", []) == ["OMIM:154700"]


def test_deterministic_and_seed_sensitive(kb, patients):
  first = [cases.render_note(c, kb, seed=3) for c in patients]
  assert first == [cases.render_note(c, kb, seed=3) for c in patients]
  other = [cases.render_note(c, kb, seed=4) for c in patients]
  assert sum(a != b for a, b in zip(first, other)) >= len(patients) // 2


def test_styles_age_sex_and_onset_phrasing(kb):
  girl = Case(id="g", note="", gold_ids=("OMIM:0",), observed=("HP:0001250", "HP:0000252"),
              excluded=("HP:0000316",), age=6.4, sex="FEMALE", onset="HP:0003593")
  notes = {style: cases.render_note(girl, kb, dataclasses.replace(EXACT_LABELS, styles=(style,)))
           for style in render.DEFAULT_STYLES}
  assert notes["problem_list"].startswith("Patient: 6 year old female\nOnset: infancy")
  assert "Problem list:" in notes["problem_list"] and "- no hypertelorism" in notes["problem_list"]
  assert notes["consult"].splitlines()[0] in ("Dear colleague,", "Dear Dr. Smith,",
                                              "To whom it may concern,")
  for style, note in notes.items():
    assert "seizure" in note.lower() and "microcephaly" in note.lower()
    if style != "problem_list":
      assert re.search(r"6-year-old (girl|female)", note), note
      assert re.search(r"infancy|first year of life", note), note
  assert re.search(r"\b(she|her|She|Her)\b", notes["hpi"] + notes["consult"])
  baby = dataclasses.replace(girl, age=0.3, sex="MALE", onset="HP:0003577")
  note = cases.render_note(baby, kb, dataclasses.replace(EXACT_LABELS, styles=("summary",)))
  assert re.match(r"A 4-month-old (baby boy|male) with", note) and "birth" in note
  unknown = dataclasses.replace(girl, age=None, sex=None, onset=None, id="u")
  note = cases.render_note(unknown, kb, dataclasses.replace(EXACT_LABELS, styles=("hpi",)))
  assert re.match(r"(A|HPI: a) patient", note) and not re.search(r"\b(she|he|her|his)\b", note)
  assert cases.render_note(dataclasses.replace(girl, age=8.0), kb, dataclasses.replace(
      EXACT_LABELS, styles=("summary",))).startswith("An 8-year-old")


def test_synonym_knobs(kb):
  case = Case(id="s", note="", gold_ids=("OMIM:0",), observed=("HP:0000316", "HP:0001166"))
  lay = cases.render_note(case, kb, render.RenderConfig(layperson_rate=1.0, synonym_rate=0.0))
  assert re.search(r"wide-set eyes|widely spaced eyes", lay, re.I), lay
  assert re.search(r"long slender fingers|spider fingers", lay, re.I), lay
  plain = cases.render_note(case, kb, EXACT_LABELS)
  assert "hypertelorism" in plain and "arachnodactyly" in plain
  varied = {cases.render_note(case, kb, render.RenderConfig(synonym_rate=1.0, layperson_rate=0.0),
                              seed=s) for s in range(10)}
  # Only exact synonyms ('ocular hypertelorism' is one), never the bare label.
  assert not any(re.search(r"(?<!ocular )hypertelorism", n, re.I) for n in varied), varied
  assert len(varied) > 3


def test_render_cases_fills_only_empty_notes(kb, patients):
  written = Case(id="w", note="Already written.", gold_ids=("OMIM:1",), observed=("HP:0001250",))
  out = cases.render_cases([patients[0], written], kb, seed=9)
  assert out[1] is written
  assert out[0].note == cases.render_note(patients[0], kb, seed=9)
  assert out[0].provenance["renderer"]["seed"] == 9 and out[0].observed == patients[0].observed
  assert json.loads(json.dumps(out[0].to_json()))["provenance"]["renderer"]["shuffle"] is True


def test_render_cases_records_the_style_each_note_was_written_in(kb, patients):
  mixed = cases.render_cases(patients, kb, render.RenderConfig(styles=cases.STYLES), seed=3)
  recorded = [c.provenance["renderer"]["style"] for c in mixed]
  assert set(recorded) <= set(cases.STYLES) and len(set(recorded)) > 2
  for case, style in zip(mixed, recorded):  # the recorded style is the one the note was written in
    assert ("Problem list:" in case.note) == (style == "problem_list")
    assert ("Kind regards," in case.note) == (style == "consult")
  assert [c.note for c in mixed] == [cases.render_note(c, kb, render.RenderConfig(
      styles=cases.STYLES), seed=3) for c in patients]  # the notes themselves are unchanged


def test_real_phenopacket_case_renders(kb, tmp_path):
  doc = {"id": "p", "subject": {"id": "p", "sex": "MALE",
                                "timeAtLastEncounter": {"age": {"iso8601duration": "P3Y"}}},
         "phenotypicFeatures": [{"type": {"id": "HP:0001250"}}, {"type": {"id": "HP:0001263"}},
                                {"type": {"id": "HP:0000252"}, "excluded": True}],
         "interpretations": [{"id": "i", "progressStatus": "SOLVED", "diagnosis": {
             "disease": {"id": "OMIM:607208", "label": "Epileptic encephalopathy"}}}],
         "metaData": {"phenopacketSchemaVersion": "2.0"}}
  path = tmp_path / "PMID_1_p.json"
  path.write_text(json.dumps(doc))
  case = cases.read_phenopacket(path, kb)
  (rendered,) = cases.render_cases([case], kb, EXACT_LABELS, seed=0)
  assert "3-year-old" in rendered.note or "3 year old" in rendered.note
  assert "seizure" in rendered.note.lower() and "microcephaly" in rendered.note.lower()
  assert not cases.leaks(rendered.note, ["Epileptic encephalopathy"])


def test_config_validation():
  with pytest.raises(ValueError, match="sum"):
    render.RenderConfig(synonym_rate=0.8, layperson_rate=0.5)
  with pytest.raises(ValueError, match="styles"):
    render.RenderConfig(styles=("poem",))
