"""Knowledge-ranker hints in the prompt: the Resnik ranker's K best diseases for a note, as id pieces after the note.

A model that names diseases by id pieces (DataSpec.first_entry_ranking) learns the diseases it
saw real cases of and ranks none of the annotation-only ones for real notes (README, "The full
recipe": 0.000 on the unseen-disease slice, where Resnik alone gets 0.062 / 0.165 top-1 /
top-10). With hints, every diagnosis prompt ends with what the knowledge's ranker says about
that note:

  <prompt> + encode('\\nKnowledge ranker:') + [id piece of the 1st disease, ..., of the K-th]

so the answer's first id piece can be copied from the prompt when the note looks like the
annotations, and the model learns from the real cases when to follow the ranker and when not.

The hints are computed from the note's text exactly as at inference: the concepts rarejax's
recognizer finds in the note (rarejax.phenotypes.concepts, observed and excluded), scored by
Resnik over the knowledge's annotated diseases (rarejax.phenotypes.baselines), ties in index
order; diseases without an id piece are left out, and a note with no recognized concept gets the
prefix alone. Training and inference share HintRanker, so a prompt carries the same tokens in
both (tests/data/test_ranker_hints.py).

Layout, beside a diagnosis task split's token cache (rarejax.data.cached_batches):

  <task>/<split>/hints-resnik-k<K>/ids.npy    int32 [N, K] id-piece tokens, -1 past the hints
                                              (uint16 with 65535 for -1 in a carried copy)
  <task>/<split>/hints-resnik-k<K>/meta.json  settings, prefix tokens, examples, how often the
                                              gold disease is among the hints

  config = RankerHints(k=10)                  # gin: sft/train_batches.ranker_hints = @RankerHints()
  hints = HintRanker(kb, vocabulary, config)  # imports the recognizer and ranker
  hints.tokens(note)                          # prefix + ids: what a prompt gets
  build(split_folder, builder_examples, hints)
  cached_batches.cached_batches(..., hints=config)   # each prompt of a hinted split ends with them
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Any, Iterable, Mapping

import gin
import numpy as np

from rarejax import atomic_io
from rarejax.data import soft_targets

PREFIX = "\nKnowledge ranker:"  # what comes between the prompt and the hints' id pieces
META = "meta.json"
NONE = -1  # ids.npy past a note's hints
METADATA_KEY = "ranker_hints"  # an export's metadata.json: {k, ranker, recognizer, prefix}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RankerHints:
  """Hints of a training stage: the `k` best diseases of the Resnik ranker for each note."""
  k: int = 10

  def __post_init__(self):
    if self.k < 1:
      raise ValueError(f"RankerHints needs k >= 1, got {self.k}")

  @property
  def key(self) -> str:
    """The folder name of these settings' arrays (the task name carries the knowledge and
    vocabulary)."""
    return f"hints-resnik-k{self.k}"

  def metadata(self) -> dict[str, Any]:
    """What an export records so that inference builds the same hints (METADATA_KEY)."""
    return {"k": self.k, "ranker": "resnik", "recognizer": "rarejax", "prefix": PREFIX}

  @classmethod
  def from_metadata(cls, metadata: Mapping[str, Any]) -> RankerHints | None:
    """The settings an export was trained with, None when it was trained without hints;
    refuses settings this code cannot reproduce."""
    recorded = metadata.get(METADATA_KEY)
    if not recorded:
      return None
    config = cls(k=int(recorded["k"]))
    if recorded != config.metadata():
      raise ValueError(f"the export was trained with ranker hints {recorded}, which this code "
                       f"does not build (it builds {config.metadata()})")
    return config


@dataclasses.dataclass(frozen=True)
class HintSplit:
  """One task split's hints: row i belongs to the split's example i."""
  ids: np.ndarray  # int32 [N, K], NONE past the hints
  prefix: np.ndarray  # int32: the tokens of PREFIX

  def tokens(self, i: int) -> np.ndarray:
    """What example i's prompt is followed by: the prefix and its hints' id pieces."""
    row = self.ids[i]
    return np.concatenate([self.prefix, row[row != NONE]]).astype(np.int32)


class HintRanker:
  """Hints for notes: recognized concepts → Resnik over the knowledge → the K best id pieces.

  Args:
    kb: the knowledge whose ontology the recognizer reads and whose annotations Resnik scores
      (for an honest evaluation, the knowledge the evaluated model was trained with).
    vocabulary: the model's tokenizer (its disease-id pieces and the prefix).
    config: the settings (K).
  """

  def __init__(self, kb: Any, vocabulary: Any, config: RankerHints):
    # Imported here: readers of the arrays (cached_batches, the accelerator carry) need neither
    # the recognizer, the rankers nor the model.
    # pylint: disable=import-outside-toplevel
    from rarejax.phenotypes import baselines
    from rarejax.phenotypes import recognizers
    from rarejax.phenotypes import phenotype_index
    # pylint: enable=import-outside-toplevel
    self.config = config
    self.recognizer = recognizers.make_recognizer("rarejax", kb)
    self.index = phenotype_index.PhenotypeIndex(kb)
    self.ranker = baselines.ResnikRanker(self.index)
    _, self.columns, self.pieces = soft_targets.indexed_id_pieces(self.index, vocabulary)
    if not len(self.columns):
      raise ValueError("ranker hints: no annotated disease of the knowledge has an id piece in "
                       "the vocabulary (hints need DataSpec.id_pieces = True)")
    self.prefix = np.array(vocabulary.encode(PREFIX), np.int32)

  def ids(self, note: str) -> np.ndarray:
    """int32 [K]: the note's hints, best first, NONE past them (no concept recognized: none)."""
    out = np.full(self.config.k, NONE, np.int32)
    found = self.recognizer.recognize(note)
    if not found.observed:
      return out
    scores = self.ranker.scores(self.index.query(found.observed, found.excluded))[self.columns]
    best = soft_targets.best_k(scores, self.config.k)
    out[:len(best)] = self.pieces[best]
    return out

  def tokens(self, note: str) -> list[int]:
    """What the note's prompt is followed by: the prefix and its hints' id pieces."""
    return HintSplit(self.ids(note)[None], self.prefix).tokens(0).tolist()


def folder_of(split_folder: str | os.PathLike, config: RankerHints) -> pathlib.Path:
  return pathlib.Path(split_folder) / config.key


def load(split_folder: str | os.PathLike, config: RankerHints) -> HintSplit | None:
  """The split's hints (int32, whatever they are stored in), or None when none were built."""
  folder = folder_of(split_folder, config)
  if not (folder / META).is_file():
    return None
  meta = json.loads((folder / META).read_text())
  stored = np.load(folder / "ids.npy")
  ids = stored.astype(np.int32)
  if stored.dtype == np.uint16:  # a carried copy: 65535 stands for NONE
    ids[stored == np.iinfo(np.uint16).max] = NONE
  return HintSplit(ids, np.array(meta["prefix_tokens"], np.int32))


def copy_compact(split_folder: str | os.PathLike, out_split_folder: str | os.PathLike,
                 config: RankerHints) -> bool:
  """Copies a split's hints for a carry (ids as uint16 where they fit); False when it has none."""
  hints = load(split_folder, config)
  if hints is None:
    return False
  out = folder_of(out_split_folder, config)
  out.mkdir(parents=True)
  ids = hints.ids
  if ids.max(initial=0) < np.iinfo(np.uint16).max:
    ids = np.where(ids == NONE, np.iinfo(np.uint16).max, ids).astype(np.uint16)
  np.save(out / "ids.npy", ids)
  (out / META).write_text((folder_of(split_folder, config) / META).read_text())
  return True


def build(split_folder: str | os.PathLike, examples: Iterable[Mapping[str, Any]],
          hints: HintRanker, examples_expected: int) -> pathlib.Path:
  """Writes the hints of a cached diagnosis split unless they exist; returns their folder.

  Args:
    split_folder: the split's token cache folder (cached_batches.split_dir).
    examples: the split's builder examples in cache order (their 'note' and 'gold_ids').
    hints: the ranker (the experiment's knowledge and tokenizer).
    examples_expected: the cached split's example count (the arrays must align with it).
  """
  folder = folder_of(split_folder, hints.config)
  if (folder / META).is_file():
    return folder
  gold_piece = {d: int(t) for d, t in zip((hints.index.disease_ids[i] for i in hints.columns),
                                          hints.pieces)}
  rows, among, named, started = [], 0, 0, time.monotonic()
  for example in examples:
    if "note" not in example:
      raise ValueError(f"{split_folder}: ranker hints need the examples' note text; this task's "
                       f"examples have {sorted(example)}")
    row = hints.ids(example["note"])
    rows.append(row)
    gold = {gold_piece[g] for g in example.get("gold_ids", ()) if g in gold_piece}
    if gold:
      named += 1
      among += bool(gold & set(row.tolist()))
    if len(rows) % 10000 == 0:
      logging.info("ranker hints %s: %d examples, %.0f s", folder, len(rows),
                   time.monotonic() - started)
  if len(rows) != examples_expected:
    raise ValueError(f"{split_folder}: {len(rows)} builder examples for {examples_expected} "
                     "cached examples; delete the token cache and build it again")
  ids = np.stack(rows) if rows else np.zeros((0, hints.config.k), np.int32)
  meta = {**hints.config.metadata(), "prefix_tokens": hints.prefix.tolist(),
          "examples": len(rows), "mean_hints": float((ids != NONE).sum(axis=1).mean())
          if len(rows) else 0.0,
          "gold_among_hints": among / max(named, 1), "gold_annotated_examples": named}
  with atomic_io.replaced_folder(folder, max_bytes=2**40, what=str(folder)) as staging:
    np.save(staging / "ids.npy", ids)
    (staging / META).write_text(json.dumps(meta, indent=1))
  logging.info("ranker hints %s: %d examples in %.0f s (gold among the hints in %.1f%% of the %d "
               "examples whose gold disease is annotated)", folder, len(rows),
               time.monotonic() - started, 100 * meta["gold_among_hints"], named)
  return folder
