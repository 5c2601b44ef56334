"""Device side of the sampler: jitted prefill / append into a SequenceState and the decode loop.

Compiled shapes: batch B, prompt chunk length L, cache length S, max_new_tokens T and the number
of (padded) stop ids; the model config, mesh and rules are static. Sampling knobs are traced
(see SamplingKnobs), so changing them reuses the compiled code. The decode loop is one
`lax.while_loop` that runs until every row is done: no host round trip per token.

Sharding: with a mesh and a logical rules table (rarejax.parallel.rules.SAMPLE_RULES), the model
is traced under those rules and the cache is constrained to `cache_logical_axes`; batch
sizes must divide the mesh axes of 'cache_batch' (the Sampler pads batches accordingly).
"""
import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.parallel import rules as rules_lib
from rarejax.sample import sampling
from rarejax.sample.state import Cache, DecodeState, SamplingKnobs, SequenceState, StopReason

Array = jax.Array
Params = Any
Rules = rules_lib.LogicalRules | None

_STATIC = ("config", "mesh", "rules")


@contextlib.contextmanager
def _sharding_scope(mesh: Mesh | None, rules: Rules) -> Iterator[None]:
  """Makes the mesh and logical rules current while tracing (nothing without a mesh)."""
  if mesh is None:
    yield
    return
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
    yield


def _constrain_cache(cache: Cache, mesh: Mesh | None, rules: Rules) -> Cache:
  """Pins the cache leaves to their logical sharding (identity without a mesh)."""
  if mesh is None:
    return cache
  logical = transformer.cache_logical_axes(len(cache["layers"]))
  shardings = rules_lib.logical_to_shardings(logical, cache, mesh, rules)
  return jax.lax.with_sharding_constraint(cache, shardings)


def _append(config: ModelConfig, params: Params, seq: SequenceState, tokens: Array,
            num_tokens: Array) -> SequenceState:
  """Feeds each row's pending token and all but the last of its new tokens into the cache.

  Args:
    config: the model config.
    params: model parameters.
    seq: B rows.
    tokens: int32 [B, L], each row's new tokens, right-padded (pad values are ignored).
    num_tokens: int32 [B], real tokens per row (0 leaves the row unchanged).

  Returns:
    The rows with [pending, tokens[:n-1]] written at slots index .. index+n-1 (segment 1,
    positions continuing from `position`) and tokens[n-1] as the new pending token. The
    padding slots written after them hold segment 0 and are overwritten later.
  """
  length = tokens.shape[1]
  written = jnp.concatenate([seq.pending[:, None], tokens], axis=1)[:, :length]  # [B, L]
  offsets = jnp.arange(length, dtype=jnp.int32)
  real = (offsets[None, :] < num_tokens[:, None]).astype(jnp.int32)  # [B, L]
  _, cache = transformer.Decoder(config).apply(
      {"params": params}, written, positions=seq.position[:, None] + offsets[None, :],
      segment_ids=real, cache=seq.cache, last_only=True)
  cache = {**cache, "index": seq.cache["index"] + num_tokens}
  last = jnp.take_along_axis(tokens, jnp.maximum(num_tokens - 1, 0)[:, None], axis=1)[:, 0]
  return SequenceState(cache=cache, pending=jnp.where(num_tokens > 0, last, seq.pending),
                       position=seq.position + num_tokens)


@functools.partial(jax.jit, static_argnames=_STATIC + ("cache_length",))
def prefill(params: Params, first: Array, rest: Array, num_rest: Array, *, config: ModelConfig,
            mesh: Mesh | None, rules: Rules, cache_length: int) -> SequenceState:
  """New rows from prompts.

  Args: first int32 [B] (each prompt's token 0), rest int32 [B, L] (its tokens 1.., right-padded),
  num_rest int32 [B] (their count); the static setup and the cache length S.
  """
  with _sharding_scope(mesh, rules):
    cache = transformer.init_cache(config, first.shape[0], cache_length)
    zeros = jnp.zeros_like(first)
    seq = SequenceState(cache=_constrain_cache(cache, mesh, rules), pending=first, position=zeros)
    if rest.shape[1]:
      seq = _append(config, params, seq, rest, num_rest)
    return seq.replace(cache=_constrain_cache(seq.cache, mesh, rules))


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnames=("seq",))
def append(params: Params, seq: SequenceState, tokens: Array, num_tokens: Array, *,
           config: ModelConfig, mesh: Mesh | None, rules: Rules) -> SequenceState:
  """Jitted `_append` (a feedback turn); `seq` is donated."""
  with _sharding_scope(mesh, rules):
    seq = _append(config, params, seq, tokens, num_tokens)
    return seq.replace(cache=_constrain_cache(seq.cache, mesh, rules))


def _decode_step(config: ModelConfig, params: Params, row_keys: Array, knobs: SamplingKnobs,
                 state: DecodeState) -> DecodeState:
  """Feeds the pending tokens, samples the next ones, and records them for the active rows."""
  seq, active = state.seq, ~state.done
  logits, cache = transformer.Decoder(config).apply(
      {"params": params}, seq.pending[:, None], positions=seq.position[:, None],
      segment_ids=active[:, None].astype(jnp.int32), cache=seq.cache)
  index = jnp.where(active, seq.cache["index"] + 1, seq.cache["index"])  # done rows stay put
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, state.step)
  token, logprob = sampling.sample_tokens(keys, logits[:, 0], knobs.temperature, knobs.top_k,
                                          knobs.top_p)
  token = jnp.where(active, token, knobs.pad_id)
  logprob = jnp.where(active, logprob, 0.0)
  hit_stop = active & jnp.isin(token, knobs.stop_ids)
  hit_max = active & (state.step + 1 >= state.tokens.shape[1])
  hit_full = active & (index >= seq.cache_length - 1)  # the new token could not be fed
  reason = jnp.select([hit_stop, hit_max, hit_full],
                      [StopReason.STOP_ID, StopReason.MAX_NEW_TOKENS, StopReason.CACHE_FULL],
                      state.stop_reason)
  seq = SequenceState(cache={**cache, "index": index},
                      pending=jnp.where(active, token, seq.pending), position=seq.position + active)
  return DecodeState(
      seq=seq, step=state.step + 1, done=state.done | hit_stop | hit_max | hit_full,
      tokens=jax.lax.dynamic_update_slice_in_dim(state.tokens, token[:, None], state.step, 1),
      logprobs=jax.lax.dynamic_update_slice_in_dim(state.logprobs, logprob[:, None], state.step,
                                                   1),
      lengths=state.lengths + active, stop_reason=reason.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=_STATIC + ("max_new_tokens",),
                   donate_argnames=("seq",))
def decode(params: Params, seq: SequenceState, row_keys: Array, knobs: SamplingKnobs,
           active: Array, *, config: ModelConfig, mesh: Mesh | None, rules: Rules,
           max_new_tokens: int) -> DecodeState:
  """Samples up to max_new_tokens per row until every row stopped; `seq` is donated.

  Args:
    params: model parameters.
    seq: B rows; each must have a free slot for its pending token (index <= S - 2).
    row_keys: typed PRNG keys [B]; step t of row b uses fold_in(row_keys[b], t).
    knobs: sampling settings.
    active: bool [B]; False rows (batch padding) are done from the start.
    config, mesh, rules: static model and sharding setup.
    max_new_tokens: T.
  """
  batch = seq.batch_size
  params = transformer.unstack_layers(params)  # sliced once, not at every step
  with _sharding_scope(mesh, rules):
    state = DecodeState(
        seq=seq, step=jnp.zeros((), jnp.int32), done=~active,
        tokens=jnp.full((batch, max_new_tokens), knobs.pad_id, jnp.int32),
        logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
        lengths=jnp.zeros((batch,), jnp.int32), stop_reason=jnp.zeros((batch,), jnp.int32))

    def body(state: DecodeState) -> DecodeState:
      state = _decode_step(config, params, row_keys, knobs, state)
      return state.replace(seq=state.seq.replace(
          cache=_constrain_cache(state.seq.cache, mesh, rules)))
    return jax.lax.while_loop(lambda s: ~jnp.all(s.done), body, state)
