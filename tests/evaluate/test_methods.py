"""Tests for the method interface: one gold-rank rule for rankers and graded model answers, classical
methods in oracle and text modes, and their input checks."""
import dataclasses

import pytest

from rarejax.cases import Case, PatientSimulator, render_cases
from rarejax.data import format as fmt
from rarejax.evaluate import grader, methods
from rarejax.knowledge import grounding

INDEX = grounding.GroundingIndex(
    [("OMIM:154700", ["Marfan syndrome", "MFS"]), ("ORPHA:558", ["Marfan syndrome"]),
     ("OMIM:609192", ["Loeys-Dietz syndrome 1"]), ("OMIM:236200", ["Homocystinuria"]),
     ("OMIM:207500", ["Imperforate anus"]), ("OMIM:301800", ["Imperforate anus"])],
    xrefs={"OMIM:154700": ["ORPHA:558"]})
EQUIVALENCE = INDEX.equivalence


def _output(*ids, alternatives=()):
  return methods.MethodOutput("c1", tuple(
      methods.Candidate(i, "", 1.0 / r, alternatives=alternatives if r == 1 else ())
      for r, i in enumerate(ids, 1)))


def test_gold_rank_uses_equivalents_alternatives_and_top_k_only():
  assert _output("OMIM:609192", "OMIM:154700").gold_rank(["OMIM:154700"], EQUIVALENCE) == 2
  assert _output("ORPHA:558").gold_rank(["OMIM:154700"], EQUIVALENCE) == 1  # exact-match xref
  assert _output(None, "OMIM:154700").gold_rank(["OMIM:154700"], EQUIVALENCE) == 2  # ungrounded
  assert _output("OMIM:609192").gold_rank(["OMIM:154700"], EQUIVALENCE) is None
  ambiguous = _output("OMIM:207500", alternatives=("OMIM:301800",))
  assert ambiguous.gold_rank(["OMIM:301800"], EQUIVALENCE) == 1
  with pytest.raises(ValueError, match="gold_ids"):
    _output("OMIM:154700").gold_rank("OMIM:154700", EQUIVALENCE)


@pytest.mark.parametrize("ranked, gold", [
    ([("Loeys-Dietz syndrome 1", "OMIM:609192"), ("Marfan syndrome", None)], "OMIM:154700"),
    ([("Marfan syndrome", "ORPHA:558"), ("MFS", None), ("Homocystinuria", None)], "OMIM:154700"),
    ([("Unknown thing", None), ("Imperforate anus", None)], "OMIM:301800"),
    ([("Homocystinuria", None)], "OMIM:154700"),
])
@pytest.mark.parametrize("alternatives", [True, False])
def test_from_grade_keeps_the_graders_gold_rank(ranked, gold, alternatives):
  config = grader.GraderConfig(match_alternatives=alternatives)
  text = fmt.format_response("reasoning", ranked)
  grade = grader.grade(text, [gold], INDEX, config)
  output = methods.MethodOutput.from_grade("c1", grade, raw_text=text, config=config)
  assert output.gold_rank([gold], EQUIVALENCE) == grade.gold_rank
  assert [c.disease_id for c in output.candidates] == list(grade.ranked_ids)
  assert output.raw_text == text and output.well_formed
  assert [c.score for c in output.candidates] == [
      1.0 / r for r in range(1, len(output.candidates) + 1)]


def test_from_grade_confidences_must_align():
  grade = grader.grade(fmt.format_response("r", [("Homocystinuria", None)]), ["OMIM:154700"],
                       INDEX)
  output = methods.MethodOutput.from_grade("c1", grade, confidences=[0.3])
  assert output.candidates[0].confidence == 0.3
  with pytest.raises(ValueError, match="confidences"):
    methods.MethodOutput.from_grade("c1", grade, confidences=[0.3, 0.2])


@pytest.fixture(scope="module")
def cases(kb):
  simulated = PatientSimulator(kb).simulate_many(["OMIM:154700", "OMIM:219700", "OMIM:143100"],
                                                 2, seed=3)
  return render_cases(simulated, kb, seed=3)


def test_classical_methods_in_both_modes(kb, cases):
  train = [dataclasses.replace(c, id=c.id + "_train") for c in cases]
  tuning = methods.FusionTuning(kb, train[:3], cases[3:])
  made = methods.classical_methods(kb, methods.CLASSICAL, train_cases=train, tuning=tuning,
                                   top_k=5)
  assert [m.name for m in made] == [f"{n}.{mode}" for mode in methods.MODES
                                    for n in methods.CLASSICAL]
  by_name = {m.name: m for m in made}
  for name in ("resnik", "case_knn", "case_resnik", "fusion", "rrf"):
    oracle = by_name[f"{name}.oracle"].rank(cases)
    text = by_name[f"{name}.text"].rank(cases)
    assert all(len(o.candidates) == 5 for o in oracle)
    for o, t, case in zip(oracle, text, cases):
      assert set(t.observed) == set(case.observed)  # rendered notes name the HPO terms
      assert [c.disease_id for c in o.candidates] == [c.disease_id for c in t.candidates]
      if name in methods.CASE_RANKERS:  # the case's own copy is in the training set
        assert o.gold_rank(case.gold_ids, EQUIVALENCE) == 1
  fusion = by_name["fusion.text"].config
  assert set(fusion["weights"]) == {"resnik", "likelihood_ratio", "case_knn"}
  assert fusion["n_tuning_cases"] == 3 and fusion["mean"] is None
  rrf = by_name["rrf.oracle"].config
  assert set(rrf["weights"]) == {"resnik", "likelihood_ratio", "case_knn", "case_resnik"}
  assert rrf["weights"]["resnik"] > 0 and rrf["weights"]["likelihood_ratio"] > 0
  assert by_name["case_resnik.text"].config["n_train_cases"] == len(train)


def test_default_classical_methods_are_the_case_resnik_ranker_and_rank_fusion(kb, cases):
  tuning = methods.FusionTuning(kb, cases[:3], cases[3:])
  made = methods.classical_methods(kb, train_cases=cases, tuning=tuning, modes=["oracle"])
  assert [m.name for m in made] == [f"{n}.oracle" for n in methods.DEFAULT_CLASSICAL]
  assert methods.DEFAULT_CLASSICAL == ("resnik", "likelihood_ratio", "case_resnik", "rrf")


def test_oracle_mode_needs_structured_phenotypes(kb, cases):
  [oracle, text] = methods.classical_methods(kb, ["resnik"], ["oracle", "text"])
  note_only = Case(id="n1", note="Seizures and microcephaly.", gold_ids=("OMIM:1",))
  assert not oracle.applies(note_only) and text.applies(note_only)
  assert oracle.applies(cases[0])
  [answer] = text.rank([note_only])
  assert answer.observed == ("HP:0001250", "HP:0000252") and len(answer.candidates) == 10
  assert all(c.label for c in answer.candidates)


@pytest.mark.parametrize("kwargs, message", [
    ({"names": ["resnik", "phenomizer"]}, "unknown method or mode 'phenomizer'"),
    ({"modes": ["oracle", "speech"]}, "unknown method or mode 'speech'"),
    ({"names": ["case_knn"]}, "need training cases"),
    ({"names": ["case_resnik"]}, "need training cases"),
    ({"names": []}, "at least one method"),
])
def test_classical_methods_reject_bad_requests(kb, kwargs, message):
  with pytest.raises(ValueError, match=message):
    methods.classical_methods(kb, **kwargs)


@pytest.mark.parametrize("fusion", methods.FUSIONS)
def test_fusion_needs_a_tuning_set(kb, cases, fusion):
  with pytest.raises(ValueError, match="tuning set"):
    methods.classical_methods(kb, [fusion], ["oracle"], train_cases=cases)
