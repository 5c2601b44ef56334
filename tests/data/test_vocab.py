"""Vocabularies: deterministic SentencePiece training, exact round trips, pretrained adapter."""
import hashlib
import json

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rarejax import tokenizer as tokenizer_lib
from rarejax.data import corpus, format as format_lib, vocab

NOTES = [
    "A 34-year-old woman with Ménière disease, Sjögren syndrome and café-au-lait macules.",
    "患者有肌张力低下和发育迟缓。 Über-sized ears; naïve B cells ≥ 5%.",
    "Problem list:\n1. Short stature\n\n  - no  seizures\t(tab)",
    format_lib.format_response("Findings known in Marfan syndrome: arachnodactyly.",
                               [("Marfan syndrome", "OMIM:154700")]),
]


@pytest.fixture(scope="module")
def corpus_texts(kb):
  examples = corpus.knowledge_examples(kb, corpus.select_diseases(kb, 30, seed=1))
  return [e["question"] + "\n" + e["answer"] for e in examples] + NOTES[:1]


@pytest.fixture(scope="module")
def spm(corpus_texts, tmp_path_factory):
  path = vocab.train_sentencepiece(corpus_texts, tmp_path_factory.mktemp("spm") / "a.model",
                                   vocab_size=1500)
  return path, vocab.load_vocabulary(path)


def test_sentencepiece_training_is_deterministic(spm, corpus_texts, tmp_path):
  path, _ = spm
  again = vocab.train_sentencepiece(corpus_texts, tmp_path / "b.model", vocab_size=1500)
  assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()


def test_special_ids_and_tags_are_single_pieces(spm):
  _, v = spm
  assert (v.pad_id, v.eos_id, v.unk_id, v.bos_id) == (0, 1, 2, 3)
  for tag in (*format_lib.TAGS, "\n"):
    assert len(v.encode(tag)) == 1, tag
  assert tokenizer_lib.bos_id(v) == 3


@pytest.mark.parametrize("text", NOTES)
def test_round_trip_python_and_tensorflow(spm, text):
  _, v = spm
  ids = v.encode(text)
  assert v.decode(ids) == text
  assert v.encode_tf(vocab.tf.constant(text)).numpy().tolist() == ids
  assert v.decode_tf(vocab.tf.constant(ids)).numpy().decode("utf-8") == text


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A small byte-level BPE tokenizer.json (Qwen-style: no BOS, <|endoftext|> as EOS/PAD)."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                special_tokens=["<|endoftext|>", *format_lib.TAGS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(NOTES * 5, trainer=trainer)
  folder = tmp_path_factory.mktemp("hf")
  tokenizer.save(str(folder / "tokenizer.json"))
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": None}))
  return folder


@pytest.mark.parametrize("text", NOTES + ["plain ascii", ""])
def test_pretrained_adapter_agrees_with_reference_tokenizers(hf_dir, text):
  transformers = pytest.importorskip("transformers")
  v = vocab.load_vocabulary(hf_dir)
  reference = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
  fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))
  ids = v.encode(text)
  assert ids == reference.encode(text, add_special_tokens=False).ids
  assert ids == fast.encode(text, add_special_tokens=False)
  assert v.decode(ids) == fast.decode(ids) == text
  assert v.encode_tf(vocab.tf.constant(text)).numpy().tolist() == ids
  if ids:
    assert v.decode_tf(vocab.tf.constant([ids, ids])).numpy().tolist() == [text.encode()] * 2


def test_pretrained_adapter_special_tokens(hf_dir):
  v = vocab.load_vocabulary(hf_dir / "tokenizer.json")
  eos = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json")).token_to_id("<|endoftext|>")
  assert v.eos_id == v.pad_id == tokenizer_lib.bos_id(v) == eos == 0  # id 0 is a real token here
  assert v.unk_id is None and v.vocab_size == 400
  assert [len(v.encode(tag)) for tag in format_lib.TAGS] == [1, 1, 1, 1]
  assert vocab.fingerprint(v) == vocab.fingerprint(vocab.load_vocabulary(hf_dir))
  with pytest.raises(ValueError, match="eos token '<nope>' is not in the vocabulary"):
    vocab.HfTokenizerVocabulary(hf_dir, eos_token="<nope>")
