"""The live seqio pipeline: packed numpy batches and plain example iterators (RL, evaluation).

Training stages read batches of the same contract from the token cache (rarejax.data.cached_batches,
built by rarejax.data.token_cache), unless `train_batches.input_pipeline = 'seqio'`.

`get_batches` reads a registered Task or Mixture through seqio (sharded per host, shuffled with
a seed), tokenizes, and packs prompt/response pairs into [B, L] numpy batches with the keys of
rarejax.train (see rarejax.data.packing):

  inputs        int32 [B, L]   decoder input tokens (BOS-shifted)
  targets       int32 [B, L]   next-token targets
  loss_weights  float32 [B, L] 1 on response ("targets") tokens, 0 on prompts and padding
  segment_ids   int32 [B, L]   1.. per packed example, 0 on padding
  positions     int32 [B, L]   position within the example
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from rarejax import tokenizer as tokenizer_lib
from rarejax.data import builders
from rarejax.data import packing
from rarejax.data.tf_setup import tf

import seqio  # pylint: disable=g-bad-import-order  (after tf_setup hid the accelerators)

Provider = str | seqio.Task | seqio.Mixture


def host_shard() -> seqio.ShardInfo:
  """This host's shard: (jax.process_index(), jax.process_count())."""
  import jax  # pylint: disable=g-import-not-at-top  (only where a shard must be derived)
  return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())


def provider_of(task_or_mixture: Provider) -> seqio.Task | seqio.Mixture:
  """The registered Task/Mixture of a name (or the object itself)."""
  if isinstance(task_or_mixture, str):
    return seqio.get_mixture_or_task(task_or_mixture)
  return task_or_mixture


def _dataset(provider: seqio.Task | seqio.Mixture, split: str, shuffle: bool, seed: int | None,
             shard_info: seqio.ShardInfo | None, num_epochs: int | None) -> tf.data.Dataset:
  kwargs = dict(sequence_length=None, split=split, shuffle=shuffle, seed=seed,
                shard_info=shard_info or host_shard(), num_epochs=num_epochs,
                trim_output_features=False)
  if isinstance(provider, seqio.Mixture):
    kwargs["log_mixing_proportions"] = False
  return provider.get_dataset(**kwargs)


def get_batches(task_or_mixture: Provider, sequence_length: int, batch_size: int,
                split: str = "train", shard_info: seqio.ShardInfo | None = None, seed: int = 0,
                pack: bool = True, num_epochs: int | None = None, shuffle: bool = True,
                stats: packing.PackStats | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Packed (or padded) batches of this host's share of a Task or Mixture.

  Args:
    task_or_mixture: a registered name or a seqio Task/Mixture (rarejax.data.tasks).
    sequence_length: L, tokens per row.
    batch_size: B, rows per batch on this host.
    split: 'train' or 'validation'.
    shard_info: this host's shard; default (jax.process_index(), jax.process_count()).
    seed: shuffling and mixing seed (same seed, same batches).
    pack: several examples per row (True) or one example per row.
    num_epochs: passes over the data; None repeats forever.
    shuffle: shuffle examples (files and a buffer).
    stats: a PackStats updated in place (dropped/chunked examples, tokens, rows).

  Yields:
    dicts with packing.BATCH_KEYS → arrays [B, L] (see module docstring).
  """
  provider = provider_of(task_or_mixture)
  vocabulary = provider.output_features["targets"].vocabulary
  dataset = _dataset(provider, split, shuffle, seed, shard_info, num_epochs)
  dataset = dataset.map(lambda ex: (ex["inputs"], ex["targets"]),
                        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  yield from packing.batches(dataset.as_numpy_iterator(), sequence_length, batch_size, pack,
                             bos_id=tokenizer_lib.bos_id(vocabulary), pad_id=vocabulary.pad_id,
                             stats=stats)


def get_examples(task_or_mixture: Provider, split: str = "validation",
                 shard_info: seqio.ShardInfo | None = None, seed: int = 0, shuffle: bool = False,
                 num_epochs: int | None = 1) -> Iterator[dict[str, Any]]:
  """Tokenized examples as Python values (text → str, id lists → int32 arrays): prompts for RL
  rollouts and evaluation (inputs, inputs_pretokenized, case_id, gold_ids, task, tier)."""
  dataset = _dataset(provider_of(task_or_mixture), split, shuffle, seed, shard_info, num_epochs)
  for example in dataset.as_numpy_iterator():
    yield {key: builders.to_python(value) for key, value in example.items()}
