"""Packed training batches streamed from the token cache (memory-mapped int32 arrays; no TF/seqio).

rarejax.data.token_cache tokenizes each task once (through seqio) into
<data_dir>/token_cache/:

  <task>/<split>/inputs.npy, targets.npy            int32 [tokens]: the examples, concatenated
                                                     (uint16 in a carried copy: rarejax.carry)
  <task>/<split>/inputs_offsets.npy, ...offsets.npy  int64 [N + 1]: example i is [o[i], o[i+1])
  <task>/<split>/meta.json   task, split, examples, tokens, vocabulary fingerprint, bos/pad ids
  <provider>/rates.json      {task: sampling rate}: {task: 1.0} for a Task, a Mixture's tasks
                             with their rates flattened by seqio's rules (sub-mixtures expanded)
  <task>/<split>/soft-<key>/ optional soft first-answer targets (rarejax.data.soft_targets)
  <task>/<split>/hints-<key>/ optional knowledge-ranker hints (rarejax.data.ranker_hints)

meta.json is written last into a temporary folder that is then renamed into place, so a folder
without it is not a cache (never built, or damaged) and is refused here.

The stream (`cached_batches`, the contract of rarejax.data.batches.get_batches): the source
task of each example is drawn with probability ∝ its rate; each task walks this host's share of
its examples (i % num_shards == shard_index) in a fresh permutation every epoch, forever; all
draws derive from the seed, so the same seed gives the same batches. Packing is
rarejax.data.packing.batches. With `soft` settings, the examples of a split that has soft
targets carry them (weighted) into the rows as soft_ids / soft_probs [L, K]. With `hints`
settings, the prompt of each example of a split that has hints ends with them.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
from typing import Iterator, Sequence

import numpy as np

from rarejax.data import packing
from rarejax.data import ranker_hints
from rarejax.data import soft_targets as soft_lib

CACHE_FOLDER = "token_cache"
META = "meta.json"
RATES = "rates.json"
FEATURES = ("inputs", "targets")
DRAW_BLOCK = 4096  # task draws generated at a time (fixed: the stream depends on it)
Batch = dict[str, np.ndarray]


def split_dir(data_dir: str | os.PathLike, task: str, split: str) -> pathlib.Path:
  """<data_dir>/token_cache/<task>/<split>: one task split's arrays and meta.json."""
  return pathlib.Path(data_dir) / CACHE_FOLDER / task / split


def rates_path(data_dir: str | os.PathLike, provider: str) -> pathlib.Path:
  """<data_dir>/token_cache/<provider>/rates.json: the flattened {task: rate} of a Task/Mixture."""
  return pathlib.Path(data_dir) / CACHE_FOLDER / provider / RATES


def read_rates(data_dir: str | os.PathLike, provider: str) -> dict[str, float]:
  """The {task: rate} that token_cache.build_cache recorded for a Task or Mixture."""
  path = rates_path(data_dir, provider)
  if not path.is_file():
    raise FileNotFoundError(f"no token cache for {provider!r}: {path} is missing; build it with "
                            "rarejax.data.token_cache.build_cache")
  return json.loads(path.read_text())


@dataclasses.dataclass(frozen=True)
class CachedSplit:
  """One task split's tokenized examples: token arrays (memory-mapped) and offsets."""
  meta: dict
  tokens: dict[str, np.ndarray]  # feature → int32 [tokens]
  offsets: dict[str, np.ndarray]  # feature → int64 [N + 1]
  soft: soft_lib.SoftSplit | None = None  # soft first-answer targets, weight applied
  hints: ranker_hints.HintSplit | None = None  # appended to each prompt

  def __len__(self) -> int:
    return self.meta["examples"]

  def example(self, i: int) -> packing.Example:
    """(inputs ids, targets ids) of example i, plus its soft target when the split has them;
    the inputs end with the example's ranker hints when the split has them."""
    inputs, targets = (self.tokens[f][self.offsets[f][i]:self.offsets[f][i + 1]]
                       for f in FEATURES)
    if self.hints is not None:
      inputs = np.concatenate([inputs, self.hints.tokens(i)])
    if self.soft is None:
      return inputs, targets
    return inputs, targets, packing.SoftTarget(self.soft.offset, self.soft.ids[i],
                                               self.soft.probs[i])


def open_split(folder: str | os.PathLike, soft: soft_lib.SoftTargets | None = None,
               hints: ranker_hints.RankerHints | None = None) -> CachedSplit:
  """A task split's cache (with its soft targets of the `soft` settings and its ranker hints of
  the `hints` settings, when it has them); refuses a folder without meta.json or with
  inconsistent arrays."""
  folder = pathlib.Path(folder)
  if not (folder / META).is_file():
    raise FileNotFoundError(f"{folder} is not a complete token cache ({META} missing: never "
                            "built, or damaged); delete it and build it again with "
                            "rarejax.data.token_cache.build_cache")
  meta = json.loads((folder / META).read_text())
  tokens = {f: np.asarray(np.load(folder / f"{f}.npy", mmap_mode="r")) for f in FEATURES}
  offsets = {f: np.load(folder / f"{f}_offsets.npy") for f in FEATURES}
  for f in FEATURES:
    if len(offsets[f]) != meta["examples"] + 1 or offsets[f][-1] != len(tokens[f]):
      raise ValueError(f"token cache {folder} is inconsistent: {f} has {len(tokens[f])} tokens "
                       f"and {len(offsets[f])} offsets for {meta['examples']} examples")
  teacher = soft_lib.load(folder, soft) if soft is not None else None
  if teacher is not None and len(teacher.ids) != meta["examples"]:
    raise ValueError(f"soft targets of {folder} hold {len(teacher.ids)} rows for "
                     f"{meta['examples']} examples; delete {soft_lib.folder_of(folder, soft)}")
  if teacher is not None:
    teacher = dataclasses.replace(teacher, probs=teacher.probs * np.float32(soft.weight))
  hinted = ranker_hints.load(folder, hints) if hints is not None else None
  if hinted is not None and len(hinted.ids) != meta["examples"]:
    raise ValueError(f"ranker hints of {folder} hold {len(hinted.ids)} rows for "
                     f"{meta['examples']} examples; delete {ranker_hints.folder_of(folder, hints)}")
  return CachedSplit(meta, tokens, offsets, teacher, hinted)


def host_shard() -> tuple[int, int]:
  """This host's shard: (jax.process_index(), jax.process_count())."""
  import jax  # pylint: disable=g-import-not-at-top  (only where a shard must be derived)
  return jax.process_index(), jax.process_count()


def _rng(seed: int, *key: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def task_draws(rates: Sequence[float], seed: int) -> Iterator[int]:
  """The source task of each example, forever: index k with probability rates[k] / sum."""
  p = np.asarray(rates, np.float64)
  if not len(p) or (p <= 0).any():
    raise ValueError(f"sampling rates must be > 0, got {list(rates)}")
  rng = _rng(seed, 0)
  while True:
    yield from rng.choice(len(p), size=DRAW_BLOCK, p=p / p.sum()).tolist()


def example_order(size: int, seed: int, task_index: int, shard_index: int,
                  num_shards: int) -> Iterator[int]:
  """This host's examples of one task (i % num_shards == shard_index), reshuffled every epoch,
  forever."""
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
  mine = np.arange(shard_index, size, num_shards)
  if not len(mine):
    raise ValueError(f"task {task_index} has {size} examples: none for shard {shard_index} of "
                     f"{num_shards}")
  for epoch in itertools.count():
    yield from _rng(seed, 1, task_index, epoch).permutation(mine).tolist()


def cached_examples(splits: Sequence[CachedSplit], rates: Sequence[float], seed: int,
                    shard_index: int = 0, num_shards: int = 1) -> Iterator[packing.Example]:
  """(inputs, targets) examples of the mixture of `splits`, forever (see module docstring)."""
  orders = [example_order(len(s), seed, k, shard_index, num_shards) for k, s in enumerate(splits)]
  for k in task_draws(rates, seed):
    yield splits[k].example(next(orders[k]))


def _special_ids(splits: Sequence[CachedSplit]) -> tuple[int, int]:
  ids = {(s.meta["bos_id"], s.meta["pad_id"], s.meta["vocabulary"]) for s in splits}
  if len(ids) != 1:
    raise ValueError(f"the cached tasks use different vocabularies: {sorted(ids)}")
  bos_id, pad_id, _ = ids.pop()
  return bos_id, pad_id


def cached_batches(data_dir: str | os.PathLike, provider: str, sequence_length: int,
                   batch_size: int, split: str = "train", seed: int = 0,
                   shard: tuple[int, int] | None = None, pack: bool = True,
                   stats: packing.PackStats | None = None,
                   soft: soft_lib.SoftTargets | None = None,
                   hints: ranker_hints.RankerHints | None = None) -> Iterator[Batch]:
  """Packed batches of this host's share of a cached Task or Mixture, forever.

  Args:
    data_dir: the folder holding token_cache/ (the tasks' data_dir).
    provider: the Task or Mixture name the cache was built for (token_cache.build_cache).
    sequence_length, batch_size: L tokens per row, B rows per batch.
    split: the cached split.
    seed: task draws and per-epoch shuffles (same seed, same batches).
    shard: (shard_index, num_shards); default (jax.process_index(), jax.process_count()).
    pack, stats: as in packing.batches.
    soft: soft-target settings: rows also carry soft_ids / soft_probs [B, L, K], set where an
      example of a split with soft targets (soft_targets.build) has its answer piece.
    hints: ranker-hint settings: the prompts of the splits that have hints (ranker_hints.build)
      end with them.

  Returns:
    an iterator of dicts packing.BATCH_KEYS (+ packing.SOFT_KEYS) → arrays [B, L(, K)]
    (rarejax.data.batches).
  """
  rates = read_rates(data_dir, provider)
  names = sorted(rates)
  splits = [open_split(split_dir(data_dir, name, split), soft, hints) for name in names]
  bos_id, pad_id = _special_ids(splits)
  shard_index, num_shards = shard or host_shard()
  examples = cached_examples(splits, [rates[n] for n in names], seed, shard_index, num_shards)
  return packing.batches(examples, sequence_length, batch_size, pack, bos_id=bos_id,
                         pad_id=pad_id, stats=stats, soft_k=soft.k if soft is not None else 0)
