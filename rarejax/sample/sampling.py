"""Next-token sampling from logits: greedy, temperature, top-k, top-p, with log-probabilities.

Order of operations for a row (every knob is a traced value, one per row, so changing it never
recompiles):

  1. temperature: scaled = logits / temperature (temperature <= 0 means greedy; its scale is 1).
  2. top-k: keep the k largest scaled logits (k <= 0 or k >= vocab disables it).
  3. top-p: of the survivors, renormalized, keep the smallest set of most likely tokens whose
     mass reaches top_p; the most likely token is always kept (top_p >= 1 disables it).
  4. sample from the kept tokens; greedy rows take argmax(logits) instead (a jnp.where).

The returned log-probability is that of the chosen token under log_softmax(scaled) — the
temperature-scaled distribution *before* top-k/top-p truncation (temperature 1 for greedy rows),
i.e. what a policy-gradient loss recomputes from logits / temperature. Tokens tied with the
top-k/top-p cutoff value are all kept.

Speed (XLA:CPU has a slow sort and a slow variadic argmax reduce, and drawing one Gumbel
number per vocabulary entry costs more than a small model's decode step): the k-th largest
value and the top-p cutoff are found by exact bisection over the float bit patterns (32 passes
of a compare-and-sum), sampling draws one uniform per row and inverts the CDF, argmax is two
plain reductions. Each stage is skipped (lax.cond) when no row needs it, and all of sampling
is skipped when every row is greedy.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def first_argmax(x: Array) -> Array:
  """int32 [B]: index of the first maximum of each row of x [B, V] (= jnp.argmax)."""
  vocab = x.shape[-1]
  ids = jnp.arange(vocab, dtype=jnp.int32)
  return jnp.min(jnp.where(x == x.max(-1, keepdims=True), ids, vocab), axis=-1)


def _sortable_keys(x: Array) -> Array:
  """uint32 keys with the same order as the float32 values x (no NaNs)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _largest_key_where(holds: Callable[[Array], Array], batch: int) -> Array:
  """uint32 [B]: per row, the largest key t with holds(t), for holds monotone and true at 0.

  Args:
    holds: maps thresholds uint32 [B] to bool [B]; true at 0 and non-increasing in t.
    batch: B.
  """
  def step(_, bounds):
    lo, hi = bounds  # the answer lies in [lo, hi]
    gap = hi - lo
    mid = lo + gap // 2 + gap % 2
    ok = holds(mid)
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)
  start = (jnp.zeros((batch,), jnp.uint32), jnp.full((batch,), 0xFFFFFFFF, jnp.uint32))
  return jax.lax.fori_loop(0, 32, step, start)[0]


def _top_k_mask(keys: Array, top_k: Array) -> Array:
  """bool [B, V]: values >= the k-th largest of the row (all when k <= 0 or k >= V)."""
  vocab = keys.shape[-1]
  k = jnp.where((top_k <= 0) | (top_k > vocab), vocab, top_k)
  def count_reaches(t):  # float sums: exact below 2**24 tokens and faster than int sums on CPU
    return jnp.sum(jnp.where(keys >= t[:, None], 1.0, 0.0), -1) >= k
  kth = _largest_key_where(count_reaches, keys.shape[0])
  return keys >= kth[:, None]


def _top_p_mask(keys: Array, probs: Array, top_p: Array) -> Array:
  """bool [B, V]: the most likely tokens until their mass (of probs [B, V]) reaches top_p."""
  def mass_reaches(t):
    return jnp.sum(jnp.where(keys >= t[:, None], probs, 0.0), -1) >= top_p
  cutoff = _largest_key_where(mass_reaches, keys.shape[0])
  return keys >= jnp.where(top_p >= 1.0, 0, cutoff)[:, None]


def _inverse_cdf(rngs: Array, probs: Array) -> Array:
  """int32 [B]: one draw per row from unnormalized probs [B, V] (one uniform per row)."""
  cdf = jnp.cumsum(probs, axis=-1)
  u = 1.0 - jax.vmap(jax.random.uniform)(rngs)  # (0, 1]: a zero-probability token is never hit
  tokens = jnp.sum(cdf < u[:, None] * cdf[:, -1:], axis=-1).astype(jnp.int32)
  hit = jnp.take_along_axis(probs, tokens[:, None], axis=-1)[:, 0] > 0
  return jnp.where(hit, tokens, first_argmax(probs))  # guards float rounding in the cumsum


def _sample_rows(rngs: Array, scaled: Array, greedy: Array, top_k: Array,
                 top_p: Array) -> Array:
  """int32 [B]: a draw from each row's top-k / top-p truncated distribution."""
  vocab = scaled.shape[-1]
  keys = _sortable_keys(scaled)
  no_mask = lambda: jnp.ones(scaled.shape, bool)
  keep = jax.lax.cond(jnp.any(~greedy & (top_k > 0) & (top_k < vocab)),
                      lambda: _top_k_mask(keys, top_k), no_mask)
  probs = jax.nn.softmax(jnp.where(keep, scaled, -jnp.inf), axis=-1)
  keep = jax.lax.cond(jnp.any(~greedy & (top_p < 1.0)),
                      lambda: _top_p_mask(keys, probs, top_p), no_mask)
  return _inverse_cdf(rngs, jnp.where(keep, probs, 0.0))


def sample_tokens(rngs: Array, logits: Array, temperature: Array, top_k: Array,
                  top_p: Array) -> tuple[Array, Array]:
  """Chooses one token per row and returns it with its log-probability.

  Args:
    rngs: typed PRNG keys [B], one per row.
    logits: float32 [B, V].
    temperature: float32 [B]; <= 0 selects greedy decoding for the row.
    top_k: int32 [B]; <= 0 disables.
    top_p: float32 [B]; >= 1 disables.

  Returns:
    tokens int32 [B] and logprobs float32 [B] (log_softmax(logits / temperature) at the token;
    temperature 1 for greedy rows).
  """
  greedy = temperature <= 0
  scaled = logits / jnp.where(greedy, 1.0, temperature)[:, None]
  argmax = first_argmax(logits)
  sampled = jax.lax.cond(jnp.all(greedy), lambda: argmax,
                         lambda: _sample_rows(rngs, scaled, greedy, top_k, top_p))
  tokens = jnp.where(greedy, argmax, sampled)
  chosen = jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0]
  return tokens, chosen - jax.nn.logsumexp(scaled, axis=-1)
