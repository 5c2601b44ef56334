"""Packing prompt/response examples into fixed-length decoder rows with loss masks (numpy, TF-free).

An example is (prompt ids, response ids): the prompt gets no loss, the response (EOS included)
does; a plain LM example has an empty prompt. Its decoder sequence is s = prompt ++ response,
and a row of length L holds one or more such sequences (segments):

  inputs[i]        BOS at the first position of a segment, else s[i-1]    int32 [L]
  targets[i]       s[i]                                                    int32 [L]
  loss_weights[i]  1.0 where s[i] is a response token, else 0.0           float32 [L]
  segment_ids[i]   1, 2, ... per segment, 0 on padding                     int32 [L]
  positions[i]     index of s[i] within its segment, 0 on padding          int32 [L]

With soft targets (rarejax.data.soft_targets; `soft_k` = K > 0) a row also has

  soft_ids[i]      K vocabulary ids a soft target spreads over at i, else 0   int32 [L, K]
  soft_probs[i]    their (weighted) probabilities, 0 where i has none        float32 [L, K]

set at the target position of the example's answer piece (prompt length + SoftTarget.offset).

Padding carries `pad_id` in inputs/targets. Token ids are never inspected, so id 0 may be a real
token (it is in Qwen's vocabulary) — unlike seqio's TF packing, which treats 0 as padding.
A prompted example longer than L is dropped (a cut prompt or response would teach the wrong
thing); a plain LM example longer than L is split into L-token chunks.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

BATCH_KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions")
SOFT_KEYS = ("soft_ids", "soft_probs")
MAX_CONSECUTIVE_DROPS = 1000  # then every example is too long: fail instead of looping forever


class SoftTarget(NamedTuple):
  """A distribution over K token ids at one response position of an example."""
  offset: int  # index in the response
  ids: np.ndarray  # int32 [K]
  probs: np.ndarray  # float32 [K]


# (prompt ids int32 [P], response ids int32 [R]), optionally followed by a SoftTarget
Example = tuple[np.ndarray, ...]


@dataclasses.dataclass
class PackStats:
  """What the packer did so far."""
  examples: int = 0  # examples received
  dropped: int = 0  # prompted examples longer than the row
  dropped_in_a_row: int = 0  # since the last example that fit
  chunked: int = 0  # LM examples split into several segments
  segments: int = 0  # segments written to rows
  rows: int = 0  # rows emitted
  tokens: int = 0  # non-padding tokens emitted


def segments_of(prompt: np.ndarray, response: np.ndarray, length: int,
                stats: PackStats, soft: SoftTarget | None = None) -> list[Example]:
  """The example as ≤ length segments: itself, its LM chunks, or nothing (dropped)."""
  stats.examples += 1
  total = len(prompt) + len(response)
  if total <= length or not len(prompt):
    stats.dropped_in_a_row = 0
  if total <= length:
    return [(prompt, response) if soft is None else (prompt, response, soft)]
  if len(prompt):
    stats.dropped += 1
    stats.dropped_in_a_row += 1
    if stats.dropped == 1:
      logging.warning("dropping prompt+response examples longer than the sequence length %d "
                      "(first one: %d + %d tokens); raise the length or shorten the notes",
                      length, len(prompt), len(response))
    if stats.dropped_in_a_row >= MAX_CONSECUTIVE_DROPS:
      raise ValueError(f"{stats.dropped_in_a_row} examples in a row are longer than the sequence "
                       f"length {length} (last: {len(prompt)} prompt + {len(response)} response "
                       "tokens); raise sequence_length")
    return []
  stats.chunked += 1
  return [(prompt[:0], response[i:i + length]) for i in range(0, len(response), length)]


def make_row(segments: Sequence[Example], length: int, bos_id: int,
             pad_id: int, soft_k: int = 0) -> dict[str, np.ndarray]:
  """One packed row (see module docstring) from segments whose total length is ≤ length."""
  row = {"inputs": np.full(length, pad_id, np.int32), "targets": np.full(length, pad_id, np.int32),
         "loss_weights": np.zeros(length, np.float32), "segment_ids": np.zeros(length, np.int32),
         "positions": np.zeros(length, np.int32)}
  if soft_k:
    row["soft_ids"] = np.zeros((length, soft_k), np.int32)
    row["soft_probs"] = np.zeros((length, soft_k), np.float32)
  start = 0
  for number, (prompt, response, *soft) in enumerate(segments, 1):
    sequence = np.concatenate([prompt, response]).astype(np.int32)
    end = start + len(sequence)
    row["targets"][start:end] = sequence
    row["inputs"][start] = bos_id
    row["inputs"][start + 1:end] = sequence[:-1]
    row["loss_weights"][start + len(prompt):end] = 1.0
    row["segment_ids"][start:end] = number
    row["positions"][start:end] = np.arange(len(sequence))
    if soft and soft_k and soft[0].offset < len(response):
      at = start + len(prompt) + soft[0].offset
      row["soft_ids"][at], row["soft_probs"][at] = soft[0].ids, soft[0].probs
    start = end
  return row


class RowPacker:
  """First-fit packing into up to `open_rows` partially filled rows.

  A segment goes to the first open row with room; when none has room and all slots are taken,
  the fullest row is closed to make space. Rows close as soon as they are exactly full.
  With open_rows=0 every segment gets its own row (no packing).
  """

  def __init__(self, length: int, open_rows: int):
    if length < 2:
      raise ValueError(f"sequence length must be >= 2, got {length}")
    self.length = length
    self.open_rows = open_rows
    self._rows: list[list[Example]] = []
    self._used: list[int] = []

  def add(self, segment: Example) -> list[list[Example]]:
    """Places one segment (≤ length tokens); returns the rows this closed."""
    size = len(segment[0]) + len(segment[1])
    if self.open_rows == 0:
      return [[segment]]
    closed = []
    slot = next((i for i, used in enumerate(self._used) if used + size <= self.length), None)
    if slot is None:
      if len(self._rows) >= self.open_rows:
        fullest = int(np.argmax(self._used))
        closed.append(self._rows.pop(fullest))
        self._used.pop(fullest)
      self._rows.append([])
      self._used.append(0)
      slot = len(self._rows) - 1
    self._rows[slot].append(segment)
    self._used[slot] += size
    if self._used[slot] == self.length:
      closed.append(self._rows.pop(slot))
      self._used.pop(slot)
    return closed

  def flush(self) -> list[list[Example]]:
    """Closes and returns every open row."""
    rows, self._rows, self._used = self._rows, [], []
    return rows


def batches(examples: Iterable[Example], length: int, batch_size: int, pack: bool = True,
            bos_id: int = 0, pad_id: int = 0, open_rows: int | None = None,
            stats: PackStats | None = None, soft_k: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Packs (prompt, response) examples into batches of [batch_size, length] arrays.

  When the examples run out, open rows are flushed and the last batch is filled up with empty
  rows (segment id 0, no loss), so every batch has the same shape.

  Args:
    examples: (prompt ids, response ids) pairs, each optionally followed by a SoftTarget; the
      response should end with EOS.
    length: tokens per row (L).
    batch_size: rows per batch (B).
    pack: several examples per row; False gives one example per row.
    bos_id: decoder input at the start of each segment.
    pad_id: token written into padding.
    open_rows: rows kept open for first-fit packing (default: batch_size).
    stats: updated in place with counts, when given.
    soft_k: K > 0 gives every row soft_ids / soft_probs [L, K] (SOFT_KEYS) from the examples'
      soft targets (all zero where an example has none).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  stats = stats if stats is not None else PackStats()
  packer = RowPacker(length, (batch_size if open_rows is None else open_rows) if pack else 0)
  ready: list[dict[str, np.ndarray]] = []

  def close(rows: list[list[Example]]) -> None:
    for segments in rows:
      row = make_row(segments, length, bos_id, pad_id, soft_k)
      stats.rows += 1
      stats.segments += len(segments)
      stats.tokens += int(np.count_nonzero(row["segment_ids"]))
      ready.append(row)

  for prompt, response, *soft in examples:
    for segment in segments_of(np.asarray(prompt, np.int32), np.asarray(response, np.int32),
                               length, stats, soft[0] if soft else None):
      close(packer.add(segment))
    while len(ready) >= batch_size:
      yield stack_rows(ready[:batch_size])
      del ready[:batch_size]
  close(packer.flush())
  while ready:
    rows = ready[:batch_size]
    del ready[:batch_size]
    rows += [make_row([], length, bos_id, pad_id, soft_k)] * (batch_size - len(rows))
    yield stack_rows(rows)


def stack_rows(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Rows → one batch dict of [B, L(, K)] arrays."""
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def unpack(batch: dict[str, np.ndarray]) -> list[Example]:
  """The (prompt, response) segments of a batch, row by row, in order (inverse of packing)."""
  out = []
  for b in range(batch["targets"].shape[0]):
    segment_ids = batch["segment_ids"][b]
    for number in range(1, int(segment_ids.max(initial=0)) + 1):
      where = segment_ids == number
      tokens = batch["targets"][b][where]
      loss = batch["loss_weights"][b][where] > 0
      out.append((tokens[~loss], tokens[loss]))
  return out
