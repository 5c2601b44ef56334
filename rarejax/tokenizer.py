"""Tokenizers without TensorFlow or seqio: a SentencePiece `.model` or an HF tokenizer.json.

What inference needs of a vocabulary (rarejax.export.load_model: `rarejax diagnose`, `rarejax
evaluate`, releases), with the ids and text of the seqio vocabularies training used
(rarejax.data.vocab), so a model reads the tokens it was trained on. Needs `sentencepiece`, and
`tokenizers` for a tokenizer.json only.

  tokenizer = load_tokenizer("releases/rarejax-full-cpu/tokenizer.model")
  ids = [bos_id(tokenizer), *tokenizer.encode(prompt)]    # a decoder input
  text = tokenizer.decode(ids[1:])

seqio's Python-side semantics: `encode` adds neither BOS nor EOS; `decode` reads ids past the
vocabulary as UNK (when there is one) and drops everything after the first EOS; control pieces
(PAD, EOS, BOS of a SentencePiece model) decode to no text. A SentencePiece model's `pad_id` is
0 (seqio's, whatever the model file says), `vocab_size` its piece count, BOS/EOS/UNK the
model's (-1 when it has none). A tokenizer.json's special tokens come from the arguments, else
from tokenizer_config.json beside it: EOS is required, BOS and PAD default to EOS (Qwen has no
BOS), UNK to none.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import pathlib
from collections.abc import Iterable

import sentencepiece as spm

SEQIO_PAD_ID = 0  # seqio.vocabularies.PAD_ID: every seqio SentencePiece vocabulary pads with 0
HF_TOKENIZER_FILE = "tokenizer.json"
FILE_HINT = "the SentencePiece .model or tokenizer.json (or its folder) the model was trained with"


def is_sentencepiece(path: str | os.PathLike) -> bool:
  """Whether `path` names a SentencePiece model (a `.model` file) rather than a tokenizer.json."""
  return pathlib.Path(path).suffix == ".model"


def tokenizer_path(path: str | os.PathLike) -> pathlib.Path:
  """The tokenizer file `path` names: itself, or the tokenizer.json in a folder.

  Raises:
    FileNotFoundError: no such file.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / HF_TOKENIZER_FILE
  if not path.is_file():
    kind = "SentencePiece model" if is_sentencepiece(path) else "tokenizer file"
    raise FileNotFoundError(f"{kind} not found: {path}; give {FILE_HINT}")
  return path


def load_tokenizer(path: str | os.PathLike, **special_tokens: str | None) -> Tokenizer:
  """A SentencePiece `.model` file, or a tokenizer.json (or its folder) with HfTokenizer's
  `special_tokens` arguments, as a Tokenizer."""
  path = tokenizer_path(path)
  if is_sentencepiece(path):
    return SentencePieceTokenizer(path)
  return HfTokenizer(path, **special_tokens)


def bos_id(tokenizer) -> int:
  """The id that starts every decoder input: the BOS, else the EOS (of a Tokenizer here or of a
  seqio Vocabulary)."""
  bos = tokenizer.bos_id
  return bos if bos is not None and bos >= 0 else tokenizer.eos_id


class Tokenizer(abc.ABC):
  """Text to ids and back with seqio.Vocabulary's Python-side semantics (module docstring).

  Attributes:
    path: the tokenizer file.
    vocab_size: number of ids, special ones included.
    pad_id, eos_id, bos_id: the special ids (bos_id -1 or EOS when the tokenizer has no BOS).
    unk_id: the id of unknown text, None when the tokenizer has none.
  """
  path: pathlib.Path
  vocab_size: int
  pad_id: int
  eos_id: int
  bos_id: int
  unk_id: int | None

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """The ids of `text`, without BOS or EOS."""

  @abc.abstractmethod
  def _decode(self, ids: list[int]) -> str:
    """The text of `ids`, each within the vocabulary."""

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids` through the first EOS; ids past the vocabulary read as UNK."""
    ids = [int(i) for i in ids]
    if self.unk_id is not None:
      ids = [self.unk_id if i >= self.vocab_size else i for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id) + 1]
    return self._decode(ids)


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model` file, with the ids and text of seqio.SentencePieceVocabulary."""

  def __init__(self, model_file: str | os.PathLike):
    self.path = tokenizer_path(model_file)
    self.processor = spm.SentencePieceProcessor()
    try:
      self.processor.LoadFromSerializedProto(self.path.read_bytes())
    except RuntimeError as err:
      raise ValueError(f"{self.path} is not a SentencePiece model ({err}); give "
                       f"{FILE_HINT}") from None
    self.vocab_size = self.processor.GetPieceSize()
    self.pad_id = SEQIO_PAD_ID
    self.eos_id = self.processor.eos_id()
    self.bos_id = self.processor.bos_id()
    self.unk_id = self.processor.unk_id()

  def encode(self, text: str) -> list[int]:
    return self.processor.EncodeAsIds(text)

  def _decode(self, ids: list[int]) -> str:
    return self.processor.DecodeIds(ids)


def _special_token(config: dict, key: str) -> str | None:
  """A special token from tokenizer_config.json ('eos_token': '<|endoftext|>' or {'content'})."""
  value = config.get(key)
  return value.get("content") if isinstance(value, dict) else value


class HfTokenizer(Tokenizer):
  """A Hugging Face `tokenizers` tokenizer.json (Qwen/Llama-3 families), ids as the model knows
  them; special tokens as the module docstring says.

  Attributes:
    fingerprint: a short hash of the file's content.
  """

  def __init__(self, tokenizer_file: str | os.PathLike, eos_token: str | None = None,
               bos_token: str | None = None, pad_token: str | None = None,
               unk_token: str | None = None):
    try:
      import tokenizers  # pylint: disable=import-outside-toplevel  (a tokenizer.json only)
    except ImportError as err:
      raise ImportError(f"reading {tokenizer_file} needs the Hugging Face `tokenizers` library: "
                        "pip install tokenizers") from err
    self.path = tokenizer_path(tokenizer_file)
    data = self.path.read_bytes()
    self.tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    self.fingerprint = hashlib.sha256(data).hexdigest()[:12]
    config_path = self.path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
    eos = eos_token or _special_token(config, "eos_token")
    if eos is None:
      raise ValueError(f"{self.path}: no EOS token (pass eos_token= or add "
                       "tokenizer_config.json)")
    self.eos_id = self._id(eos, "eos")
    bos = bos_token or _special_token(config, "bos_token")
    self.bos_id = self._id(bos, "bos") if bos else self.eos_id
    pad = pad_token or _special_token(config, "pad_token")
    self.pad_id = self._id(pad, "pad") if pad else self.eos_id
    unk = unk_token or _special_token(config, "unk_token")
    self.unk_id = self._id(unk, "unk") if unk else None
    self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

  def _id(self, token: str, role: str) -> int:
    token_id = self.tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"{self.path}: {role} token {token!r} is not in the vocabulary")
    return token_id

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def _decode(self, ids: list[int]) -> str:
    return self.tokenizer.decode(ids, skip_special_tokens=False)
