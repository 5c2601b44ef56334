"""Tokenizes a seqio Task or Mixture once into the token cache that data.cached_batches reads.

Each task split goes through seqio exactly as the live pipeline does (the task's preprocessors,
tokenize, append_eos; untrimmed, unshuffled, one epoch, one shard) and is written as flat int32
arrays plus offsets and a meta.json (layout: rarejax.data.cached_batches). A task's name carries
its config hash, knowledge digest and vocabulary hash, so the name is the cache key: a cache
that exists is reused, never updated. Writes go to a temporary folder renamed into place, so a
reader sees a whole cache or none.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import tempfile

import numpy as np

from rarejax import atomic_io
from rarejax import tokenizer as tokenizer_lib
from rarejax.data import batches
from rarejax.data import cached_batches
from rarejax.data import vocab as vocab_lib
from rarejax.data.tf_setup import tf  # pylint: disable=unused-import  (before seqio: hides GPUs)

import seqio  # pylint: disable=g-bad-import-order  (after tf_setup hid the accelerators)


def flat_rates(provider: seqio.Task | seqio.Mixture) -> dict[str, float]:
  """{task name: sampling rate}: {name: 1.0} for a Task; a Mixture's tasks (sub-mixtures
  expanded) at the rates seqio samples them with (Mixture.get_rate), rate-0 tasks left out."""
  if isinstance(provider, seqio.Task):
    return {provider.name: 1.0}
  rates = {task.name: float(provider.get_rate(task)) for task in provider.tasks}
  return {name: rate for name, rate in rates.items() if rate > 0}


def build_cache(task_or_mixture: batches.Provider, data_dir: str | os.PathLike,
                split: str = "train") -> str:
  """Builds the caches of every task of a Task or Mixture that lack one, and records its rates;
  returns the provider's name (for cached_batches.cached_batches)."""
  provider = batches.provider_of(task_or_mixture)
  rates = flat_rates(provider)
  for name in rates:
    build_task_cache(seqio.get_mixture_or_task(name), data_dir, split)
  path = cached_batches.rates_path(data_dir, provider.name)
  if not path.is_file():
    atomic_io.write_atomic(path, json.dumps(rates, indent=1, sort_keys=True))
  return provider.name


def build_task_cache(task: seqio.Task, data_dir: str | os.PathLike,
                     split: str = "train") -> pathlib.Path:
  """The cache folder of one task split, tokenized and written unless it exists already."""
  folder = cached_batches.split_dir(data_dir, task.name, split)
  if (folder / cached_batches.META).is_file():
    return folder
  if folder.exists():
    logging.warning("token cache %s has no %s (damaged): building it again", folder,
                    cached_batches.META)
    shutil.rmtree(folder)
  folder.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{split}.", suffix=".tmp"))
  try:
    meta = _write_arrays(task, split, tmp)
    (tmp / cached_batches.META).write_text(json.dumps(meta, indent=1))
    _rename_into_place(tmp, folder)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("token cache %s: %d examples, %s tokens", folder, meta["examples"],
               meta["tokens"])
  return folder


def _rename_into_place(tmp: pathlib.Path, folder: pathlib.Path) -> None:
  """Renames tmp to folder; another process's complete cache at folder wins."""
  try:
    os.rename(tmp, folder)
  except OSError:
    if not (folder / cached_batches.META).is_file():
      raise


def _write_arrays(task: seqio.Task, split: str, folder: pathlib.Path) -> dict:
  """Writes the token and offset arrays of one epoch of the task split; returns its meta."""
  dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, seed=None,
                             shard_info=seqio.ShardInfo(index=0, num_shards=1), num_epochs=1,
                             trim_output_features=False)
  pieces: dict[str, list[np.ndarray]] = {f: [] for f in cached_batches.FEATURES}
  for example in dataset.as_numpy_iterator():
    for f in cached_batches.FEATURES:
      pieces[f].append(np.asarray(example[f], np.int32))
  if not pieces["targets"]:
    raise ValueError(f"task {task.name} has no {split!r} examples to cache")
  for f, arrays in pieces.items():
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    np.save(folder / f"{f}.npy", np.concatenate(arrays))
    np.save(folder / f"{f}_offsets.npy", offsets)
  vocabulary = task.output_features["targets"].vocabulary
  return {"task": task.name, "split": split, "examples": len(pieces["targets"]),
          "tokens": {f: int(sum(len(a) for a in arrays)) for f, arrays in pieces.items()},
          "vocabulary": vocab_lib.fingerprint(vocabulary),
          "bos_id": int(tokenizer_lib.bos_id(vocabulary)), "pad_id": int(vocabulary.pad_id)}
