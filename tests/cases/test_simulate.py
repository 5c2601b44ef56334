"""Tests for the patient simulator: frequencies, knobs, sex/onset consistency, reproducibility."""
import collections
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from rarejax import knowledge
from rarejax.cases import onset as onset_lib
from rarejax.cases import simulate

PLAIN = simulate.SimulatorConfig(min_findings=0, max_findings=1000, imprecision_prob=0.0,
                                 n_noise=0, n_excluded=0)


@pytest.fixture(scope="module")
def simulator(kb):
  return simulate.PatientSimulator(kb)


def _expected_rate(annotation):
  return knowledge.DEFAULT_FREQUENCY if annotation.frequency is None else annotation.frequency


def _frequency_test_disease(kb):
  """First OMIM disease with one row per phenotype, frequent (≥0.85) and rare (0.05–0.2) findings,
  and nothing sex-specific (so every annotation applies to every simulated patient)."""
  sim = simulate.PatientSimulator(kb, PLAIN)
  sexed = sim._male_only | sim._female_only
  for disease_id in kb.disease_ids("OMIM"):
    rows = kb.diseases[disease_id].phenotypes
    ids = [a.hpo_id for a in rows]
    rates = [_expected_rate(a) for a in rows]
    if (len(rows) >= 6 and len(set(ids)) == len(ids) and max(rates) >= 0.85
        and any(0.05 <= r <= 0.2 for r in rates) and not any(a.sex for a in rows)
        and all(kb.ontology.is_phenotype(h) and h not in sexed for h in ids)):
      return disease_id
  raise AssertionError("no suitable disease in the knowledge base")


def test_findings_follow_annotated_frequencies(kb):
  disease_id = _frequency_test_disease(kb)
  disease = kb.diseases[disease_id]
  sim = simulate.PatientSimulator(kb, PLAIN)
  patients = sim.simulate_many([disease_id], 2000, seed=0)
  counts = collections.Counter(h for p in patients for h in p.observed)
  for annotation in disease.phenotypes:
    rate = counts[annotation.hpo_id] / len(patients)
    assert rate == pytest.approx(_expected_rate(annotation), abs=0.04), (disease_id, annotation)
  frequent = [a.hpo_id for a in disease.phenotypes if _expected_rate(a) >= 0.85]
  rare = [a.hpo_id for a in disease.phenotypes if 0.05 <= _expected_rate(a) <= 0.2]
  assert min(counts[h] for h in frequent) > 3 * max(counts[h] for h in rare)


def test_min_and_max_findings(kb):
  disease_id = "OMIM:154700"  # Marfan syndrome: ~70 annotations
  config = dataclasses.replace(PLAIN, min_findings=5, max_findings=8)
  for patient in simulate.PatientSimulator(kb, config).simulate_many([disease_id], 200, seed=3):
    assert 5 <= len(patient.observed) <= 8
    assert set(patient.observed) <= set(kb.diseases[disease_id].phenotype_ids())


def test_imprecision_moves_up_to_specific_ancestors(kb):
  config = dataclasses.replace(PLAIN, min_findings=4, imprecision_prob=1.0, min_ic=2.5)
  sim = simulate.PatientSimulator(kb, config)
  onto, n_pairs = kb.ontology, 0
  for patient in sim.simulate_many(["OMIM:154700", "OMIM:300155"], 50, seed=0):
    for original, vaguer in patient.provenance["imprecise"]:
      n_pairs += 1
      assert vaguer in onto.ancestors(original, include_self=False)
      assert onto.is_phenotype(vaguer) and kb.ic(vaguer) >= 2.5
      assert vaguer in patient.observed
  assert n_pairs > 100


def test_noise_and_excluded_are_unrelated_to_the_disease(kb, simulator):
  onto = kb.ontology
  config = dataclasses.replace(simulator.config, n_noise=3, n_excluded=4)
  sim = simulate.PatientSimulator(kb, config)
  disease_id = "OMIM:154700"
  annotated = set(kb.diseases[disease_id].phenotype_ids())
  related = set().union(*(onto.ancestors(h) for h in annotated))
  for patient in sim.simulate_many([disease_id], 100, seed=5):
    noise = patient.provenance["noise"]
    assert len(noise) == 3 and set(noise) <= set(patient.observed)
    assert len(patient.excluded) == 4
    observed_up = set().union(*(onto.ancestors(h) for h in patient.observed))
    for hpo_id in (*noise, *patient.excluded):
      assert onto.is_phenotype(hpo_id) and hpo_id not in related
      assert not onto.ancestors(hpo_id) & annotated  # not a refinement of an annotation
    assert not set(patient.excluded) & observed_up  # nothing observed is denied


def test_not_annotations_are_excluded_first(kb):
  disease_id = next(d for d in kb.disease_ids() if len(kb.diseases[d].excluded) >= 3
                    and all(kb.ontology.is_phenotype(a.hpo_id) for a in kb.diseases[d].excluded))
  nots = {a.hpo_id for a in kb.diseases[disease_id].excluded}
  sim = simulate.PatientSimulator(kb, dataclasses.replace(PLAIN, min_findings=3, n_excluded=2))
  for patient in sim.simulate_many([disease_id], 20, seed=0):
    assert len(patient.excluded) == 2 and set(patient.excluded) <= nots


def test_sex_and_onset_follow_annotations(kb, simulator):
  female_only = "OMIM:620311"  # premature ovarian failure 21: every finding is female anatomy
  assert {p.sex for p in simulator.simulate_many([female_only], 100, seed=0)} == {"FEMALE"}
  y_linked = next(d for d in kb.disease_ids() if simulate.Y_LINKED in kb.diseases[d].inheritance)
  assert {p.sex for p in simulator.simulate_many([y_linked], 50, seed=0)} == {"MALE"}
  mixed = simulator.simulate_many(["OMIM:154700"], 400, seed=0)
  assert 0.4 < sum(p.sex == "MALE" for p in mixed) / 400 < 0.6
  for patient in simulator.simulate_many([female_only, "OMIM:300155"], 200, seed=1):
    # Findings of the other sex's anatomy are never drawn.
    assert all(simulator._fits_sex(h, patient.sex) for h in (*patient.observed, *patient.excluded))
  with_onset = next(d for d in kb.disease_ids("OMIM")
                    if {"HP:0003621"} == set(kb.diseases[d].onsets))  # juvenile onset only
  for patient in simulator.simulate_many([with_onset], 100, seed=2):
    assert patient.onset == "HP:0003621"
    assert patient.age >= onset_lib.ONSET_AGES["HP:0003621"][0]


def test_seeds_reproduce_and_differ(kb, simulator):
  ids = ["OMIM:154700", "OMIM:300155", "ORPHA:558"]
  first = simulator.simulate_many(ids, 10, seed=7)
  again = simulate.PatientSimulator(kb).simulate_many(ids, 10, seed=7)
  assert first == again
  other = simulator.simulate_many(ids, 10, seed=8)
  assert sum(a.observed != b.observed for a, b in zip(first, other)) >= 25
  assert len({c.id for c in first + other}) == 60
  assert first[0].provenance["simulator"] == dataclasses.asdict(simulator.config)
  assert first[0].provenance["seed"] == 7 and first[0].gold_ids == ("OMIM:154700",)
  assert json.loads(json.dumps(first[0].to_json()))["source"] == "simulated"


def test_same_cases_and_notes_in_a_fresh_process_with_another_hash_seed(kb, simulator):
  from rarejax.cases import render
  code = ("import json; from rarejax import knowledge; from rarejax.cases import simulate, render;"
          "kb = knowledge.load_knowledge(); cs = simulate.PatientSimulator(kb).simulate_many("
          "['OMIM:154700', 'OMIM:300155'], 3, seed=11);"
          "print(json.dumps([[c.to_json(), render.render_note(c, kb, seed=2)] for c in cs]))")
  env = {**os.environ, "PYTHONHASHSEED": "12345"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout
  here = [[c.to_json(), render.render_note(c, kb, seed=2)]
          for c in simulator.simulate_many(["OMIM:154700", "OMIM:300155"], 3, seed=11)]
  assert json.loads(out) == json.loads(json.dumps(here))


def test_config_validation_and_unknown_disease(kb, simulator):
  with pytest.raises(ValueError, match="min_findings"):
    simulate.SimulatorConfig(min_findings=5, max_findings=2)
  with pytest.raises(ValueError, match="imprecision_prob"):
    simulate.SimulatorConfig(imprecision_prob=1.5)
  with pytest.raises(KeyError, match="OMIM:000000"):
    simulator.simulate("OMIM:000000", seed=0)
  assert isinstance(knowledge.DEFAULT_FREQUENCY, float)
