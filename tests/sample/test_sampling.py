"""Token sampling: greedy rows, temperature, top-k then top-p truncation, log-probabilities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rarejax.sample import sample_tokens
from rarejax.sample import sampling

# probs 0.4, 0.3, 0.15, 0.1, 0.05 over tokens 3, 0, 4, 1, 2 (shuffled so order is not the id).
PROBS = np.array([0.3, 0.1, 0.05, 0.4, 0.15])
LOGITS = np.log(PROBS).astype(np.float32)
ROWS = 4000


def _sample(temperature, top_k, top_p, rows=ROWS, seed=0):
  keys = jax.random.split(jax.random.key(seed), rows)
  full = lambda v, dtype: jnp.full((rows,), v, dtype)
  tokens, logprobs = jax.jit(sample_tokens)(
      keys, jnp.broadcast_to(jnp.asarray(LOGITS), (rows, len(LOGITS))),
      full(temperature, jnp.float32), full(top_k, jnp.int32), full(top_p, jnp.float32))
  return np.asarray(tokens), np.asarray(logprobs)


def _frequencies(tokens: np.ndarray) -> np.ndarray:
  return np.bincount(tokens, minlength=len(PROBS)) / len(tokens)


@pytest.mark.parametrize("top_k, top_p, kept", [
    (0, 1.0, [0, 1, 2, 3, 4]),
    (3, 1.0, [3, 0, 4]),
    (0, 0.5, [3, 0]),  # 0.4 < 0.5, so token 0 is needed to reach the mass
    (0, 0.4, [3]),
    (3, 0.8, [3, 0]),  # renormalized over the top 3: 0.47, 0.35 -> 0.82 >= 0.8
    (2, 0.99, [3, 0]),  # top-k binds first
])
def test_top_k_then_top_p_keep_the_expected_tokens_in_proportion(top_k, top_p, kept):
  tokens, logprobs = _sample(1.0, top_k, top_p)
  expected = np.zeros_like(PROBS)
  expected[kept] = PROBS[kept] / PROBS[kept].sum()
  np.testing.assert_allclose(_frequencies(tokens), expected, atol=0.03)
  # log-probs are under the untruncated distribution at this temperature
  np.testing.assert_allclose(logprobs, np.log(PROBS)[tokens], atol=1e-5)


def test_temperature_sharpens_and_reports_scaled_logprobs():
  tokens, logprobs = _sample(0.5, 0, 1.0)
  scaled = PROBS**2 / (PROBS**2).sum()
  np.testing.assert_allclose(_frequencies(tokens), scaled, atol=0.03)
  np.testing.assert_allclose(logprobs, np.log(scaled)[tokens], atol=1e-5)


def test_greedy_rows_take_argmax_with_temperature_one_logprobs():
  rows = 6
  temperature = jnp.asarray([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], jnp.float32)
  logits = jax.random.normal(jax.random.key(1), (rows, 50)) * 3
  tokens, logprobs = sample_tokens(jax.random.split(jax.random.key(2), rows), logits,
                                   temperature, jnp.full((rows,), 5, jnp.int32),
                                   jnp.full((rows,), 0.9, jnp.float32))
  argmax = np.asarray(logits.argmax(-1))
  np.testing.assert_array_equal(np.asarray(tokens)[::2], argmax[::2])
  expected = np.asarray(jax.nn.log_softmax(logits))[np.arange(rows), np.asarray(tokens)]
  np.testing.assert_allclose(np.asarray(logprobs), expected, atol=1e-5)


def test_all_greedy_batch_ignores_keys():
  a, _ = _sample(0.0, 0, 1.0, rows=8, seed=0)
  b, _ = _sample(0.0, 0, 1.0, rows=8, seed=1)
  assert (a == 3).all() and (b == 3).all()


def test_bisection_masks_equal_sort_based_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 300)).astype(np.float32) * 3
  logits[:, :20] = logits[:, :1]  # ties
  logits[1, 5] = -np.inf
  top_k = rng.integers(0, 320, size=64).astype(np.int32)
  top_p = rng.uniform(0.05, 1.0, size=64).astype(np.float32)
  keys = sampling._sortable_keys(jnp.asarray(logits))
  kept_k = np.asarray(sampling._top_k_mask(keys, jnp.asarray(top_k)))
  probs = np.asarray(jax.nn.softmax(jnp.where(kept_k, logits, -jnp.inf)))
  kept_p = np.asarray(sampling._top_p_mask(keys, jnp.asarray(probs), jnp.asarray(top_p)))
  for row in range(64):
    ranked = np.sort(logits[row])[::-1]
    k = top_k[row] if 0 < top_k[row] <= 300 else 300
    np.testing.assert_array_equal(kept_k[row], logits[row] >= ranked[k - 1])
    p_ranked = np.sort(probs[row])[::-1]
    mass_before = np.cumsum(p_ranked) - p_ranked
    cutoff = p_ranked[np.sum((mass_before < top_p[row]) & (p_ranked > 0)) - 1]
    close = np.abs(np.cumsum(p_ranked) - top_p[row]).min() < 1e-5  # float-order borderline
    if not close:
      np.testing.assert_array_equal(kept_p[row] & kept_k[row], kept_k[row] & (probs[row] >= cutoff))


def test_first_argmax_matches_jnp_argmax_with_ties():
  x = jnp.asarray([[1.0, 3.0, 3.0, 0.0], [-jnp.inf, -1.0, -1.0, -2.0], [5.0, 5.0, 5.0, 5.0]])
  np.testing.assert_array_equal(sampling.first_argmax(x), jnp.argmax(x, -1))
