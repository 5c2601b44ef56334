"""Tests for knowledge-ranker hints: the settings an export records, the ranker's K best id pieces
for a note (Resnik over the recognized concepts), the arrays beside a token cache, the prompts
that end with them, and their compact carried copy."""
import json

import numpy as np
import pytest

from rarejax.data import cached_batches
from rarejax.data import format as fmt
from rarejax.data import ranker_hints
from rarejax.data import vocab as vocab_lib
from rarejax.phenotypes import baselines, recognizers
from rarejax.phenotypes.phenotype_index import PhenotypeIndex

from tests.sample import test_answer_prior  # pylint: disable=g-bad-import-order  (toy cache writer)

# Marfan, Loeys-Dietz 1, homocystinuria, achondroplasia: annotated diseases with id pieces.
IDS = ["OMIM:154700", "OMIM:609192", "OMIM:236200", "OMIM:100800"]
NOTE = "A tall boy with arachnodactyly, ectopia lentis and scoliosis. No hearing impairment."


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
  folder = tmp_path_factory.mktemp("hints")
  texts = [fmt.build_prompt(NOTE, instruction="none"), ranker_hints.PREFIX,
           *(fmt.format_response("", [("", i)]) for i in IDS)]
  path = vocab_lib.train_sentencepiece(texts * 5, folder / "spm.model", vocab_size=400,
                                       extra_symbols=IDS)
  return vocab_lib.load_vocabulary(path)


@pytest.fixture(scope="module")
def hints(kb, vocabulary):
  return ranker_hints.HintRanker(kb, vocabulary, ranker_hints.RankerHints(k=3))


def test_settings_are_checked_named_and_recorded():
  config = ranker_hints.RankerHints(k=5)
  assert config.key == "hints-resnik-k5"
  with pytest.raises(ValueError, match="k >= 1"):
    ranker_hints.RankerHints(k=0)
  metadata = {ranker_hints.METADATA_KEY: config.metadata()}
  assert ranker_hints.RankerHints.from_metadata(metadata) == config
  assert ranker_hints.RankerHints.from_metadata({}) is None  # trained without hints
  other = {ranker_hints.METADATA_KEY: {**config.metadata(), "prefix": "\nCandidates:"}}
  with pytest.raises(ValueError, match="does not build"):
    ranker_hints.RankerHints.from_metadata(other)


def test_hints_are_resnik_best_id_pieces_for_the_recognized_concepts(kb, vocabulary, hints):
  found = recognizers.make_recognizer("rarejax", kb).recognize(NOTE)
  assert found.observed and found.excluded  # hearing impairment is negated
  index = PhenotypeIndex(kb)
  scores = baselines.ResnikRanker(index).scores(index.query(found.observed, found.excluded))
  ours = sorted(IDS, key=lambda d: (-scores[index.disease_ids.index(d)],
                                    index.disease_ids.index(d)))[:3]
  ids = hints.ids(NOTE)
  assert [vocabulary.decode([int(t)]) for t in ids] == ours
  assert ours[0] == "OMIM:154700"  # Marfan: the note is its textbook picture
  tokens = hints.tokens(NOTE)
  assert tokens[:len(hints.prefix)] == list(vocabulary.encode(ranker_hints.PREFIX))
  assert tokens[len(hints.prefix):] == ids.tolist()


def test_a_note_without_concepts_gets_the_prefix_alone(hints):
  assert (hints.ids("Seen today. Doing well.") == ranker_hints.NONE).all()
  assert hints.tokens("Seen today. Doing well.") == hints.prefix.tolist()


def _build(tmp_path, hints, notes):
  test_answer_prior.write_split(tmp_path, "real", [[4, 5, 7, 1]] * len(notes))
  folder = cached_batches.split_dir(tmp_path, "real", "train")
  examples = [{"note": n, "gold_ids": ["OMIM:154700"]} for n in notes]
  ranker_hints.build(folder, examples, hints, len(notes))
  return folder


def test_cached_prompts_end_with_their_hints(tmp_path, hints):
  notes = [NOTE, "Seen today. Doing well."]
  folder = _build(tmp_path, hints, notes)
  meta = json.loads((ranker_hints.folder_of(folder, hints.config) / "meta.json").read_text())
  assert meta["gold_among_hints"] == 0.5 and meta["gold_annotated_examples"] == 2
  assert meta["prefix_tokens"] == hints.prefix.tolist()
  split = cached_batches.open_split(folder, hints=hints.config)
  for i, note in enumerate(notes):
    inputs, targets = split.example(i)
    assert inputs.tolist() == [3, 2] + hints.tokens(note)  # the cached prompt, then the hints
    assert targets.tolist() == [4, 5, 7, 1]  # responses untouched
  assert cached_batches.open_split(folder).example(0)[0].tolist() == [3, 2]  # not asked for
  with pytest.raises(ValueError, match="1 builder examples for 2"):
    ranker_hints.build(tmp_path / "other", [{"note": NOTE}], hints, 2)
  with pytest.raises(ValueError, match="note text"):
    ranker_hints.build(tmp_path / "other", [{"question": "?"}], hints, 1)
  assert not (tmp_path / "other").exists()  # nothing half-written


def test_hint_rows_that_do_not_match_the_cache_are_refused(tmp_path, hints):
  folder = _build(tmp_path, hints, [NOTE])
  meta = json.loads((folder / cached_batches.META).read_text())
  (folder / cached_batches.META).write_text(json.dumps({**meta, "examples": 2}))
  np.save(folder / "inputs_offsets.npy", np.array([0, 1, 2], np.int64))
  np.save(folder / "targets_offsets.npy", np.array([0, 2, 4], np.int64))
  with pytest.raises(ValueError, match="1 rows for 2 examples"):
    cached_batches.open_split(folder, hints=hints.config)


def test_compact_copy_reads_back_the_same_hints(tmp_path, hints):
  folder = _build(tmp_path / "a", hints, [NOTE, "Seen today. Doing well."])
  out = tmp_path / "b"
  out.mkdir()
  assert ranker_hints.copy_compact(folder, out, hints.config)
  assert np.load(ranker_hints.folder_of(out, hints.config) / "ids.npy").dtype == np.uint16
  a, b = (ranker_hints.load(f, hints.config) for f in (folder, out))
  np.testing.assert_array_equal(a.ids, b.ids)
  assert (b.ids[1] == ranker_hints.NONE).all() and b.ids.dtype == np.int32
  assert not ranker_hints.copy_compact(out / "none", out / "c", hints.config)
