"""The token cache: tokenized once through seqio, streamed as packed batches without TF."""
import collections
import itertools
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rarejax.train import pipeline_stage as train_stages
from rarejax.data import batches, cached_batches, packing, tasks, token_cache

import seqio  # pylint: disable=g-bad-import-order  (after rarejax.data hid the GPUs from TF)
from tests.data import test_tasks  # pylint: disable=g-bad-import-order  (shared fixture)
from tests.paths import ROOT

ALL = seqio.ShardInfo(index=0, num_shards=1)
data = test_tasks.data  # the tiny prepared datasets (module fixture)


def _key(prompt, response):
  return tuple(np.asarray(prompt).tolist()), tuple(np.asarray(response).tolist())


def _seqio_examples(task):
  """One unshuffled epoch of the live pipeline, one example per row, unpacked."""
  out = batches.get_batches(task, 2048, 2, "train", ALL, pack=False, num_epochs=1, shuffle=False)
  return collections.Counter(_key(*s) for batch in out for s in packing.unpack(batch))


def _batches(prepared, provider, n, seed=0, start=0):
  stream = cached_batches.cached_batches(prepared.data_dir, provider, 256, 2, seed=seed,
                                         shard=(0, 1))
  return list(itertools.islice(stream, start, n))


@pytest.mark.parametrize("role", ["knowledge_lm", "knowledge_qa", "diagnosis"])
def test_cache_holds_exactly_the_seqio_examples(data, role):
  prepared, names = data
  task = seqio.get_mixture_or_task(names[role])
  split = cached_batches.open_split(token_cache.build_task_cache(task, prepared.data_dir))
  cached = collections.Counter(_key(*split.example(i)) for i in range(len(split)))
  assert cached == _seqio_examples(names[role])
  assert split.meta["examples"] == sum(cached.values())
  assert split.tokens["targets"].dtype == np.int32


def test_mixture_rates_are_seqios_flattened_rates(data):
  prepared, names = data
  mixture = seqio.get_mixture_or_task(names["sft_mixture"])
  provider = token_cache.build_cache(names["sft_mixture"], prepared.data_dir)
  recorded = cached_batches.read_rates(prepared.data_dir, provider)
  assert recorded == {t.name: mixture.get_rate(t) for t in mixture.tasks}
  nested = tasks.register_mixture({names["sft_mixture"]: 2.0, names["knowledge_lm"]: 1.0})
  flat = token_cache.flat_rates(seqio.get_mixture_or_task(nested))
  assert flat[names["knowledge_lm"]] == 1.0
  assert sum(flat.values()) == pytest.approx(3.0)
  total = sum(recorded.values())
  for name, rate in recorded.items():  # the sub-mixture's rate shared by its own rates
    assert flat[name] == pytest.approx(2.0 * rate / total)


def test_task_draws_follow_the_rates():
  rates = [1.0, 3.0, 1.5]
  draws = np.fromiter(itertools.islice(cached_batches.task_draws(rates, seed=0), 40_000), int)
  np.testing.assert_allclose(np.bincount(draws) / len(draws), np.array(rates) / sum(rates),
                             atol=0.01)


def test_shards_partition_each_epoch_and_epochs_reshuffle():
  size, seed = 11, 4
  orders = [list(itertools.islice(cached_batches.example_order(size, seed, 0, i, 2), 12))
            for i in range(2)]
  assert sorted(orders[0][:6] + orders[1][:5]) == list(range(size))
  assert sorted(orders[0][6:12]) == sorted(orders[0][:6])  # epoch 2: the same share...
  assert orders[0][6:12] != orders[0][:6]  # ...in a new order
  with pytest.raises(ValueError, match="none for shard"):
    next(cached_batches.example_order(1, seed, 0, 1, 2))


def test_same_seed_same_batches_different_seed_different(data):
  prepared, names = data
  provider = token_cache.build_cache(names["sft_mixture"], prepared.data_dir)
  first, again, other = (_batches(prepared, provider, 3, seed) for seed in (0, 0, 1))
  for a, b in zip(first, again):
    for key in packing.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  assert any((a["targets"] != c["targets"]).any() for a, c in zip(first, other))


def test_batches_from_a_step_continue_the_fresh_run(data):
  prepared, names = data
  batches_from = train_stages._batches_for(names, prepared.data_dir,
                                     {"knowledge_qa": 1.0, "diagnosis": 2.0}, 256, 2, seed=3)
  fresh = list(itertools.islice(batches_from(0), 7))
  resumed = list(itertools.islice(batches_from(4), 3))
  for a, b in zip(fresh[4:], resumed, strict=True):
    for key in packing.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])


def test_reader_streams_without_tensorflow_or_seqio(data):
  prepared, names = data
  provider = token_cache.build_cache(names["sft_mixture"], prepared.data_dir)
  code = ("import sys\n"
          "from rarejax.data import cached_batches\n"
          f"batch = next(cached_batches.cached_batches({str(prepared.data_dir)!r}, {provider!r}, "
          "256, 2, shard=(0, 1)))\n"
          "assert batch['loss_weights'].sum() > 0\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'seqio')))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
  assert result.stdout.strip() == "[]"


def test_damaged_cache_is_refused_by_the_reader_and_rebuilt_by_the_writer(data, tmp_path):
  prepared, names = data
  task = seqio.get_mixture_or_task(names["diagnosis"])
  built = token_cache.build_task_cache(task, prepared.data_dir)
  copy = tmp_path / "copy"
  shutil.copytree(built, copy)
  (copy / cached_batches.META).unlink()
  with pytest.raises(FileNotFoundError, match=str(copy)):
    cached_batches.open_split(copy)
  expected = cached_batches.open_split(built).tokens["targets"].copy()
  (built / cached_batches.META).unlink()
  assert token_cache.build_task_cache(task, prepared.data_dir) == built
  np.testing.assert_array_equal(cached_batches.open_split(built).tokens["targets"], expected)
  with pytest.raises(FileNotFoundError, match="build_cache"):
    cached_batches.read_rates(prepared.data_dir, "rarejax_never_built")
