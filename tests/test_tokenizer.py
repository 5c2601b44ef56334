"""The TF-free tokenizers (rarejax.tokenizer): the ids and text of the seqio vocabularies training
uses, and an export loaded and diagnosed in a process where TensorFlow and seqio cannot be
imported."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tokenizers

from rarejax import carry
from rarejax import export as export_lib
from rarejax import tokenizer as tokenizer_lib
from rarejax.data import format as fmt
from rarejax.data import vocab as vocab_lib
from rarejax.evaluate import model_method

from tests.data import test_vocab  # pylint: disable=g-bad-import-order  (shared fixtures)
from tests.sample import test_first_entry  # pylint: disable=g-bad-import-order
from tests.paths import ROOT

hf_dir = test_vocab.hf_dir  # a small byte-level BPE tokenizer.json (module fixture)
export = test_first_entry.export  # a tiny first-entry export with disease-id pieces
IDS = test_first_entry.IDS
TEXTS = [
    fmt.format_response("Tall, long fingers:\nlens dislocation.", [("Marfan syndrome", IDS[0]),
                                                                  ("", IDS[1])]),
    "A 34-year-old woman with Ménière disease, Sjögren syndrome and café-au-lait macules.",
    "患者有肌张力低下和发育迟缓。 Über-sized ears; naïve B cells ≥ 5%.",
    "Problem list:\n1. Short stature\n\n  - no  seizures\t(tab)  2024-01-30",
    f"{IDS[2]}{IDS[3]} OMIM:1547000 ORPHA:558\n\n",
    "unseen: ĳ ŋ 😀 ☃",
    "",
]


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
  """(the TF-free tokenizer, seqio's vocabulary) of one tiny SentencePiece model."""
  path = vocab_lib.train_sentencepiece((TEXTS[:4] + test_first_entry.TEXTS) * 5,
                                       tmp_path_factory.mktemp("spm") / "spm.model",
                                       vocab_size=400, extra_symbols=IDS)
  return tokenizer_lib.load_tokenizer(path), vocab_lib.load_vocabulary(path)


def test_sentencepiece_special_ids_and_size_are_seqios(sentencepiece):
  tokenizer, vocabulary = sentencepiece
  assert isinstance(tokenizer, tokenizer_lib.SentencePieceTokenizer)
  assert ((tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id,
           tokenizer.bos_id) == (vocabulary.vocab_size, vocabulary.pad_id, vocabulary.eos_id,
                                 vocabulary.unk_id, vocabulary.bos_id) == (tokenizer.vocab_size,
                                                                           0, 1, 2, 3))
  assert tokenizer_lib.bos_id(tokenizer) == tokenizer_lib.bos_id(vocabulary) == 3


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_ids_and_text_are_seqios(sentencepiece, text):
  tokenizer, vocabulary = sentencepiece
  ids = tokenizer.encode(text)
  assert ids == list(vocabulary.encode(text))
  assert tokenizer.decode(ids) == vocabulary.decode(ids) == text
  for n in range(len(ids)):  # prefixes, a byte-fallback character cut included
    assert tokenizer.decode(ids[:n]) == vocabulary.decode(ids[:n])


def test_sentencepiece_decodes_every_id_as_seqio_does(sentencepiece):
  tokenizer, vocabulary = sentencepiece
  for token in range(tokenizer.vocab_size + 3):  # ids past the vocabulary read as UNK
    assert tokenizer.decode([token]) == vocabulary.decode([token]), token
  ids = tokenizer.encode(TEXTS[0])
  for special in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size):
    row = ids[:5] + [special] + ids[5:]
    assert tokenizer.decode(row) == vocabulary.decode(row), special  # stops after EOS
  assert tokenizer.decode(np.array(ids, np.int32)) == TEXTS[0]
  assert {t for t in range(tokenizer.vocab_size)
          if tokenizer.decode([t]) in IDS} == {tokenizer.encode(i)[0] for i in IDS}


@pytest.mark.parametrize("text", test_vocab.NOTES + [fmt.THINK_CLOSE, ""])
def test_tokenizer_json_ids_and_text_are_the_vocabularys(hf_dir, text):
  tokenizer = tokenizer_lib.load_tokenizer(hf_dir)
  vocabulary = vocab_lib.load_vocabulary(hf_dir)
  reference = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
  ids = tokenizer.encode(text)
  assert ids == list(vocabulary.encode(text)) == reference.encode(text,
                                                                  add_special_tokens=False).ids
  row = ids + [tokenizer.eos_id] + ids
  assert tokenizer.decode(ids) == text
  assert tokenizer.decode(row) == vocabulary.decode(row) == text + "<|endoftext|>"
  assert ((tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id,
           tokenizer.unk_id) == (vocabulary.vocab_size, vocabulary.pad_id, vocabulary.eos_id,
                                 vocabulary.bos_id, vocabulary.unk_id))


def test_missing_or_wrong_files_name_the_file_and_the_fix(tmp_path, hf_dir):
  with pytest.raises(FileNotFoundError, match=r"SentencePiece model not found: .*a\.model; give"):
    tokenizer_lib.load_tokenizer(tmp_path / "a.model")
  with pytest.raises(FileNotFoundError, match=r"tokenizer file not found: .*tokenizer\.json"):
    tokenizer_lib.load_tokenizer(tmp_path)
  (tmp_path / "b.model").write_text("not a model")
  with pytest.raises(ValueError, match=r"b\.model is not a SentencePiece model"):
    tokenizer_lib.load_tokenizer(tmp_path / "b.model")
  with pytest.raises(ValueError, match="eos token '<nope>' is not in the vocabulary"):
    tokenizer_lib.load_tokenizer(hf_dir, eos_token="<nope>")


# Loads the export and diagnoses a note, with TF, seqio and `tokenizers` unimportable (as on the
# accelerator image or an install without the `data` extra); prints what it found as JSON.
DIAGNOSE_WITHOUT_TF = "\n".join([
    "import sys",
    *(f"sys.modules[{m!r}] = None" for m in (*carry.NO_TF_MODULES, "tokenizers")),
    "import json",
    "from rarejax import export as export_lib",
    "from rarejax.evaluate import generation, model_method",
    "from rarejax.knowledge import grounding",
    "model = export_lib.load_model(sys.argv[1])",
    "index = grounding.GroundingIndex(json.loads(sys.argv[2]))",
    "ranked = model_method.ModelMethod(model, index, top_k=3).diagnose([sys.argv[3]])[0]",
    "budget = generation.GenerationConfig(max_new_tokens=4)",
    "written = model_method.ModelMethod(model, index, budget, ranking='generate',"
    " max_cache_length=256).diagnose([sys.argv[3]])[0]",
    "print(json.dumps({'tokenizer': type(model.vocabulary).__name__,"
    " 'ranked': [c.disease_id for c in ranked.candidates],"
    " 'response': [written.response.text, list(written.response.tokens)]}))",
])


def test_export_loads_and_diagnoses_without_tensorflow_or_seqio(export):
  note = "A tall boy with long fingers and lens dislocation; café-au-lait macules."
  index = [(i, [f"disease {i}"]) for i in IDS]
  proc = subprocess.run([sys.executable, "-c", DIAGNOSE_WITHOUT_TF, str(export), json.dumps(index),
                         note], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = json.loads(proc.stdout.splitlines()[-1])
  assert found["tokenizer"] == "SentencePieceTokenizer"
  assert len(found["ranked"]) == 3 and set(found["ranked"]) <= set(IDS)
  text, tokens = found["response"]
  vocabulary = vocab_lib.load_vocabulary(
      export_lib.vocabulary_path(export, export_lib.read_metadata(export)))
  assert 0 < len(tokens) <= 4 and vocabulary.decode(tokens) == text
