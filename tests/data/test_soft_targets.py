"""Tests for soft first-answer targets: the teacher's top-K rows, where packing puts them, the
loss they add, their survival through loss_positions, and the cache reader that weights them."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rarejax.data import cached_batches, packing
from rarejax.data import soft_targets
from rarejax.train import losses
from rarejax.train import step as step_lib

from tests.sample import test_answer_prior  # pylint: disable=g-bad-import-order  (toy cache writer)


def test_teacher_rows_keep_the_k_best_as_a_softmax_over_them():
  config = soft_targets.SoftTargets(k=3, temperature=0.5)
  scores = np.array([1.0, 3.0, 2.0, 3.0, 0.5], np.float32)
  tokens = np.array([10, 11, 12, 13, 14], np.int32)
  ids, probs = soft_targets.teacher_rows(scores, tokens, config)
  assert ids.tolist() == [11, 13, 12]  # equal scores: the earlier disease first
  expected = np.exp(np.array([3.0, 3.0, 2.0]) / 0.5)
  np.testing.assert_allclose(probs, expected / expected.sum(), rtol=1e-6)
  # fewer diseases than K: the rest of the row is empty (probability 0)
  ids, probs = soft_targets.teacher_rows(scores[:2], tokens[:2], config)
  assert ids.tolist() == [11, 10, 0] and probs[2] == 0 and probs.sum() == pytest.approx(1)


def test_settings_are_checked_and_name_their_folder():
  assert soft_targets.SoftTargets(k=8, temperature=0.25).key == "soft-resnik-k8-t0.25"
  for bad in ({"weight": 0.0}, {"k": 0}, {"temperature": 0.0}):
    with pytest.raises(ValueError, match="SoftTargets needs"):
      soft_targets.SoftTargets(**bad)


def _soft(offset, ids, probs):
  return packing.SoftTarget(offset, np.array(ids, np.int32), np.array(probs, np.float32))


def test_packing_puts_the_soft_target_at_the_answer_position():
  examples = [(np.array([5, 6]), np.array([4, 7, 1]), _soft(1, [7, 8], [0.75, 0.25])),
              (np.array([5]), np.array([4, 9, 1])),  # no soft target
              (np.array([6, 6, 6]), np.array([4, 8, 1]), _soft(1, [8, 9], [0.5, 0.5]))]
  batch = next(packing.batches(examples, 16, 1, soft_k=2))
  assert batch["soft_ids"].shape == (1, 16, 2) and batch["soft_probs"].dtype == np.float32
  probs, ids, targets = batch["soft_probs"][0], batch["soft_ids"][0], batch["targets"][0]
  at = np.flatnonzero(probs.sum(axis=1))
  assert at.tolist() == [3, 13]  # prompt 2 + offset 1; segments of 5 + 4, prompt 3 + offset 1
  assert targets[3] == 7 and targets[13] == 8  # the answer pieces the teacher is about
  assert ids[3].tolist() == [7, 8] and probs[13].tolist() == [0.5, 0.5]
  assert batch["loss_weights"][0][at].tolist() == [1.0, 1.0]
  plain = next(packing.batches(examples, 16, 1))
  assert set(plain) == set(packing.BATCH_KEYS)  # soft_k = 0: the rows as before
  for key in packing.BATCH_KEYS:
    np.testing.assert_array_equal(plain[key], batch[key])


def test_soft_cross_entropy_is_the_expected_negative_log_likelihood():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 11))
  ids = jnp.zeros((2, 3, 2), jnp.int32).at[1, 2].set(jnp.array([4, 9]))
  probs = jnp.zeros((2, 3, 2)).at[1, 2].set(jnp.array([0.6, 0.4]))
  log_q = jax.nn.log_softmax(logits[1, 2])
  expected = -(0.6 * log_q[4] + 0.4 * log_q[9])
  assert losses.soft_cross_entropy(logits, ids, probs) == pytest.approx(float(expected), rel=1e-5)
  targets = jnp.ones((2, 3), jnp.int32)
  batch = {"targets": targets, "loss_weights": jnp.ones((2, 3))}
  hard = losses.sft_loss(logits, batch, None)
  soft = losses.sft_loss(logits, {**batch, "soft_ids": ids, "soft_probs": probs}, None)
  assert soft.loss_sum == pytest.approx(float(hard.loss_sum + expected), rel=1e-5)
  assert soft.weight_sum == hard.weight_sum and soft.metric_sums["soft_ce"] > 0
  assert "soft_ce" not in hard.metric_sums


def test_loss_positions_keep_the_soft_targets_of_the_positions_they_keep():
  weights = jnp.array([[0.0, 1.0, 0.0, 1.0]])
  soft_probs = jnp.zeros((1, 4, 2)).at[0, 3].set(jnp.array([0.5, 0.5]))
  batch = {"inputs": jnp.zeros((1, 4), jnp.int32), "targets": jnp.arange(4)[None],
           "loss_weights": weights, "soft_probs": soft_probs,
           "soft_ids": jnp.arange(8).reshape(1, 4, 2)}
  positions, gathered, dropped = step_lib.loss_positions_batch(batch, 2)
  assert positions.tolist() == [[1, 3]] and float(dropped) == 0
  assert gathered["soft_probs"].shape == (1, 2, 2)
  assert gathered["soft_probs"][0, 1].tolist() == [0.5, 0.5]
  assert gathered["soft_ids"][0].tolist() == [[2, 3], [6, 7]]


def _write_soft(folder, config, rows):
  out = soft_targets.folder_of(folder, config)
  out.mkdir()
  np.save(out / "ids.npy", np.array([r[0] for r in rows], np.int32))
  np.save(out / "probs.npy", np.array([r[1] for r in rows], np.float32))
  (out / soft_targets.META).write_text(json.dumps({"offset": 2}))


def test_cached_split_carries_weighted_soft_targets(tmp_path):
  test_answer_prior.write_split(tmp_path, "real", [[4, 5, 7, 1], [4, 5, 8, 1]])
  folder = cached_batches.split_dir(tmp_path, "real", "train")
  config = soft_targets.SoftTargets(weight=0.5, k=2)
  assert len(cached_batches.open_split(folder, config).example(0)) == 2  # none built yet
  _write_soft(folder, config, [([7, 8], [0.9, 0.1]), ([8, 7], [0.6, 0.4])])
  split = cached_batches.open_split(folder, config)
  _, targets, soft = split.example(1)
  assert targets[soft.offset] == 8 and soft.ids.tolist() == [8, 7]
  np.testing.assert_allclose(soft.probs, [0.3, 0.2])  # weight 0.5
  assert len(cached_batches.open_split(folder).example(1)) == 2  # not asked for: none
  path = cached_batches.rates_path(tmp_path, "mix")
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({"real": 1.0}))
  (tmp_path / cached_batches.CACHE_FOLDER / "real" / "train" / cached_batches.META).write_text(
      json.dumps({"examples": 2, "bos_id": 0, "pad_id": 0, "vocabulary": "toy"}))
  batch = next(cached_batches.cached_batches(tmp_path, "mix", 16, 1, shard=(0, 1), soft=config))
  assert batch["soft_probs"].sum() == pytest.approx(1.0)  # both examples in one row, 0.5 each


def test_teacher_rows_that_do_not_match_the_cache_are_refused(tmp_path):
  test_answer_prior.write_split(tmp_path, "real", [[4, 5, 7, 1], [4, 5, 8, 1]])
  folder = cached_batches.split_dir(tmp_path, "real", "train")
  config = soft_targets.SoftTargets(k=2)
  _write_soft(folder, config, [([7, 8], [0.9, 0.1])])
  with pytest.raises(ValueError, match="1 rows for 2 examples"):
    cached_batches.open_split(folder, config)
