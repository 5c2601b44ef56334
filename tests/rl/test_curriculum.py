"""Tests for rarejax.rl.curriculum: task by task and easy to hard, replay of earlier phases, the
shuffled mode, tiers sized by their cases, measuring each level, early ends, a case's rank-aware
pass rate, and the state round trip."""
import dataclasses
import json

import numpy as np
import pytest

from rarejax.rl import curriculum as curriculum_lib
from rarejax.rl import rewards as rewards_lib
from rarejax.rl import rollout as rollout_lib

def _curriculum(mode="curriculum", replay_fraction=0.25):
  config = curriculum_lib.CurriculumConfig(mode=mode, replay_fraction=replay_fraction,
                                           tier_min_pass=(0.5, 0.25))
  curriculum = curriculum_lib.Curriculum(config, num_cases=12, num_steps=12)
  curriculum.set_pass_rates("differential", [1.0] * 4 + [0.25] * 4 + [0.0] * 4)
  curriculum.set_pass_rates("final", [1.0] * 6 + [0.0] * 6)   # no tier-1 case
  return curriculum


def test_curriculum_goes_task_by_task_and_easy_to_hard():
  curriculum = _curriculum()
  phases = [curriculum.phase(step) for step in range(12)]
  assert phases == [("differential", 0)] * 2 + [("differential", 1)] * 2 + \
      [("differential", 2)] * 2 + [("final", 0)] * 3 + [("final", 2)] * 3   # empty tier skipped
  first = curriculum.draw(0, 4, np.random.default_rng(0))
  assert sorted(d.case for d in first) == [0, 1, 2, 3] and not any(d.replay for d in first)
  with pytest.raises(ValueError, match="not measured"):
    curriculum_lib.Curriculum(curriculum.config, 12, 12).phase(0)


def test_curriculum_replays_earlier_phases_at_the_configured_fraction():
  curriculum = _curriculum(replay_fraction=0.25)
  for step, earlier_tasks, earlier_tiers in [(4, {"differential"}, {0, 1}),
                                             (10, {"differential", "final"}, None)]:
    draws = curriculum.draw(step, 8, np.random.default_rng(step))
    task, tier = curriculum.phase(step)
    current = [d for d in draws if not d.replay]
    replay = [d for d in draws if d.replay]
    assert len(replay) == 2 and len(current) == 6
    assert all(d.task == task and d.tier == tier for d in current)
    assert {d.task for d in replay} <= earlier_tasks
    assert all((d.task, d.tier) != (task, tier) for d in replay)
    if earlier_tiers:
      assert {d.tier for d in replay} <= earlier_tiers
  assert len({d.case for d in curriculum.draw(4, 4, np.random.default_rng(1)) if not d.replay}) \
      == 3  # without replacement within a pool


def test_shuffled_mode_draws_every_case_of_every_task_and_state_round_trips():
  curriculum = _curriculum(mode="shuffled")
  draws = curriculum.draw(0, 24, np.random.default_rng(0))
  assert {(d.task, d.case) for d in draws} == {(t, c) for t in ("differential", "final")
                                               for c in range(12)}
  assert not curriculum.measure_due(0) and not curriculum.advance_if_passed("differential", 0)
  restored = curriculum_lib.Curriculum(curriculum.config, 12, 12)
  restored.load_state_dict(curriculum.state_dict())
  np.testing.assert_array_equal(restored.tiers("differential"), curriculum.tiers("differential"))
  with pytest.raises(ValueError, match="task_fractions"):
    curriculum_lib.CurriculumConfig(task_fractions=(0.5,))


def test_tiers_get_steps_in_proportion_to_their_size():
  config = curriculum_lib.CurriculumConfig(task_order=("differential",), task_fractions=(1.0,),
                                           tier_min_pass=(0.5, 0.25))
  curriculum = curriculum_lib.Curriculum(config, num_cases=12, num_steps=12)
  curriculum.set_pass_rates("differential", [1.0] * 9 + [0.3] + [0.0] * 2)
  assert [curriculum.phase(step)[1] for step in range(12)] == [0] * 9 + [1] + [2] * 2


def test_each_level_is_measured_when_it_starts_and_every_refresh_every_steps():
  config = curriculum_lib.CurriculumConfig(refresh_every=4)
  curriculum = curriculum_lib.Curriculum(config, num_cases=12, num_steps=12)
  due = []
  for step in range(12):
    while curriculum.measure_due(step):
      due.append((step, curriculum.task_at(step)))
      curriculum.set_pass_rates(curriculum.task_at(step), [0.5] * 12, step)
  # differential from step 0 (refreshed at 4); final when it starts at 6, not before (refreshed at 8)
  assert due == [(0, "differential"), (4, "differential"), (6, "final"), (8, "final")]


def test_a_passed_task_level_ends_early_and_hands_its_steps_on():
  curriculum = _curriculum()
  curriculum.set_pass_rates("differential", [1.0] * 10 + [0.0] * 2, step=2)  # mean 0.83 >= 0.8
  assert not curriculum.advance_if_passed("final", 2)            # not the current level
  assert curriculum.advance_if_passed("differential", 2)
  assert curriculum.spans() == [("differential", 0, 2), ("final", 2, 12)]
  assert curriculum.task_at(2) == "final" and curriculum.measure_due(2)
  assert not curriculum.advance_if_passed("final", 2)            # the last level never ends early
  restored = curriculum_lib.Curriculum(curriculum.config, 12, 12)
  restored.load_state_dict(json.loads(json.dumps(curriculum.state_dict())))
  assert restored.spans() == curriculum.spans() and restored.measured_at == {
      "differential": 2, "final": 0}
  never = curriculum_lib.Curriculum(dataclasses.replace(curriculum.config,
                                                        advance_pass_rate=None), 12, 12)
  never.set_pass_rates("differential", [1.0] * 12)
  assert not never.advance_if_passed("differential", 0) and never.task_at(5) == "differential"


def test_a_cases_pass_rate_is_rank_aware():
  terms = {name: np.zeros(4, np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][:] = [1.0, 0.5, 0.1, 0.0]   # ranks 1, 6 and 10 (linear decay), a miss
  rewards = rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())
  samples = rollout_lib.Samples(
      prompts=[], group_size=2, tokens=np.zeros((4, 1), np.int32), mask=np.ones((4, 1), bool),
      logprobs=np.zeros((4, 1), np.float32), lengths=np.ones(4, np.int32),
      truncated=np.zeros(4, bool), rewards=rewards, sample_seconds=0.0, grade_seconds=0.0)
  np.testing.assert_allclose(samples.pass_rates(), [0.75, 0.05])  # not [1.0, 0.5]: passed
