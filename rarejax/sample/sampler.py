"""The sampler: batched prompts in; tokens, masks and log-probs out; resumable from its cache.

  sampler = Sampler(config, cache_length=1024, max_batch_size=64)
  out = sampler.generate(params, prompts, max_new_tokens=256, rng=jax.random.key(0),
                         temperature=1.0, top_p=0.95, stop_ids=(eos,), num_samples=8,
                         keep_state=True)
  out.tokens, out.mask, out.logprobs     # [N*8, 256]; rows n*8 .. n*8+7 belong to prompt n
  more = sampler.resume(params, out.state.take(failed_rows), feedback_tokens,
                        max_new_tokens=256, rng=jax.random.key(1))

Output conventions: a row's tokens run up to and including the stop token that ended it; after
it come `pad_id` tokens with mask False and log-prob 0. `lengths` counts the emitted tokens
(stop token included). Log-probs are under the temperature-scaled distribution before
top-k/top-p (rarejax.sample.sampling). Rows are processed in chunks of at most
`max_batch_size` (split, run, concatenate), so a request larger than memory still runs; each
chunk is padded to a bucketed shape to bound recompiles.

Cache slots: a row holds at most `cache_length - 1` tokens (prompt + every turn + sampled
tokens; one slot is scratch), and a row that runs out of slots stops with
StopReason.CACHE_FULL.
"""
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.parallel import rules as rules_lib
from rarejax.sample import batching
from rarejax.sample import loop
from rarejax.sample.state import DecodeState, SamplingKnobs, SequenceState, concatenate_states

Params = Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleOutput:
  """Sampled continuations of N rows (host numpy arrays; T = max_new_tokens).

  Attributes:
    tokens: int32 [N, T], pad_id after the stop token.
    mask: bool [N, T], True for emitted tokens (the stop token included).
    logprobs: float32 [N, T], log-probability of each token; 0 where mask is False.
    lengths: int32 [N], emitted tokens per row (= mask.sum(1)).
    stop_reason: int32 [N], a StopReason per row.
    state: the rows' SequenceState (cache + last token) to resume from; None unless
      keep_state=True was passed.
  """
  tokens: np.ndarray
  mask: np.ndarray
  logprobs: np.ndarray
  lengths: np.ndarray
  stop_reason: np.ndarray
  state: SequenceState | None = None

  def to_lists(self) -> list[list[int]]:
    """The emitted token ids of each row (stop token included, padding dropped)."""
    return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Request:
  """The sampling settings of one generate/resume call."""
  max_new_tokens: int
  temperature: float
  top_k: int
  top_p: float
  stop_ids: np.ndarray  # int32, padded with -1
  keep_state: bool


class Sampler:
  """KV-cache sampler for one model config and cache size (params are passed per call).

  Args:
    config: the model config.
    cache_length: cache slots S per row; a row holds at most S - 1 tokens in total.
    max_batch_size: most rows decoded at once (chunking bound).
    length_buckets: prompt/continuation chunk lengths to pad to; None = powers of two >= 16.
    pad_id: token written after a row stopped (and into padding).
    mesh: optional device mesh; rows are sharded over the mesh axes of 'cache_batch'.
    rules: logical axis rules for the mesh (default rarejax.parallel.rules.SAMPLE_RULES).
  """

  def __init__(self, config: ModelConfig, *, cache_length: int, max_batch_size: int = 64,
               length_buckets: Sequence[int] | None = None, pad_id: int = 0,
               mesh: Mesh | None = None, rules: rules_lib.LogicalRules | None = None):
    if cache_length < 2:
      raise ValueError(f"cache_length={cache_length} must be >= 2 (one slot is scratch).")
    if not 0 <= pad_id < config.vocab_size:
      raise ValueError(f"pad_id={pad_id} is outside the vocabulary [0, {config.vocab_size}).")
    self.config = config
    self.cache_length = cache_length
    self.length_buckets = None if length_buckets is None else tuple(sorted(length_buckets))
    self.pad_id = pad_id
    self.mesh = mesh
    self.rules = None if mesh is None else tuple(rules or rules_lib.SAMPLE_RULES)
    self.batch_shards = self._batch_shards()
    if max_batch_size % self.batch_shards:
      raise ValueError(f"max_batch_size={max_batch_size} must be a multiple of the "
                       f"{self.batch_shards} devices that 'cache_batch' is sharded over.")
    self.max_batch_size = max_batch_size
    self._static = dict(config=config, mesh=mesh, rules=self.rules)

  @property
  def max_tokens_per_row(self) -> int:
    return self.cache_length - 1

  def generate(self, params: Params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
               rng: jax.Array | None = None, num_samples: int = 1, temperature: float = 0.0,
               top_k: int = 0, top_p: float = 1.0, stop_ids: Sequence[int] = (),
               keep_state: bool = False) -> SampleOutput:
    """Samples `num_samples` continuations of each prompt (each prompt is prefilled once).

    Args:
      params: model parameters.
      prompts: N lists of token ids (non-empty, in the vocab, at most cache_length - 1 long).
      max_new_tokens: T, tokens sampled per row at most (a compiled shape).
      rng: a PRNG key (split per row) or N * num_samples keys (one per output row); required
        when temperature > 0.
      num_samples: G rows per prompt; output row n*G + g is sample g of prompt n.
      temperature, top_k, top_p: see rarejax.sample.sampling (traced: no recompiles).
      stop_ids: token ids that end a row (kept as its last token).
      keep_state: return the rows' SequenceState (device memory for N*G caches) for resume.

    Returns:
      SampleOutput with N * num_samples rows.
    """
    prompts = batching.check_token_lists(prompts, self.config.vocab_size, "prompt",
                                         allow_empty=False)
    longest = max(len(p) for p in prompts)
    if longest > self.max_tokens_per_row:
      raise ValueError(f"a prompt has {longest} tokens but the cache holds at most "
                       f"{self.max_tokens_per_row} tokens per row (cache_length="
                       f"{self.cache_length}, one slot is scratch); use a larger cache_length "
                       "or a shorter prompt.")
    if num_samples < 1:
      raise ValueError(f"num_samples={num_samples} must be >= 1.")
    request = self._request(max_new_tokens, temperature, top_k, top_p, stop_ids, keep_state)
    keys = self._keys(rng, len(prompts) * num_samples, temperature)
    params = self._place(params)
    per_chunk = max(1, self.max_batch_size // num_samples)
    results = []
    for start in range(0, len(prompts), per_chunk):
      chunk = prompts[start:start + per_chunk]
      seq = self._prefill(params, chunk, per_chunk)
      if num_samples > 1:
        seq = seq.repeat(num_samples)
      rows = slice(start * num_samples, (start + len(chunk)) * num_samples)
      results += self._decode_rows(params, seq, len(chunk) * num_samples, keys[rows], request)
    return _collect(results, request.keep_state)

  def resume(self, params: Params, state: SequenceState, tokens: Sequence[Sequence[int]], *,
             max_new_tokens: int, rng: jax.Array | None = None, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, stop_ids: Sequence[int] = (),
             keep_state: bool = False) -> SampleOutput:
    """Appends `tokens` (e.g. a feedback turn) to each row of `state` and keeps sampling.

    Row b's new tokens go right after its last token (the stop token, if it stopped on one),
    with positions continuing from it; an empty list just continues the row. `state` itself is
    not modified (rows are copied into chunks). Same sampling arguments as `generate`; `rng` is
    one key or one per row.
    """
    new = batching.check_token_lists(tokens, self.config.vocab_size, "continuation",
                                     allow_empty=True)
    if len(new) != state.batch_size:
      raise ValueError(f"got {len(new)} continuations for a state of {state.batch_size} rows.")
    if state.cache_length != self.cache_length:
      raise ValueError(f"state has cache_length {state.cache_length}, this sampler "
                       f"{self.cache_length}.")
    index = np.asarray(state.cache["index"])
    self._check_room(index, np.array([len(t) for t in new]))
    request = self._request(max_new_tokens, temperature, top_k, top_p, stop_ids, keep_state)
    keys = self._keys(rng, state.batch_size, temperature)
    params = self._place(params)
    results = []
    for start in range(0, state.batch_size, self.max_batch_size):
      rows = np.arange(start, min(start + self.max_batch_size, state.batch_size))
      batch = batching.batch_bucket(len(rows), self.max_batch_size, self.batch_shards)
      seq = state.take(rows).pad_rows(batch)
      seq = self._append(params, seq, [new[r] for r in rows], int(index[rows].max()))
      results.append(self._decode(params, seq, len(rows), keys[rows], request))
    return _collect(results, request.keep_state)

  def _check_room(self, index: np.ndarray, num_new: np.ndarray) -> None:
    """Each row must fit its new tokens plus one sampled token in the cache."""
    used = index + num_new + 1  # cache slots after the pending token of each row is fed
    worst = int(np.argmax(used))
    if used[worst] > self.max_tokens_per_row:
      raise ValueError(
          f"row {worst} holds {int(index[worst]) + 1} tokens and gets {int(num_new[worst])} more, "
          f"leaving no room to sample in a cache of {self.max_tokens_per_row} tokens per row "
          f"(cache_length={self.cache_length}); use a larger cache_length.")

  def _request(self, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
               stop_ids: Sequence[int], keep_state: bool) -> _Request:
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1.")
    if not 0.0 < top_p <= 1.0 or math.isnan(top_p):
      raise ValueError(f"top_p={top_p} must be in (0, 1].")
    return _Request(max_new_tokens=max_new_tokens, temperature=float(temperature),
                    top_k=int(top_k), top_p=float(top_p),
                    stop_ids=batching.check_stop_ids(stop_ids, self.config.vocab_size),
                    keep_state=keep_state)

  def _keys(self, rng: jax.Array | None, rows: int, temperature: float) -> jax.Array:
    if rng is None:
      if temperature > 0:
        raise ValueError("rng is required when temperature > 0 (sampling).")
      rng = jax.random.key(0)
    return batching.row_keys(rng, rows)

  def _batch_shards(self) -> int:
    """Devices the batch axis of the cache is split over."""
    if self.mesh is None:
      return 1
    axes = nn.logical_to_mesh_axes(("cache_batch",), self.rules)[0]
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(self.mesh.shape[a] for a in axes)

  @functools.cached_property
  def _param_shardings(self) -> Any:
    return rules_lib.logical_to_shardings(transformer.param_logical_axes(self.config),
                                          transformer.abstract_params(self.config), self.mesh,
                                          self.rules)

  def _place(self, params: Params) -> Params:
    """Shards params per the rules (no-op without a mesh or when already placed)."""
    return params if self.mesh is None else jax.device_put(params, self._param_shardings)

  def _prefill(self, params: Params, prompts: list[np.ndarray], limit: int) -> SequenceState:
    """New rows for `prompts`, padded to a batch bucket of at most `limit` rows (when possible)."""
    rows = batching.batch_bucket(len(prompts), limit, self.batch_shards)
    length = batching.length_bucket(max(len(p) for p in prompts) - 1, self.length_buckets)
    length = min(length, self.cache_length)
    rest, num_rest = batching.pad_right([p[1:] for p in prompts], rows, length, self.pad_id)
    first = np.full((rows,), self.pad_id, np.int32)
    first[:len(prompts)] = [p[0] for p in prompts]
    return loop.prefill(params, first, rest, num_rest, cache_length=self.cache_length,
                        **self._static)

  def _append(self, params: Params, seq: SequenceState, new: list[np.ndarray],
              max_index: int) -> SequenceState:
    """Writes the new tokens of each row (chunk length bucketed, capped by the free slots)."""
    longest = max(len(t) for t in new)
    if longest == 0:
      return seq
    length = min(batching.length_bucket(longest, self.length_buckets),
                 self.cache_length - max_index)
    if length < longest:
      raise ValueError(
          f"a continuation of {longest} tokens does not fit after the longest row ({max_index} "
          f"slots used) in a cache of {self.cache_length} slots (all rows of a chunk write the "
          "same number of slots); use a larger cache_length or resume long rows separately.")
    tokens, num = batching.pad_right(new, seq.batch_size, length, self.pad_id)
    return loop.append(params, seq, tokens, num, **self._static)

  def _decode_rows(self, params: Params, seq: SequenceState, valid: int, keys: jax.Array,
                   request: _Request) -> list[tuple[DecodeState, int]]:
    """Decodes the first `valid` rows of `seq`, in chunks of at most max_batch_size rows."""
    if seq.batch_size <= self.max_batch_size:
      return [self._decode(params, seq, valid, keys, request)]
    results = []
    for start in range(0, valid, self.max_batch_size):
      rows = np.arange(start, min(start + self.max_batch_size, valid))
      batch = batching.batch_bucket(len(rows), self.max_batch_size, self.batch_shards)
      results.append(self._decode(params, seq.take(rows).pad_rows(batch), len(rows), keys[rows],
                                  request))
    return results

  def _decode(self, params: Params, seq: SequenceState, valid: int, keys: jax.Array,
              request: _Request) -> tuple[DecodeState, int]:
    """Runs the decode loop on one chunk whose first `valid` rows are real."""
    batch = seq.batch_size
    knobs = SamplingKnobs(
        temperature=jnp.full((batch,), request.temperature, jnp.float32),
        top_k=jnp.full((batch,), request.top_k, jnp.int32),
        top_p=jnp.full((batch,), request.top_p, jnp.float32),
        stop_ids=jnp.asarray(request.stop_ids), pad_id=jnp.asarray(self.pad_id, jnp.int32))
    active = jnp.arange(batch) < valid
    state = loop.decode(params, seq, batching.pad_keys(keys, batch), knobs, active,
                        max_new_tokens=request.max_new_tokens, **self._static)
    return state, valid


def _collect(results: list[tuple[DecodeState, int]], keep_state: bool) -> SampleOutput:
  """Concatenates the valid rows of each chunk's final decode state into one SampleOutput."""
  host = jax.device_get([(s.tokens, s.logprobs, s.lengths, s.stop_reason) for s, _ in results])
  tokens, logprobs, lengths, reasons = (
      np.concatenate([h[i][:n] for h, (_, n) in zip(host, results)]) for i in range(4))
  mask = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
  state = None
  if keep_state:
    state = concatenate_states([s.seq if n == s.seq.batch_size else s.seq.take(np.arange(n))
                                for s, n in results])
  return SampleOutput(tokens=tokens, mask=mask, logprobs=logprobs, lengths=lengths,
                      stop_reason=reasons, state=state)
