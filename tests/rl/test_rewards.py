"""Tests for rarejax.rl.rewards: the reward terms by hand and the single-entry final level."""
import numpy as np
import pytest

from rarejax.evaluate import grader as grader_lib
from rarejax.rl import rewards as rewards_lib
from tests.rl.helpers import INDEX

MARFAN_FIRST = ("<think>\ntall\n</think>\n<answer>\n1. Marfan syndrome (OMIM:154700)\n"
                "2. Loeys-Dietz syndrome 1 (OMIM:609192)\n</answer>")
MARFAN_SECOND = ("<think>\ntall\n</think>\n<answer>\n1. Loeys-Dietz syndrome 1 (OMIM:609192)\n"
                 "2. Marfan syndrome (OMIM:154700)\n</answer>")


def test_reward_terms_by_hand():
  assert rewards_lib.overlong_penalty(80, 100, 20) == 0.0
  assert rewards_lib.overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
  assert rewards_lib.overlong_penalty(100, 100, 20) == -1.0
  assert rewards_lib.repetition_penalty([1, 2, 1, 2, 1, 2], 2) == pytest.approx(-0.6)
  assert rewards_lib.repetition_penalty([1, 2, 3], 4) == 0.0
  config = rewards_lib.RewardConfig(format_weight=0.2, repetition_weight=0.3,
                                    overlong_weight=0.3, overlong_buffer=20, repetition_ngram=2,
                                    grader=grader_lib.GraderConfig(rank_decay="reciprocal"))
  reward_fn = rewards_lib.GraderRewards(INDEX, config, max_length=100)
  texts = [MARFAN_FIRST, MARFAN_SECOND, MARFAN_SECOND, "I am not sure."]
  tokens = [[5] * 10, list(range(90)), [7, 8], [1, 2, 1, 2, 1, 2]]
  out = reward_fn(texts, tokens, [("OMIM:154700",)] * 4,
                  ["differential", "differential", "final", "differential"])
  np.testing.assert_allclose(out.terms["accuracy"], [1.0, 0.5, 0.0, 0.0])   # rank 1, 2; final
  np.testing.assert_allclose(out.terms["format"], [0, 0, 0, -1])
  np.testing.assert_allclose(out.terms["repetition"], [-8 / 9, 0, 0, -0.6], rtol=1e-6)
  np.testing.assert_allclose(out.terms["overlong"], [0, -0.5, 0, 0])
  np.testing.assert_allclose(out.shaping, [-0.3 * 8 / 9, -0.15, 0, -0.2 - 0.18], rtol=1e-6)
  np.testing.assert_allclose(out.total, out.terms["accuracy"] + out.shaping)
  np.testing.assert_array_equal(out.passed, [True, True, False, False])
  with pytest.raises(ValueError, match="sum below 1"):
    rewards_lib.RewardConfig(repetition_weight=0.5, overlong_weight=0.5)  # could flip a sign


def test_final_level_rewards_a_single_diagnosis_only():
  reward_fn = rewards_lib.GraderRewards(INDEX, rewards_lib.RewardConfig(overlong_buffer=20),
                                        max_length=100)
  single = "<think>\ntall\n</think>\n<answer>\n1. Marfan syndrome (OMIM:154700)\n</answer>"
  out = reward_fn([MARFAN_FIRST, single, MARFAN_FIRST], [[5, 6]] * 3, [("OMIM:154700",)] * 3,
                  ["final", "final", "differential"])
  np.testing.assert_allclose(out.terms["accuracy"], [0.0, 1.0, 1.0])  # a list is no diagnosis
  np.testing.assert_array_equal(out.passed, [False, True, True])
