"""Vocabularies as seqio.Vocabulary: SentencePiece trained on our corpus, and pretrained tokenizers.

Our SentencePiece model (seqio's conventions): pad=0, eos=1, unk=2, bos=3; the format tags
(<think> </think> <answer> </answer>) and the newline are user-defined symbols, one piece each;
byte fallback, identity normalization, no dummy prefix and no whitespace folding, so decoding
gives back exactly the text that was encoded (accents, CJK, newlines and all); digits are split.
Training is deterministic: one thread, fixed seed, sentences in the given order, all of them.

Pretrained models: a SentencePiece `.model` file loads as seqio.SentencePieceVocabulary; a
Hugging Face `tokenizer.json` (Qwen/Llama-3 families) loads as `HfTokenizerVocabulary`, which
runs the `tokenizers` library in TF through tf.py_function.

The decoder input starts every sequence with `bos_id(vocabulary)`; sample from
`[bos_id(vocab)] + vocab.encode(prompt)`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm
import tokenizers

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


def _special_token(config: dict, key: str) -> str | None:
  """A special token from tokenizer_config.json ('eos_token': '<|endoftext|>' or {'content'})."""
  value = config.get(key)
  return value.get("content") if isinstance(value, dict) else value


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizers` tokenizer.json as a seqio Vocabulary (ids as the model knows them).

  Special tokens come from the arguments, else from tokenizer_config.json beside the file. EOS
  is required; BOS defaults to EOS when the model has none (Qwen), PAD to EOS.
  """

  def __init__(self, tokenizer_file: str | os.PathLike, eos_token: str | None = None,
               bos_token: str | None = None, pad_token: str | None = None,
               unk_token: str | None = None):
    path = pathlib.Path(tokenizer_file)
    if path.is_dir():
      path = path / "tokenizer.json"
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer file not found: {path}")
    data = path.read_bytes()
    self._tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    self.tokenizer_file = path
    self.fingerprint = hashlib.sha256(data).hexdigest()[:12]
    config_path = path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
    eos = eos_token or _special_token(config, "eos_token")
    if eos is None:
      raise ValueError(f"{path}: no EOS token (pass eos_token= or add tokenizer_config.json)")
    self._eos = self._id(eos, "eos")
    bos = bos_token or _special_token(config, "bos_token")
    self._bos = self._id(bos, "bos") if bos else self._eos
    pad = pad_token or _special_token(config, "pad_token")
    self._pad = self._id(pad, "pad") if pad else self._eos
    unk = unk_token or _special_token(config, "unk_token")
    self._unk = self._id(unk, "unk") if unk else None
    super().__init__(extra_ids=0)

  def _id(self, token: str, role: str) -> int:
    token_id = self._tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"{self.tokenizer_file}: {role} token {token!r} is not in the vocabulary")
    return token_id

  @property
  def bos_id(self) -> int:
    return self._bos

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def unk_id(self) -> int | None:
    return self._unk

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> list[int]:
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Sequence[int]) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

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
    return isinstance(other, HfTokenizerVocabulary) and other.fingerprint == self.fingerprint

  def __hash__(self) -> int:
    return hash(self.fingerprint)


def load_vocabulary(path: str | os.PathLike, **special_tokens) -> seqio.Vocabulary:
  """A SentencePiece `.model` file, or a tokenizer.json (or its folder), as a Vocabulary."""
  path = pathlib.Path(path)
  if path.suffix == ".model":
    if not path.is_file():
      raise FileNotFoundError(f"SentencePiece model not found: {path}")
    return seqio.SentencePieceVocabulary(str(path))
  return HfTokenizerVocabulary(path, **special_tokens)


def bos_id(vocabulary: seqio.Vocabulary) -> int:
  """The id that starts every decoder input: the vocabulary's BOS, else its EOS."""
  bos = vocabulary.bos_id
  return bos if bos is not None and bos >= 0 else vocabulary.eos_id


def fingerprint(vocabulary: seqio.Vocabulary) -> str:
  """A short hash identifying the vocabulary's content (goes into task names)."""
  if isinstance(vocabulary, HfTokenizerVocabulary):
    return vocabulary.fingerprint
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    return hashlib.sha256(vocabulary.sp_model).hexdigest()[:12]
  raise TypeError(f"no fingerprint for vocabulary type {type(vocabulary).__name__}")
