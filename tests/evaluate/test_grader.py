"""Tests for rarejax.evaluate.grader and metrics: rankings, rewards and bootstrap aggregates."""
import numpy as np
import pytest

from rarejax.data import format as fmt
from rarejax.evaluate import grader, metrics
from rarejax.knowledge import grounding

INDEX = grounding.GroundingIndex(
    [("OMIM:154700", ["Marfan syndrome", "MFS"]), ("ORPHA:558", ["Marfan syndrome"]),
     ("OMIM:609192", ["Loeys-Dietz syndrome 1"]), ("OMIM:236200", ["Homocystinuria"]),
     ("OMIM:130050", ["Ehlers-Danlos syndrome, vascular type"]),
     ("OMIM:207500", ["Imperforate anus"]), ("OMIM:301800", ["Imperforate anus"])]
    + [(f"OMIM:6000{i:02d}", [f"Disease {i}"]) for i in range(1, 21)],
    xrefs={"OMIM:154700": ["ORPHA:558", "MONDO:0007947"]})
DIFFERENTIAL = [("Loeys-Dietz syndrome 1", "OMIM:609192"), ("Homocystinuria", None),
                ("Marfan syndrome", "OMIM:154700")]


def _grade(ranked, gold=("OMIM:154700",), config=grader.GraderConfig()):
  return grader.grade(fmt.format_response("r", ranked), list(gold), INDEX, config)


def test_grade_a_hand_made_differential():
  result = _grade(DIFFERENTIAL)
  assert result.ranked_ids == ("OMIM:609192", "OMIM:236200", "OMIM:154700")
  assert [g.grounding.kind for g in result.ranked] == ["id", "exact", "id"]
  assert result.gold_rank == 3 and result.n_entries == 3
  assert result.hits == {1: False, 3: True, 5: True, 10: True}
  assert result.reciprocal_rank == pytest.approx(1 / 3)
  assert result.rank_reward == pytest.approx(1 / 3)
  assert (result.exact_match, result.format_reward, result.well_formed) == (0.0, 1.0, True)


@pytest.mark.parametrize("decay, rank, reward", [
    ("reciprocal", 1, 1.0), ("reciprocal", 4, 0.25), ("reciprocal", 10, 0.1),
    ("reciprocal", 11, 0.0), ("reciprocal", None, 0.0),
    ("linear", 1, 1.0), ("linear", 2, 0.9), ("linear", 10, 0.1), ("linear", 11, 0.0),
])
def test_rank_reward(decay, rank, reward):
  assert grader.rank_reward(rank, grader.GraderConfig(rank_decay=decay)) == pytest.approx(reward)


def test_gold_beyond_max_rank_is_found_but_earns_no_reward():
  ranked = [(f"Disease {i}", None) for i in range(1, 13)] + [("Marfan syndrome", None)]
  result = _grade(ranked)
  assert result.gold_rank == 13 and not result.hits[10]
  assert result.reciprocal_rank == pytest.approx(1 / 13) and result.rank_reward == 0.0


def test_final_diagnosis_exact_match_needs_a_single_entry_by_default():
  assert _grade([("Marfan syndrome", "OMIM:154700")]).exact_match == 1.0
  assert _grade([("Marfan syndrome", None), ("MFS", None)]).exact_match == 1.0  # one disease
  first_of_two = [("MFS", None), ("Homocystinuria", None)]
  assert _grade(first_of_two).exact_match == 0.0                 # a list is not a diagnosis
  lenient = grader.GraderConfig(final_single_entry=False)
  assert _grade(first_of_two, config=lenient).exact_match == 1.0
  assert _grade([("Homocystinuria", None), ("MFS", None)], config=lenient).exact_match == 0.0


def test_explicit_id_wins_and_unknown_ids_fall_back_to_the_name():
  wrong_id = _grade([("Marfan syndrome", "OMIM:236200")])
  assert wrong_id.gold_rank is None and wrong_id.ranked[0].grounding.kind == "id"
  unknown_id = _grade([("Marfan syndrome", "OMIM:999999")])
  assert unknown_id.gold_rank == 1 and unknown_id.ranked[0].grounding.kind == "exact"


def test_repeated_diseases_count_once_and_do_not_move_the_others():
  ranked = [("MFS", None), ("Homocystinuria", None), ("Marfan syndrome", "ORPHA:558"),
            ("Marfan syndrome", "OMIM:154700"), ("Loeys-Dietz syndrome 1", None)]
  result = _grade(ranked, gold=["OMIM:609192"])
  assert result.ranked_ids == ("OMIM:154700", "OMIM:236200", "OMIM:609192")
  assert result.gold_rank == 3 and result.n_entries == 5  # distinct ids: the parser keeps all
  assert _grade(ranked).gold_rank == 1


def test_ungrounded_entries_keep_their_rank():
  result = _grade([("Tall stature", None), ("Something else", None), ("Marfan syndrome", None)])
  assert result.ranked_ids == (None, None, "OMIM:154700")
  assert [g.grounding.kind for g in result.ranked] == ["none", "none", "exact"]
  assert result.gold_rank == 3


def test_gold_matches_through_xrefs_and_any_of_several_gold_ids():
  assert _grade([("Marfan syndrome", "ORPHA:558")]).gold_rank == 1
  assert _grade([("Marfan syndrome", "MONDO:0007947")]).gold_rank == 1
  assert _grade([("Marfan syndrome", "OMIM:154700")], gold=["MONDO:0007947"]).gold_rank == 1
  assert _grade(DIFFERENTIAL, gold=["OMIM:236200", "OMIM:154700"]).gold_rank == 2


def test_ambiguous_exact_names_match_through_alternatives_when_allowed():
  ranked = [("Imperforate anus", None)]
  assert _grade(ranked, gold=["OMIM:301800"]).gold_rank == 1
  strict = grader.GraderConfig(match_alternatives=False)
  assert _grade(ranked, gold=["OMIM:301800"], config=strict).gold_rank is None
  assert _grade(ranked, gold=["OMIM:207500"], config=strict).gold_rank == 1


def test_malformed_answers_are_graded_with_format_reward_zero():
  result = grader.grade("<think>r</think>\n1. Marfan syndrome\n", ["OMIM:154700"], INDEX)
  assert result.gold_rank == 1 and result.format_reward == 0.0 and not result.well_formed
  assert fmt.ANSWER_MISSING in result.problems
  truncated = grader.grade("<think>r ... 1. Marfan syndrome", ["OMIM:154700"], INDEX)
  assert truncated.truncated and truncated.gold_rank is None and truncated.rank_reward == 0.0


def test_parsed_answer_and_text_grade_the_same():
  text = fmt.format_response("r", DIFFERENTIAL)
  assert grader.grade(fmt.parse_response(text), ["OMIM:154700"], INDEX) == grader.grade(
      text, ["OMIM:154700"], INDEX)


@pytest.mark.parametrize("kwargs", [dict(rank_decay="exp"), dict(max_rank=0), dict(ks=()),
                                    dict(ks=(0, 1))])
def test_bad_config_is_rejected(kwargs):
  with pytest.raises(ValueError, match="GraderConfig"):
    grader.GraderConfig(**kwargs)


def test_bad_gold_is_rejected():
  with pytest.raises(ValueError, match="gold_ids is empty"):
    grader.grade("x", [], INDEX)
  with pytest.raises(TypeError, match="sequence of ids"):
    grader.grade("x", "OMIM:154700", INDEX)


RANKS = [1, 2, None, 5, 11, 1, 3, None, 10, 4]


def test_metrics_on_hand_made_ranks():
  summary = metrics.summarize(RANKS, n_bootstrap=200)
  expected = {"top1": 0.2, "top3": 0.4, "top5": 0.6, "top10": 0.7, "found": 0.8,
              "mrr": (1 + 1 / 2 + 1 / 5 + 1 / 11 + 1 + 1 / 3 + 1 / 10 + 1 / 4) / 10}
  assert {k: v.value for k, v in summary.items()} == pytest.approx(expected)


def test_bootstrap_interval_contains_the_point_and_is_seeded():
  ranks = list(np.random.default_rng(1).choice([1, 2, 3, 7, 15, None], size=300))
  first = metrics.summarize(ranks, seed=3)
  assert first == metrics.summarize(ranks, seed=3)
  assert first != metrics.summarize(ranks, seed=4)
  for estimate in first.values():
    assert estimate.low <= estimate.value <= estimate.high
    assert estimate.high - estimate.low < 0.2
  narrow = metrics.summarize(ranks, seed=3, confidence=0.5)
  assert narrow["top1"].high - narrow["top1"].low < first["top1"].high - first["top1"].low


def test_bootstrap_of_a_constant_is_a_point():
  summary = metrics.summarize([1] * 20, n_bootstrap=50)
  assert summary["top1"].as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}
  assert summary["mrr"].value == 1.0 and summary["found"].value == 1.0


@pytest.mark.parametrize("ranks, message", [([0], "integers >= 1"), ([1.5], "integers >= 1"),
                                             ([True], "integers >= 1"), ([], "no cases")])
def test_metrics_reject_bad_ranks(ranks, message):
  with pytest.raises(ValueError, match=message):
    metrics.summarize(ranks)


def test_summarize_grades_adds_format_and_reward_rates():
  grades = [_grade(DIFFERENTIAL), grader.grade("1. Marfan syndrome", ["OMIM:154700"], INDEX)]
  summary = metrics.summarize_grades(grades, n_bootstrap=100)
  assert summary["top1"].value == 0.5 and summary["top3"].value == 1.0
  assert summary["well_formed"].value == 0.5
  assert summary["rank_reward"].value == pytest.approx((1 / 3 + 1) / 2)


def test_an_unindexed_id_written_alone_is_graded_as_written():
  answer = fmt.format_response("", [("", "OMIM:612345"), ("", "OMIM:154700")])
  result = grader.grade(answer, ["OMIM:612345"], INDEX)
  assert result.gold_rank == 1
  ranked = grader.ground_entries(fmt.parse_response(answer).entries, INDEX)
  assert [(r.id, r.grounding.kind) for r in ranked] == [("OMIM:612345", "unindexed_id"),
                                                        ("OMIM:154700", "id")]
  # a name beside an unknown id decides as before; ids that are not well formed stay ungrounded
  named = fmt.Entry(rank=1, name="Totally unknown disorder", id="OMIM:612345", raw_line="")
  assert grader.ground_entry(named, INDEX).kind != "unindexed_id"
  for odd in ("OMIM:\u0661\u0665\u0664", "0", "OMIM:123456789"):
    entry = fmt.Entry(rank=1, name="", id=odd, raw_line="")
    assert grader.ground_entry(entry, INDEX).id is None
