"""Host side of the sampler: input checks, length and batch buckets, right padding, row keys.

Shapes are bucketed so a stream of requests compiles a handful of programs: prompt chunks are
right-padded to a length bucket (default: powers of two from 16), batches to a power of two
(capped by the chunk limit, rounded up to a multiple of the data-parallel shards).
"""
from collections.abc import Sequence

import jax
import numpy as np

MIN_LENGTH_BUCKET = 16
MIN_STOP_SLOTS = 4  # up to 4 stop ids share one compiled shape


def _next_power_of_two(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def check_token_lists(seqs: Sequence[Sequence[int]], vocab_size: int, what: str,
                      allow_empty: bool) -> list[np.ndarray]:
  """Validates lists of token ids and returns them as int32 arrays.

  Args:
    seqs: one list of token ids per row.
    vocab_size: ids must lie in [0, vocab_size).
    what: name used in error messages ("prompt", "continuation").
    allow_empty: whether a row may have no tokens.

  Raises:
    ValueError: on an empty batch, an empty row (unless allowed) or an id outside the vocab.
  """
  if isinstance(seqs, (str, bytes)) or not len(seqs):
    raise ValueError(f"expected a non-empty list of {what}s (lists of token ids), got {seqs!r}.")
  arrays = []
  for i, seq in enumerate(seqs):
    if isinstance(seq, (str, bytes)):
      raise ValueError(f"{what} {i} is a string; tokenize it first (lists of token ids).")
    array = np.asarray(seq, dtype=np.int64).reshape(-1)
    if not allow_empty and array.size == 0:
      raise ValueError(f"{what} {i} is empty; every {what} needs at least one token "
                       "(e.g. a BOS id).")
    bad = array[(array < 0) | (array >= vocab_size)]
    if bad.size:
      raise ValueError(f"{what} {i} has token id {int(bad[0])} outside the vocabulary "
                       f"[0, {vocab_size}).")
    arrays.append(array.astype(np.int32))
  return arrays


def check_stop_ids(stop_ids: Sequence[int], vocab_size: int) -> np.ndarray:
  """Returns stop ids as int32, padded with -1 to a power-of-two length (>= MIN_STOP_SLOTS)."""
  ids = np.asarray(list(stop_ids), dtype=np.int64).reshape(-1)
  bad = ids[(ids < 0) | (ids >= vocab_size)]
  if bad.size:
    raise ValueError(f"stop id {int(bad[0])} is outside the vocabulary [0, {vocab_size}).")
  padded = np.full(_next_power_of_two(max(len(ids), MIN_STOP_SLOTS)), -1, np.int32)
  padded[:len(ids)] = ids
  return padded


def length_bucket(length: int, buckets: Sequence[int] | None) -> int:
  """Smallest bucket >= length (0 stays 0); default buckets are powers of two >= 16.

  With explicit buckets, a length above the largest one is used as is.
  """
  if length == 0:
    return 0
  if buckets is None:
    return max(MIN_LENGTH_BUCKET, _next_power_of_two(length))
  return min((b for b in buckets if b >= length), default=length)


def batch_bucket(rows: int, limit: int, multiple: int) -> int:
  """Padded batch size for `rows` rows: a power of two, at most `limit`, times of `multiple`."""
  size = min(_next_power_of_two(rows), max(limit, rows))
  return -(-size // multiple) * multiple


def pad_right(seqs: Sequence[np.ndarray], rows: int, length: int,
              pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token arrays into int32 [rows, length]; returns it and the lengths int32 [rows]."""
  tokens = np.full((rows, length), pad_id, np.int32)
  lengths = np.zeros((rows,), np.int32)
  for i, seq in enumerate(seqs):
    tokens[i, :len(seq)] = seq
    lengths[i] = len(seq)
  return tokens, lengths


def row_keys(rng: jax.Array, rows: int) -> jax.Array:
  """Typed PRNG keys [rows]: `rng` split `rows` ways, or `rng` itself when it already is [rows]."""
  if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  if rng.ndim == 0:
    return jax.random.split(rng, rows)
  if rng.shape != (rows,):
    raise ValueError(f"rng has shape {rng.shape}; pass one key or one key per sampled row "
                     f"({rows},).")
  return rng


def pad_keys(keys: jax.Array, rows: int) -> jax.Array:
  """Extends keys [n] to [rows] by repeating the first key (for padding rows)."""
  extra = rows - keys.shape[0]
  if extra == 0:
    return keys
  return jax.numpy.concatenate([keys, jax.numpy.repeat(keys[:1], extra)])
