"""Tests for rarejax.rl: advantages (shaping keeps the accuracy sign), dynamic sampling on the
accuracy outcome, the DAPO loss by hand, on-policy ratio and off-policy minibatches (the clip acts),
the reference KL, the curriculum schedule, reward terms, the single-entry final level, the shipped
configs, and short RL stage runs (export, metrics, filtering)."""
import dataclasses
import functools
import json
import math
import os
import signal

import jax
import numpy as np
import pytest

import gin

from rarejax import export as export_lib
from rarejax import main as main_lib
from rarejax.evaluate import grader as grader_lib
from rarejax.knowledge import grounding
from rarejax.model import transformer
from rarejax.model.config import preset
from rarejax.parallel import mesh as mesh_lib
from rarejax.rl import curriculum as curriculum_lib
from rarejax.rl import dapo
from rarejax.rl import rewards as rewards_lib
from rarejax.rl import rollout as rollout_lib
from rarejax.rl import stage as stage_lib
from rarejax.sample import Sampler
from rarejax.train import losses, optimizer, writers
from rarejax.train import stage as train_stage_lib
from tests.paths import GIN_CONFIGS

INDEX = grounding.GroundingIndex([("OMIM:154700", ["Marfan syndrome"]),
                                  ("OMIM:609192", ["Loeys-Dietz syndrome 1"])])
MARFAN_FIRST = ("<think>\ntall\n</think>\n<answer>\n1. Marfan syndrome (OMIM:154700)\n"
                "2. Loeys-Dietz syndrome 1 (OMIM:609192)\n</answer>")
MARFAN_SECOND = ("<think>\ntall\n</think>\n<answer>\n1. Loeys-Dietz syndrome 1 (OMIM:609192)\n"
                 "2. Marfan syndrome (OMIM:154700)\n</answer>")


class ByteTokenizer:
  """Bytes as tokens (ids 0-2 reserved): enough of a vocabulary for a tiny_llama (256 ids)."""
  pad_id, eos_id, bos_id = 0, 1, 2

  def encode(self, text):
    return list(text.encode("utf-8"))

  def decode(self, ids):
    return bytes(i for i in ids if i > 2).decode("utf-8", errors="replace")


# ---- advantages and dynamic sampling ------------------------------------------------------------

def test_group_advantages_use_the_unbiased_group_std_and_flag_equal_groups():
  rewards = np.array([1, 0, 0, 0, .5, .5, .5, .5, 1, 1, 0, 0], np.float32)
  advantages = dapo.group_advantages(rewards, 4)
  # group 0: mean .25, sample std sqrt((.75^2 + 3 * .25^2) / 3) = .5
  np.testing.assert_allclose(advantages[:4], [1.5, -.5, -.5, -.5], rtol=1e-5)
  np.testing.assert_array_equal(advantages[4:8], 0.0)            # all equal: no signal
  third = 0.5 / math.sqrt(1 / 3)                                 # ddof=1 std of [1, 1, 0, 0]
  np.testing.assert_allclose(advantages[8:], [third, third, -third, -third], rtol=1e-5)
  np.testing.assert_array_equal(dapo.varied_groups(rewards, 4), [True, False, True])
  with pytest.raises(ValueError, match="G >= 2"):
    dapo.group_advantages(rewards[:5], 4)


def test_shaping_scales_but_never_flips_the_accuracy_advantage():
  accuracy = np.array([1, 1, 0, 0], np.float32)
  shaping = np.array([0, -.5, 0, -.5], np.float32)
  plain = dapo.group_advantages(accuracy, 4)                     # [a, a, -a, -a]
  shaped = dapo.shaped_advantages(accuracy, shaping, 4)
  # the penalized correct sample keeps half its credit; the penalized wrong one gets 1.5x blame
  np.testing.assert_allclose(shaped, plain * [1, .5, 1, 1.5], rtol=1e-6)
  rng = np.random.default_rng(0)
  for _ in range(200):
    accuracy = rng.choice([0, .1, .5, 1], 8).astype(np.float32)
    shaping = -rng.uniform(0, .99, 8).astype(np.float32)
    plain = dapo.group_advantages(accuracy, 8)
    np.testing.assert_array_equal(np.sign(dapo.shaped_advantages(accuracy, shaping, 8)),
                                  np.sign(plain))
  equal = dapo.shaped_advantages(np.ones(4), np.array([0, -.9, -.5, 0]), 4)
  np.testing.assert_array_equal(equal, 0.0)                      # no accuracy signal: none at all
  with pytest.raises(ValueError, match="shaping"):
    dapo.shaped_advantages(accuracy, np.full(8, -1.0), 8)


def test_dynamic_sampling_refills_until_full_and_stops_after_max_draws():
  rounds = [np.array([1, 0, 1, 1, 0, 1.]), np.array([0, 0, 1, 0, 1, 0.]), np.array([1, 0] * 3)]
  filled = dapo.dynamic_sampling(lambda r: rounds[r], lambda x: x, group_size=2, num_groups=4,
                                 max_draws=3)
  assert filled.kept == [(0, 0), (0, 2), (1, 1), (1, 2)] and len(filled.draws) == 2
  assert filled.groups_drawn == 6 and filled.dropped_fraction == pytest.approx(2 / 6)
  equal = dapo.dynamic_sampling(lambda r: np.ones(6), lambda x: x, 2, 4, max_draws=3)
  assert equal.kept == [] and len(equal.draws) == 3 and equal.dropped_fraction == 1.0


# ---- the loss -----------------------------------------------------------------------------------

def _loss_batch(ratios, advantages, weights, temperature=1.0, vocab=4):
  """Zero logits (every target has log-prob -log V) and old log-probs giving `ratios`."""
  ratios = np.asarray(ratios, np.float32)
  logp = -math.log(vocab)
  batch = {"targets": np.zeros(ratios.shape, np.int32),
           "loss_weights": np.asarray(weights, np.float32),
           "advantages": np.asarray(advantages, np.float32),
           "old_logprobs": (logp - np.log(ratios)).astype(np.float32),
           "temperature": np.full(ratios.shape[:1], temperature, np.float32)}
  return np.zeros((*ratios.shape, vocab), np.float32), batch


def test_dapo_loss_by_hand_clip_higher_token_level_and_masks_after_stop():
  # Row 0 (A = +1): ratio 1.5 is clipped at 1 + eps_high = 1.28, 0.5 is not (min keeps 0.5).
  # Row 1 (A = -2): stops after one token; ratio 0.5 is clipped at 1 - eps_low = 0.8; the tokens
  # after its stop carry absurd ratios (1e6) that must not count.
  logits, batch = _loss_batch(ratios=[[1.0, 1.5, 0.5, 1.1], [1.0, 0.5, 1e6, 1e6]],
                              advantages=[1.0, -2.0],
                              weights=[[0, 1, 1, 1], [0, 1, 0, 0]])
  out = dapo.make_dapo_loss(dapo.DapoConfig(eps_low=0.2, eps_high=0.28))(logits, batch, None)
  per_token = [-1.28, -0.5, -1.1, -(-2.0 * 0.8)]
  assert float(out.weight_sum) == 4.0
  np.testing.assert_allclose(out.loss_sum, sum(per_token), rtol=1e-5)
  # Token-level mean -0.32, not the mean of per-sequence means ((-0.96 + 1.6) / 2 = 0.32).
  assert float(out.loss_sum / out.weight_sum) == pytest.approx(-0.32, rel=1e-5)
  sums = {k: float(v) for k, v in out.metric_sums.items()}
  assert sums["clip_fraction_high"] == pytest.approx(1.0)        # 1.5 with A > 0
  assert sums["clip_fraction_low"] == pytest.approx(1.0)         # 0.5 with A < 0
  assert sums["ratio_mean"] == pytest.approx(1.5 + 0.5 + 1.1 + 0.5, rel=1e-5)
  assert sums["entropy"] == pytest.approx(4 * math.log(4), rel=1e-5)
  assert "kl" not in sums


def test_dapo_loss_k3_kl_to_the_reference():
  logits, batch = _loss_batch(ratios=[[1.0, 1.0, 1.0]], advantages=[0.0], weights=[[0, 1, 1]])
  loss = dapo.make_dapo_loss(dapo.DapoConfig(beta=0.5))
  with pytest.raises(ValueError, match="ref_logprobs"):
    loss(logits, batch, None)
  same = loss(logits, {**batch, "ref_logprobs": batch["old_logprobs"]}, None)
  assert float(same.metric_sums["kl"]) == 0.0 and float(same.loss_sum) == 0.0
  shifted = {**batch, "ref_logprobs": batch["old_logprobs"] + np.log(2.0)}
  k3 = 2.0 - math.log(2.0) - 1.0                                 # exp(d) - d - 1 at d = log 2
  out = loss(logits, shifted, None)
  np.testing.assert_allclose(out.metric_sums["kl"], 2 * k3, rtol=1e-5)
  np.testing.assert_allclose(out.loss_sum, 0.5 * 2 * k3, rtol=1e-5)
  assert losses.get_loss("dapo")  # registered by name for the shared train step


# ---- rollout + learner on a tiny random model ---------------------------------------------------

PROMPTS = [rollout_lib.Prompt(ids=(2, 40, 41, 42, 43), gold_ids=("OMIM:154700",),
                              task="differential"),
           rollout_lib.Prompt(ids=(2, 50, 51), gold_ids=("OMIM:609192",), task="final")]


def _constant_rewards(texts, responses, golds, tasks):
  """Accuracy that differs within each group of 2 (sample 0 right), so every group is kept."""
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][::2] = 1.0
  return rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())


@pytest.fixture(scope="module")
def tiny():
  config = preset("tiny_llama", init_std=0.2)  # peaked logits: far from uniform sampling
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  sampler = Sampler(config, cache_length=64, max_batch_size=4)
  rollout = rollout_lib.Rollout(sampler, ByteTokenizer(), _constant_rewards,
                                rollout_lib.RolloutConfig(group_size=2, max_new_tokens=12,
                                                          temperature=0.7, top_k=20))
  samples = rollout(params, PROMPTS, jax.random.key(1))
  rows = np.arange(4)
  batch = rollout_lib.learner_batch(
      [(samples, rows, dapo.group_advantages(samples.rewards.accuracy, 2))], rows=4, length=24,
      temperature=0.7, pad_id=0)
  return config, params, samples, batch


def _learner(config, params, beta=0.0, learning_rate=1e-3, **updates):
  return rollout_lib.Learner(
      model_config=config, dapo_config=dapo.DapoConfig(beta=beta), init_params=params,
      optimizer_config=optimizer.OptimizerConfig(learning_rate=learning_rate, warmup_steps=0,
                                                 total_steps=10),
      mesh=mesh_lib.make_mesh(), **updates)


def test_learner_batch_aligns_old_logprobs_with_response_targets(tiny):
  _, _, samples, batch = tiny
  n = int(samples.lengths[2])  # row 2: prompt 1 (3 tokens), sample 0
  np.testing.assert_array_equal(batch["targets"][2, 2:2 + n], samples.tokens[2, :n])
  np.testing.assert_array_equal(batch["loss_weights"][2], [0, 0] + [1] * n + [0] * (22 - n))
  np.testing.assert_array_equal(batch["old_logprobs"][2, 2:2 + n], samples.logprobs[2, :n])
  assert batch["advantages"][2] > 0 > batch["advantages"][3]


@pytest.fixture
def scorer_calls(monkeypatch):
  """Counts forwards of every reference scorer made while the test runs."""
  calls = []
  original = dapo.reference_scorer

  def counting(model):
    score = original(model)
    return lambda *args: calls.append(1) or score(*args)
  monkeypatch.setattr(dapo, "reference_scorer", counting)
  return calls


def test_first_on_policy_step_has_ratio_one_and_no_reference_forward(tiny, scorer_calls):
  config, params, _, batch = tiny
  score = dapo.reference_scorer(transformer.Decoder(config))
  learner_logprobs = np.asarray(score(params, batch))  # logits / 0.7, as the sampler scaled them
  scored = batch["loss_weights"] > 0
  np.testing.assert_allclose(learner_logprobs[scored], batch["old_logprobs"][scored], atol=1e-4)
  at_t1 = np.asarray(score(params, {**batch, "temperature": np.ones(4, np.float32)}))
  assert np.abs(at_t1[scored] - batch["old_logprobs"][scored]).max() > 1e-2  # T matters
  scorer_calls.clear()
  learner = _learner(config, params, beta=0.0)
  assert "ref_logprobs" not in learner.with_reference(batch)
  metrics = learner.update(batch, np.random.default_rng(0))
  assert not scorer_calls and "kl" not in metrics               # beta = 0: no reference forward
  assert metrics["updated"] == 1.0 and metrics["tokens"] == scored.sum()
  assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
  assert metrics["clip_fraction_low"] == metrics["clip_fraction_high"] == 0.0


def test_minibatch_epochs_reuse_the_rollout_off_policy_so_the_clip_acts(tiny):
  config, params, _, batch = tiny
  frozen = batch["old_logprobs"].copy()
  learner = _learner(config, params, learning_rate=3e-2, minibatches=2, epochs=2)
  metrics = learner.update(batch, np.random.default_rng(0))
  assert learner.step == 4 and metrics["updated"] == 1.0         # 2 epochs x 2 minibatches
  assert metrics["tokens"] == 2 * (batch["loss_weights"] > 0).sum()
  assert abs(metrics["ratio_mean"] - 1.0) > 1e-2                 # later updates are off-policy
  assert metrics["clip_fraction_low"] + metrics["clip_fraction_high"] > 0
  np.testing.assert_array_equal(batch["old_logprobs"], frozen)  # rollout log-probs stay frozen


def test_kl_to_the_reference_is_zero_until_the_policy_moves(tiny, scorer_calls):
  config, params, _, batch = tiny
  learner = _learner(config, params, beta=0.1)
  metrics = learner.update(batch, np.random.default_rng(0))
  assert len(scorer_calls) == 1 and abs(metrics["kl"]) < 1e-6   # policy == reference at first
  second = learner.update(batch, np.random.default_rng(0))
  assert len(scorer_calls) == 2 and second["kl"] > 0             # the policy moved away


def test_empty_batch_applies_no_update(tiny):
  config, params, _, batch = tiny
  learner = _learner(config, params)
  metrics = learner.update({**batch, "loss_weights": np.zeros_like(batch["loss_weights"])},
                           np.random.default_rng(0))
  assert metrics == {"updated": 0.0} and learner.step == 1
  np.testing.assert_array_equal(jax.device_get(learner.params["embedding"]),
                                jax.device_get(params["embedding"]))


# ---- curriculum ---------------------------------------------------------------------------------

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


# ---- rewards ------------------------------------------------------------------------------------

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


# ---- the stage ----------------------------------------------------------------------------------

def _cases():
  tok = ByteTokenizer()
  notes = ["tall, long fingers", "aortic aneurysm", "lens dislocation", "twisted arteries"]
  return [stage_lib.Case(case_id=f"c{i}", gold_ids=("OMIM:154700",) if i % 2 else
                         ("OMIM:609192",),
                         prompt_ids={"differential": tuple([2] + tok.encode(f"D: {note}\n")),
                                     "final": tuple([2] + tok.encode(f"F: {note}\n"))})
          for i, note in enumerate(notes)]


@functools.lru_cache(maxsize=1)
def _tiny_llama():
  config = preset("tiny_llama")
  return config, jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))


def _run(workdir, num_steps, reward_fn=None):
  config, params = _tiny_llama()
  settings = stage_lib.Settings(
      rl=stage_lib.RLConfig(num_steps=num_steps, prompts_per_step=2, max_draws=2,
                            minibatches=2, checkpoint_every=10, async_checkpoints=False,
                            length_multiple=16),
      rollout=rollout_lib.RolloutConfig(group_size=2, max_new_tokens=10),
      curriculum=curriculum_lib.CurriculumConfig(replay_fraction=0.5),
      optimizer=optimizer.OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10))
  reward_fn = reward_fn or rewards_lib.GraderRewards(
      INDEX, rewards_lib.RewardConfig(overlong_buffer=4, repetition_ngram=1), 10)
  return stage_lib.run_rl(workdir=workdir, model_config=config, init_params=params,
                          cases=_cases(), tokenizer=ByteTokenizer(), reward_fn=reward_fn,
                          pad_id=0, settings=settings, eval_fn=lambda p, s: {"top1": 0.5},
                          metadata={"vocabulary": "bytes"}, progress=False)


def test_rl_stage_runs_two_steps_and_writes_an_export_and_metrics(tmp_path):
  result = _run(tmp_path, 2)
  assert result["steps"] == 2 and result["stopped"] == "completed"
  assert (tmp_path / "checkpoints" / "4").is_dir()              # 2 steps x 2 updates each
  assert result["eval"] == {"top1": 0.5} and set(result["curriculum"]["pass_rates"]) == {
      "differential", "final"}
  config = preset("tiny_llama")
  params = export_lib.load_params(tmp_path / "export", config)
  assert transformer.count_params(params) == transformer.count_params(
      transformer.abstract_params(config))
  rows = writers.read_metrics(tmp_path)
  steps = [r for r in rows if "rl/reward" in r]
  assert [r["step"] for r in steps] == [1, 2]
  expected = {"rl/reward_accuracy", "rl/reward_format", "rl/reward_repetition",
              "rl/reward_overlong", "rl/pass_rate", "rl/dropped_group_fraction",
              "rl/response_length", "rl/rollout_tokens_per_s", "rl/seconds_per_step",
              "curriculum/task", "curriculum/tier", "train/updated"}
  assert all(expected <= set(r) for r in steps)
  assert any("curriculum/differential/tier2_cases" in r for r in rows)
  assert any(r.get("eval/top1") == 0.5 for r in rows)


def _shaped_rewards(texts, responses, golds, tasks):
  """Per 2 prompts x G = 2: group 0 all right, only its shaping differs (must be dropped); group 1
  a right answer (rank 2) with heavy penalties and a wrong, clean one (the right one must win)."""
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][:] = [1.0, 1.0, 0.5, 0.0]
  terms["repetition"][:] = [0.0, -0.5, -1.0, 0.0]
  terms["overlong"][:] = [0.0, 0.0, -1.0, 0.0]
  return rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())


def test_rl_stage_keeps_groups_by_accuracy_and_shaping_keeps_its_sign(tmp_path, monkeypatch):
  batches = []
  build = rollout_lib.learner_batch
  monkeypatch.setattr(rollout_lib, "learner_batch",
                      lambda *a, **k: batches.append(build(*a, **k)) or batches[-1])
  _run(tmp_path, 1, reward_fn=_shaped_rewards)
  step = next(r for r in writers.read_metrics(tmp_path) if "rl/reward" in r)
  advantages = batches[0]["advantages"][batches[0]["loss_weights"].any(axis=1)]
  # two draws, each keeps group 1 only: (right, wrong) rows, the right one ahead despite shaping
  assert (step["rl/dropped_group_fraction"], step["rl/kept_groups"],
          np.sign(advantages).tolist()) == (0.5, 2, [1, -1, 1, -1])
  assert {"train/clip_fraction_low", "train/clip_fraction_high"} <= set(step)
  assert step["train/ratio_mean"] != 1.0                         # the second minibatch is off-policy


def _differential_passed(texts, responses, golds, tasks):
  """Every differential sample right; final samples alternate right / wrong."""
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][:] = [1.0 if t == "differential" or i % 2 == 0 else 0.0
                          for i, t in enumerate(tasks)]
  return rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())


def test_rl_stage_moves_to_the_final_level_once_the_differential_is_passed(tmp_path):
  result = _run(tmp_path, 2, reward_fn=_differential_passed)
  rows = writers.read_metrics(tmp_path)
  assert {"step": 0, "curriculum/differential/ended_at": 0.0} in rows
  assert [r["curriculum/task"] for r in rows if "rl/reward" in r] == [1.0, 1.0]  # both final
  assert result["curriculum"]["ended_at"] == {"differential": 0}


def _rl_experiments():
  """Experiment gin files whose pipeline runs the rl stage."""
  root = GIN_CONFIGS / "experiments"
  return sorted(p.stem for p in root.glob("*.gin")
                if any(line.startswith("run_pipeline.stages") and "'rl'" in line
                       for line in p.read_text().splitlines()))


@pytest.mark.parametrize("name", _rl_experiments())
def test_shipped_rl_configs_reuse_rollouts_and_grade_a_single_final_diagnosis(name):
  bindings = ["CHECKPOINT = '/nonexistent'"] if name == "paper_gpu" else []
  gin.clear_config()
  try:
    main_lib.parse_config([f"experiments/{name}.gin"], bindings)
    with gin.config_scope("rl"):
      config, reward = stage_lib.RLConfig(), rewards_lib.RewardConfig()
      curriculum = curriculum_lib.CurriculumConfig()
  finally:
    gin.clear_config()
  assert config.minibatches * config.epochs > 1                 # updates after the first clip
  assert config.max_draws > 1                                    # dropped groups are refilled
  assert reward.grader.final_single_entry
  assert curriculum.advance_pass_rate is not None and curriculum.refresh_every > 0


@pytest.mark.slow
def test_rl_resumes_after_sigterm_exactly_like_an_uninterrupted_run(tmp_path):
  straight = _run(tmp_path / "straight", 3, reward_fn=_constant_rewards)

  calls = []
  def sigterm_in_step_two(*args):
    calls.append(1)
    if len(calls) == 4:  # differential measured in 2 chunks, one draw a step: step 2's draw
      os.kill(os.getpid(), signal.SIGTERM)
    return _constant_rewards(*args)
  with pytest.raises(train_stage_lib.StagePreempted, match="step 2"):
    _run(tmp_path / "killed", 3, reward_fn=sigterm_in_step_two)
  resumed = _run(tmp_path / "killed", 3, reward_fn=_constant_rewards)
  assert resumed["steps"] == 3
  assert resumed["train"]["train/loss"] == straight["train"]["train/loss"]
  assert resumed["train"]["rl/reward"] == straight["train"]["rl/reward"]
  logged = [r["step"] for r in writers.read_metrics(tmp_path / "killed") if "rl/reward" in r]
  assert logged == [1, 2, 3]  # one row per step across the kill


@pytest.mark.slow
@pytest.mark.integration
def test_rl_stage_runs_in_the_tiny_pipeline_from_gin(tmp_path):
  from rarejax import main as main_lib  # pylint: disable=g-import-not-at-top
  bindings = ["run_pipeline.stages = ['data', 'cpt', 'sft', 'rl', 'eval']",
              "rl/RLConfig.num_steps = 2", "rl/RLConfig.prompts_per_step = 2",
              "rl/RLConfig.pool_size = 4", "rl/RolloutConfig.max_new_tokens = 16",
              "rl/RewardConfig.overlong_buffer = 8", "rl/OptimizerConfig.warmup_steps = 0"]
  argv = ["--workdir", str(tmp_path), "--gin_file", "experiments/tiny.gin"]
  assert main_lib.main(argv + [a for b in bindings for a in ("--gin_bindings", b)]) == 0
  result = json.loads((tmp_path / "rl" / "result.json").read_text())
  metadata = json.loads((tmp_path / "rl" / "export" / "metadata.json").read_text())
  assert result["steps"] == 2 and metadata["prompt_instruction"] == "full"  # the DataSpec's
  assert len(result["curriculum"]["pass_rates"]["differential"]) == 4 and "top1" in result["eval"]
  assert "rl/RLConfig.num_steps = 2" in (tmp_path / "operative_config.gin").read_text()
  assert "model.rl" in json.loads((tmp_path / "eval" / "result.json").read_text())
