"""Tests for rarejax.rl.dapo: advantages (shaping keeps the accuracy sign), dynamic sampling on the
accuracy outcome, the DAPO loss by hand and its reference KL."""
import math

import numpy as np
import pytest

from rarejax.rl import dapo
from rarejax.train import losses

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
