"""Packing of prompt/response examples into decoder rows (numpy only, no TensorFlow)."""
import collections
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rarejax.data import packing

BOS, PAD = 3, 0


def _key(prompt, response):
  return (tuple(int(t) for t in prompt), tuple(int(t) for t in response))


def _random_examples(rng, n, max_prompt=20, max_response=20):
  return [(rng.integers(0, 50, rng.integers(0, max_prompt + 1)),
           rng.integers(0, 50, rng.integers(1, max_response + 1))) for _ in range(n)]


def test_row_layout_and_loss_mask_cover_exactly_the_response():
  row = packing.make_row([([7, 8], [9, 1]), ([], [5, 1])], length=8, bos_id=BOS, pad_id=PAD)
  np.testing.assert_array_equal(row["targets"], [7, 8, 9, 1, 5, 1, PAD, PAD])
  np.testing.assert_array_equal(row["inputs"], [BOS, 7, 8, 9, BOS, 5, PAD, PAD])
  np.testing.assert_array_equal(row["loss_weights"], [0, 0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 2, 2, 0, 0])
  np.testing.assert_array_equal(row["positions"], [0, 1, 2, 3, 0, 1, 0, 0])
  assert row["loss_weights"].dtype == np.float32 and row["targets"].dtype == np.int32


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), batch_size=st.integers(1, 4), pack=st.booleans())
def test_packing_preserves_every_token(seed, batch_size, pack):
  rng = np.random.default_rng(seed)
  examples = _random_examples(rng, int(rng.integers(1, 30)))
  out = list(packing.batches(examples, length=48, batch_size=batch_size, pack=pack, bos_id=BOS))
  assert all(b["targets"].shape == (batch_size, 48) for b in out)
  unpacked = [seg for batch in out for seg in packing.unpack(batch)]
  assert collections.Counter(_key(*s) for s in unpacked) == collections.Counter(
      _key(*e) for e in examples)
  for batch in out:  # loss exactly on response tokens, inputs are BOS-shifted targets
    starts = batch["positions"] == 0
    live = batch["segment_ids"] > 0
    assert np.all(batch["inputs"][starts & live] == BOS)
    assert np.all(batch["inputs"][:, 1:][~starts[:, 1:] & live[:, 1:]]
                  == batch["targets"][:, :-1][~starts[:, 1:] & live[:, 1:]])
    assert batch["loss_weights"][~live].sum() == 0


def test_packing_fills_rows_and_unpacked_gives_one_example_per_row():
  examples = [([1] * 5, [2] * 5)] * 8  # 10 tokens each
  packed = list(packing.batches(examples, length=20, batch_size=2, pack=True))
  padded = list(packing.batches(examples, length=20, batch_size=2, pack=False))
  assert sum(int(b["segment_ids"].max(axis=1).astype(bool).sum()) for b in packed) == 4
  assert len(padded) == 4 and all(b["segment_ids"].max() == 1 for b in padded)


def test_token_id_zero_is_a_real_token():
  examples = [([0, 0, 5], [0, 6, 0])]  # id 0 is '!' in Qwen's vocabulary
  (batch,) = packing.batches(examples, length=8, batch_size=1, pad_id=PAD)
  assert [_key(*s) for s in packing.unpack(batch)] == [_key(*examples[0])]
  np.testing.assert_array_equal(batch["segment_ids"][0], [1] * 6 + [0] * 2)


def test_long_plain_text_is_chunked_and_long_prompted_example_dropped():
  stats = packing.PackStats()
  examples = [([], list(range(1, 26))), ([1] * 10, [2] * 10), ([1], [2])]
  out = list(packing.batches(examples, length=10, batch_size=2, stats=stats))
  segments = [seg for b in out for seg in packing.unpack(b)]
  lm = sorted(t for prompt, response in segments if not len(prompt) for t in response.tolist())
  assert lm == list(range(1, 26)) and stats.chunked == 1
  assert stats.dropped == 1 and _key([1], [2]) in {_key(*s) for s in segments}


def test_all_examples_too_long_raises_instead_of_looping():
  def endless():
    while True:
      yield [1] * 30, [2] * 30
  with pytest.raises(ValueError, match="longer than the sequence length 16"):
    next(packing.batches(endless(), length=16, batch_size=1))


def test_tf_free_modules_do_not_import_tensorflow():
  code = ("import sys; import rarejax.data, rarejax.data.format, rarejax.data.packing, "
          "rarejax.data.corpus, rarejax.data.targets, rarejax.data.trajectory; "
          "print('tensorflow' in sys.modules, 'seqio' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["False", "False"]
