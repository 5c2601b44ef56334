"""Vocabularies as seqio.Vocabulary: SentencePiece trained on our corpus, and pretrained tokenizers.

Our SentencePiece model (seqio's conventions): pad=0, eos=1, unk=2, bos=3; the format tags
(<think> </think> <answer> </answer>) and the newline are user-defined symbols, one piece each;
byte fallback, identity normalization, no dummy prefix and no whitespace folding, so decoding
gives back exactly the text that was encoded (accents, CJK, newlines and all); digits are split.
Training is deterministic: one thread, fixed seed, sentences in the given order, all of them.

Pretrained models: a SentencePiece `.model` file loads as seqio.SentencePieceVocabulary; a
Hugging Face `tokenizer.json` (Qwen/Llama-3 families) loads as `HfTokenizerVocabulary`, which
runs rarejax.tokenizer.HfTokenizer in TF through tf.py_function.

Inference loads the same files without TensorFlow or seqio (rarejax.tokenizer, same ids and
text). The decoder input starts every sequence with `rarejax.tokenizer.bos_id(vocabulary)`;
sample from `[bos_id(vocab)] + vocab.encode(prompt)`.
"""
from __future__ import annotations

import hashlib
import io
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from rarejax import tokenizer as tokenizer_lib
from rarejax.data import format as format_lib
from rarejax.data.tf_setup import tf

import seqio  # pylint: disable=g-bad-import-order  (after tf_setup hid the accelerators)

PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, 3
SPECIAL_SYMBOLS = (*format_lib.TAGS, "\n")


def train_sentencepiece(texts: Iterable[str], model_path: str | os.PathLike,
                        vocab_size: int = 8192, model_type: str = "unigram",
                        character_coverage: float = 0.9995, seed: int = 0,
                        extra_symbols: Sequence[str] = ()) -> pathlib.Path:
  """Trains a SentencePiece model on `texts` (one sentence per line) and writes it atomically.

  `vocab_size` is a soft limit: a small corpus yields a smaller vocabulary instead of an error.
  Returns the model path.
  """
  lines = [line for text in texts for line in text.split("\n") if line.strip()]
  if not lines:
    raise ValueError(f"no training text for the SentencePiece model {model_path}")
  spm.set_random_generator_seed(seed)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, character_coverage=character_coverage,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=BOS_ID,
      user_defined_symbols=list(dict.fromkeys((*SPECIAL_SYMBOLS, *extra_symbols))),
      byte_fallback=True, split_digits=True, normalization_rule_name="identity",
      add_dummy_prefix=False, remove_extra_whitespaces=False, hard_vocab_limit=False,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      max_sentence_length=1 << 16, minloglevel=2)
  path = pathlib.Path(model_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_bytes(model.getvalue())
  os.replace(tmp, path)
  return path


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face tokenizer.json (rarejax.tokenizer.HfTokenizer: its ids, special tokens and
  Python side) as a seqio Vocabulary."""

  def __init__(self, tokenizer_file: str | os.PathLike, **special_tokens: str | None):
    self.tokenizer = tokenizer_lib.HfTokenizer(tokenizer_file, **special_tokens)
    super().__init__(extra_ids=0)

  @property
  def bos_id(self) -> int:
    return self.tokenizer.bos_id

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id

  @property
  def pad_id(self) -> int:
    return self.tokenizer.pad_id

  @property
  def unk_id(self) -> int | None:
    return self.tokenizer.unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def _encode(self, s: str) -> list[int]:
    return self.tokenizer.encode(s)

  def _decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(ids)  # seqio already cut at EOS and mapped UNK: the same again

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = tf.py_function(lambda t: np.asarray(self._encode(t.numpy().decode("utf-8")), np.int32),
                         [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(batch):
      rows = batch.numpy()
      texts = [self._decode(row).encode("utf-8") for row in rows.reshape(-1, rows.shape[-1])]
      return np.asarray(texts, object).reshape(rows.shape[:-1])
    text = tf.py_function(decode, [ids], tf.string)
    text.set_shape(ids.shape[:-1])
    return text

  def __eq__(self, other) -> bool:
    return (isinstance(other, HfTokenizerVocabulary)
            and other.tokenizer.fingerprint == self.tokenizer.fingerprint)

  def __hash__(self) -> int:
    return hash(self.tokenizer.fingerprint)


def load_vocabulary(path: str | os.PathLike, **special_tokens) -> seqio.Vocabulary:
  """A SentencePiece `.model` file, or a tokenizer.json (or its folder), as a seqio Vocabulary
  (for training and the data pipeline; inference uses rarejax.tokenizer.load_tokenizer)."""
  path = tokenizer_lib.tokenizer_path(path)
  if tokenizer_lib.is_sentencepiece(path):
    return seqio.SentencePieceVocabulary(str(path))
  return HfTokenizerVocabulary(path, **special_tokens)


def fingerprint(vocabulary: seqio.Vocabulary) -> str:
  """A short hash identifying the vocabulary's content (goes into task names)."""
  if isinstance(vocabulary, HfTokenizerVocabulary):
    return vocabulary.tokenizer.fingerprint
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    return hashlib.sha256(vocabulary.sp_model).hexdigest()[:12]
  raise TypeError(f"no fingerprint for vocabulary type {type(vocabulary).__name__}")
