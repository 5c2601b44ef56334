"""Knowledge corpus, diagnosis targets and the trajectory schema (pure Python, no TensorFlow)."""
import json
import re

import pytest

from rarejax import cases, knowledge
from rarejax.data import corpus, format as format_lib, targets, trajectory
from rarejax.evaluate import grader


def find_single_source_finding(kb):
  """(disease, PMID, HPO id): a finding of an OMIM disease that only that publication supports,
  whose name is part of no other finding name of the disease."""
  for disease_id in kb.disease_ids("OMIM"):
    rows = {}
    for a in kb.diseases[disease_id].phenotypes:
      rows.setdefault(a.hpo_id, []).append(a)
    names = [kb.ontology.name(h).lower() for h in rows]
    for hpo_id, annotations in rows.items():
      refs = {r for a in annotations for r in a.references}
      name = kb.ontology.name(hpo_id).lower()
      if (len(rows) >= 5 and len(refs) == 1 and next(iter(refs)).startswith("PMID:")
          and kb.ontology.resolve(hpo_id) == hpo_id and sum(name in n for n in names) == 1):
        return disease_id, next(iter(refs)), hpo_id
  raise AssertionError("no single-publication finding in the knowledge base")


@pytest.fixture(scope="module")
def subset(kb):
  return corpus.select_diseases(kb, 12, seed=3)


def test_select_diseases_is_deterministic_and_respects_min_findings(kb, subset):
  assert subset == corpus.select_diseases(kb, 12, seed=3)
  assert subset != corpus.select_diseases(kb, 12, seed=4)
  assert all(len(kb.diseases[d].phenotype_ids()) >= 5 for d in subset)


def test_differential_groups_are_look_alikes(kb):
  groups = corpus.select_differential_groups(kb, 3, 4, seed=1)
  assert groups == corpus.select_differential_groups(kb, 3, 4, seed=1)
  assert len(groups) == len(set(groups)) == 12 and list(groups) == sorted(groups)
  assert all(len(kb.diseases[d].phenotype_ids()) >= 5 for d in groups)
  random = corpus.select_diseases(kb, 12, seed=1)

  def mean_nearest_overlap(diseases):
    """Mean over diseases of the largest Jaccard overlap of annotations with another one."""
    terms = {d: set(kb.diseases[d].phenotype_ids()) for d in diseases}
    return sum(max(len(terms[a] & terms[b]) / len(terms[a] | terms[b])
                   for b in diseases if b != a) for a in diseases) / len(diseases)
  assert mean_nearest_overlap(groups) > 2 * mean_nearest_overlap(random)
  with pytest.raises(ValueError, match="need 100000 diseases"):
    corpus.select_differential_groups(kb, 10000, 10)


def test_examples_cover_both_directions_and_are_deterministic(kb, subset):
  examples = list(corpus.knowledge_examples(kb, subset, seed=0))
  assert examples == list(corpus.knowledge_examples(kb, subset, seed=0))
  assert len({e["id"] for e in examples}) == len(examples)
  kinds = {e["kind"] for e in examples}
  assert {"profile", "disease_findings", "findings_disease", "disease_support",
          "finding_support", "disease_id"} <= kinds
  for e in examples:
    disease = kb.diseases[e["disease_id"]]
    if e["kind"] == "findings_disease":
      assert e["answer"] == f"{disease.name} ({disease.id})"
    if e["kind"] == "profile":
      assert e["question"] == "" and e["answer"].startswith(f"{disease.name} ({disease.id})")


def test_profile_lists_frequency_bands(kb):
  doc = corpus.profile_document(kb, kb.diseases["OMIM:154700"])  # Marfan syndrome
  assert doc.startswith("Marfan syndrome (OMIM:154700)")
  assert "Inheritance: autosomal dominant inheritance." in doc
  assert re.search(r"Findings, frequent \(30–79%\): .*arachnodactyly", doc)


def test_exclusion_removes_findings_only_the_excluded_publication_supports(kb):
  disease_id, pmid, hpo_id = find_single_source_finding(kb)
  name = kb.ontology.name(hpo_id).lower()
  kept = corpus.disease_examples(kb, disease_id)
  assert any(name in e["answer"].lower() for e in kept if e["kind"] == "profile")
  held_out = knowledge.load_knowledge(exclude_pmids=[pmid])
  assert held_out.version.digest != kb.version.digest
  for example in corpus.disease_examples(held_out, disease_id):
    assert name not in (example["question"] + example["answer"]).lower(), example["kind"]


@pytest.fixture(scope="module")
def simulated(kb, subset):
  simulator = cases.PatientSimulator(kb)
  return cases.render_cases(simulator.simulate_many(subset, 2, seed=1), kb, seed=1)


def test_reference_responses_are_well_formed_and_graded_correct(kb, subset, simulated):
  maker = targets.DiagnosisTargets(kb, subset, n_ranked=5, seed=0)
  index = knowledge.GroundingIndex.from_knowledge(kb)
  for case in simulated:
    made = maker.example(case)
    assert made == maker.example(case)
    assert made["prompt"] == format_lib.build_prompt(case.note, "differential", 5)
    for key, entries in (("response", range(1, 6)), ("response_final", [1])):
      parsed = format_lib.parse_response(made[key])
      assert parsed.well_formed, parsed.problems
      assert len(parsed.entries) in entries
      assert grader.grade(made[key], case.gold_ids, index).gold_rank == 1
      assert {e.id for e in parsed.entries[1:]} <= set(subset)


def test_reasoning_cites_annotated_findings_of_the_gold_disease(kb, subset, simulated):
  maker = targets.DiagnosisTargets(kb, subset)
  case = simulated[0]
  disease = kb.diseases[case.gold_ids[0]]
  reasoning = maker.reasoning(case, maker.ranked(case))
  annotated = {f.hpo_id for f in corpus.findings(kb, disease)}
  cited = [h for h in case.observed if h in annotated]
  assert cited and f"Findings known in {disease.name}:" in reasoning
  for hpo_id in cited:
    assert corpus.lower_first(kb.ontology.name(hpo_id)) in reasoning
  assert reasoning.endswith(f"Overall, {disease.name} ({disease.id}) explains the findings best.")


def test_trajectory_round_trip(tmp_path):
  items = [trajectory.Trajectory(case_id="c1", prompt="P", response="<think>\nR\n</think>",
                                 gold_ids=("OMIM:154700",), method="reflection", reward=0.5,
                                 provenance={"masked": ["HP:0001166"]})]
  path = tmp_path / "t.jsonl"
  assert trajectory.write_trajectories(items, path) == 1
  assert trajectory.read_trajectories(path) == items


@pytest.mark.parametrize("line,message", [
    ("{not json", "not a JSON object line"),
    (json.dumps({"case_id": "c", "prompt": "p", "response": "r"}), "missing required field"),
    (json.dumps({"case_id": "c", "prompt": "p", "response": "r", "gold_ids": ["X:1"],
                 "colour": 1}), "unknown field 'colour'"),
    (json.dumps({"case_id": "c", "prompt": "p", "response": "r", "gold_ids": ["X:1"],
                 "method": "guess"}), "method must be one of"),
])
def test_bad_trajectory_lines_name_file_and_line(tmp_path, line, message):
  path = tmp_path / "bad.jsonl"
  good = json.dumps({"case_id": "c", "prompt": "p", "response": "r", "gold_ids": ["X:1"]})
  path.write_text(good + "\n\n" + line + "\n")
  with pytest.raises(trajectory.TrajectoryFormatError, match=f"{path}:3: .*{message}"):
    trajectory.read_trajectories(path)


def test_brief_reasoning_keeps_support_and_conclusion_only(kb, subset, simulated):
  full = targets.DiagnosisTargets(kb, subset)
  brief = targets.DiagnosisTargets(kb, subset, reasoning="brief")
  for case in simulated:
    ranked = full.ranked(case)
    assert brief.ranked(case) == ranked
    long, short = full.reasoning(case, ranked), brief.reasoning(case, ranked)
    assert len(short) < len(long)
    assert "Inheritance of" not in short and "also accounts for" not in short
    name = brief.gold_name(case, 0)
    assert short.endswith(f"Overall, {name} ({case.gold_ids[0]}) explains the findings best.")
    assert short.split(" Overall,")[0] in long  # the same support sentences, nothing new
  with pytest.raises(ValueError, match="reasoning must be one of"):
    targets.DiagnosisTargets(kb, subset, reasoning="short")


def test_instruction_none_prompts_drop_the_system_instruction_at_both_levels(kb, subset,
                                                                            simulated):
  full = targets.DiagnosisTargets(kb, subset, n_ranked=5)
  bare = targets.DiagnosisTargets(kb, subset, n_ranked=5, instruction="none")
  case = simulated[0]
  made, made_bare = full.example(case), bare.example(case)
  for key, task, n in (("prompt", "differential", 5), ("prompt_final", "final", 10)):
    assert made[key].startswith(format_lib.SYSTEM_INSTRUCTION)
    assert made_bare[key] == format_lib.build_prompt(case.note, task, n, instruction="none")
    assert format_lib.SYSTEM_INSTRUCTION not in made_bare[key]
  assert (made_bare["response"], made_bare["response_final"]) == (made["response"],
                                                                 made["response_final"])
  with pytest.raises(ValueError, match="instruction must be one of"):
    targets.DiagnosisTargets(kb, subset, instruction="short")


def test_answer_first_id_targets_name_the_gold_by_id_alone(kb, subset, simulated):
  maker = targets.DiagnosisTargets(kb, subset, n_ranked=1, reasoning="none", answer="id",
                                   instruction="none")
  for case in simulated:
    made = maker.example(case)
    expected = f"<think>\n\n</think>\n<answer>\n1. {case.gold_ids[0]}\n</answer>"
    assert made["response"] == made["response_final"] == expected
    parsed = format_lib.parse_response(made["response"])
    assert parsed.well_formed and [e.id for e in parsed.entries] == [case.gold_ids[0]]
    assert parsed.entries[0].name == ""
  with pytest.raises(ValueError, match="answer must be one of"):
    targets.DiagnosisTargets(kb, subset, answer="name")


def test_id_answers_keep_the_ranked_list_of_name_answers(kb, subset, simulated):
  named = targets.DiagnosisTargets(kb, subset, n_ranked=5, reasoning="brief")
  ids = targets.DiagnosisTargets(kb, subset, n_ranked=5, reasoning="brief", answer="id")
  for case in simulated[:3]:
    a, b = named.example(case), ids.example(case)
    assert ([e.id for e in format_lib.parse_response(a["response"]).entries]
            == [e.id for e in format_lib.parse_response(b["response"]).entries])
    assert a["response"].split("</think>")[0] == b["response"].split("</think>")[0]
