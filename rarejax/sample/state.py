"""Sampler state pytrees: each row's sequence (KV cache + the token not yet fed), the decode carry.

Invariant of `SequenceState`: every token of a row except the last is in the cache; the last one,
`pending`, is fed by the next model call (the next decode step, or the next `append`). Prompts,
feedback turns and sampled tokens therefore all land right after the row's last real token, and
`position` (the RoPE position of `pending`) continues per row. Cache slot `S - 1` is scratch:
finished rows whose cache is full write their (ignored) step there, so a row holds at most
`S - 1` tokens.
"""
import enum
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import PartitionSpec

from rarejax.model import transformer

Array = jax.Array
Cache = dict[str, Any]


@functools.cache
def _cache_batch_axes(num_layers: int) -> Any:
  """The cache pytree (of num_layers layers) with the position of its 'cache_batch' axis."""
  return jax.tree.map(lambda spec: tuple(spec).index("cache_batch"),
                      transformer.cache_logical_axes(num_layers),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


class StopReason(enum.IntEnum):
  """Why a row stopped (SampleOutput.stop_reason)."""
  NONE = 0  # never ran (only in padding rows, which are dropped)
  STOP_ID = 1  # emitted one of the stop ids (kept as its last token)
  MAX_NEW_TOKENS = 2  # reached max_new_tokens
  CACHE_FULL = 3  # no free cache slot for another token


@struct.dataclass(kw_only=True)
class SequenceState:
  """What each row has read so far; continue generating from it with `Sampler.resume`.

  Attributes:
    cache: the model's KV cache (rarejax.model.transformer.init_cache): per-layer k, v;
      segment_ids int32 [B, S] (0 = empty slot); index int32 [B] (next slot to write). Rows are
      found through the 'cache_batch' axis of `cache_logical_axes`, so any cache layout works.
    pending: int32 [B], the row's last token, not yet written into the cache.
    position: int32 [B], RoPE position of `pending` (= tokens before it in the row).
  """
  cache: Cache
  pending: Array
  position: Array

  @property
  def batch_size(self) -> int:
    return self.pending.shape[0]

  @property
  def cache_length(self) -> int:
    return self.cache["segment_ids"].shape[1]

  def map_rows(self, fn) -> "SequenceState":
    """Applies fn(leaf, batch_axis) -> leaf to every per-row array."""
    cache = jax.tree.map(fn, self.cache, _cache_batch_axes(len(self.cache["layers"])))
    return SequenceState(cache=cache, pending=fn(self.pending, 0), position=fn(self.position, 0))

  def take(self, rows) -> "SequenceState":
    """The rows at integer indices `rows` (a copy), e.g. the failed trajectories to reflect on."""
    rows = jnp.asarray(rows, jnp.int32)
    return self.map_rows(lambda x, axis: jnp.take(x, rows, axis=axis))

  def repeat(self, repeats: int) -> "SequenceState":
    """Repeats every row `repeats` times (row b -> rows b*repeats .. b*repeats+repeats-1)."""
    return self.map_rows(lambda x, axis: jnp.repeat(x, repeats, axis=axis))

  def pad_rows(self, batch_size: int) -> "SequenceState":
    """Appends all-zero (empty) rows up to `batch_size` rows."""
    extra = batch_size - self.batch_size

    def pad(x, axis):
      widths = [(0, 0)] * x.ndim
      widths[axis] = (0, extra)
      return jnp.pad(x, widths)
    return self if extra == 0 else self.map_rows(pad)


def concatenate_states(states: list[SequenceState]) -> SequenceState:
  """Stacks the rows of several states (same cache length) in order."""
  if len(states) == 1:
    return states[0]
  axes = _cache_batch_axes(len(states[0].cache["layers"]))
  return SequenceState(
      cache=jax.tree.map(lambda axis, *leaves: jnp.concatenate(leaves, axis=axis), axes,
                         *[s.cache for s in states]),
      pending=jnp.concatenate([s.pending for s in states]),
      position=jnp.concatenate([s.position for s in states]))


@struct.dataclass(kw_only=True)
class DecodeState:
  """Carry of the decode while_loop (B rows, T = max_new_tokens).

  Attributes:
    seq: the rows' sequences; `seq.pending` is the last sampled token.
    step: int32 [], decode steps taken.
    done: bool [B], row has stopped (or is batch padding).
    tokens: int32 [B, T], sampled tokens; pad after a row stopped.
    logprobs: float32 [B, T], log-probability of each sampled token; 0 after a row stopped.
    lengths: int32 [B], tokens emitted per row (the stop token included).
    stop_reason: int32 [B], a StopReason.
  """
  seq: SequenceState
  step: Array
  done: Array
  tokens: Array
  logprobs: Array
  lengths: Array
  stop_reason: Array


@struct.dataclass(kw_only=True)
class SamplingKnobs:
  """Traced sampling settings (changing them never recompiles); see rarejax.sample.sampling.

  Attributes:
    temperature: float32 [B]; <= 0 is greedy.
    top_k: int32 [B]; <= 0 disables.
    top_p: float32 [B]; >= 1 disables.
    stop_ids: int32 [n], padded with -1 (never a token).
    pad_id: int32 [], written after a row stopped.
  """
  temperature: Array
  top_k: Array
  top_p: Array
  stop_ids: Array
  pad_id: Array
