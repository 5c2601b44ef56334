"""Soft first-answer targets from the knowledge's Resnik ranker: annotation knowledge distilled into an id-piece model.

A model that answers first with disease-id pieces (DataSpec.first_entry_ranking) learns
p(disease | note) at one position of each diagnosis target, the answer's first id piece. Its
hard target names one disease, so a disease known only from its annotations is the target
there only as often as its few simulated patients are drawn: too rarely to be learned (the full
recipe's model ranks none of them, README "The full recipe"). A soft target adds, at that same
position, the distribution of the knowledge's Resnik ranker given the example's own findings:
every diagnosis example then also teaches the K annotated diseases its findings are most like
(knowledge distillation: Hinton et al., "Distilling the knowledge in a neural network", 2015).
The teacher reads only what the example was built from (its observed and excluded HPO terms)
and the experiment's knowledge, so it adds nothing the training data and knowledge lack.

The loss at that position becomes CE(gold) + weight * sum_k p_k * -log q(id_k) (train.losses),
q being the model's softmax over the whole vocabulary.

Layout, beside a task split's token cache (rarejax.data.cached_batches):

  <task>/<split>/soft-<key>/ids.npy     int32 [N, K]  the teacher's K best id-piece tokens
  <task>/<split>/soft-<key>/probs.npy   float32 [N, K] their probabilities: softmax(score / T)
                                                      over the K
  <task>/<split>/soft-<key>/meta.json   settings, the answer piece's offset in each target,
                                        examples, agreement with the cached targets

  config = SoftTargets(weight=1.0, k=32, temperature=0.5)
  build(split_folder, builder_examples, index, vocabulary, config)
  cached_batches.cached_batches(..., soft=config)   # rows carry soft_ids / soft_probs [L, K]
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Iterable, Mapping

import gin
import numpy as np

META = "meta.json"
MIN_AGREEMENT = 0.99  # cached targets whose answer piece is the example's gold piece


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SoftTargets:
  """Soft targets of a training stage: `weight` times the teacher's cross-entropy is added to the
  hard target's at the answer piece; the teacher keeps its `k` best diseases, softmax(score /
  `temperature`) over them."""
  weight: float = 1.0
  k: int = 32
  temperature: float = 0.5

  def __post_init__(self):
    if self.weight <= 0 or self.k < 1 or self.temperature <= 0:
      raise ValueError(f"SoftTargets needs weight > 0, k >= 1 and temperature > 0, got {self}")

  @property
  def key(self) -> str:
    """The folder name of these settings' teacher arrays (the task name carries the knowledge
    and vocabulary)."""
    return f"soft-resnik-k{self.k}-t{self.temperature:g}"


@dataclasses.dataclass(frozen=True)
class SoftSplit:
  """One task split's teacher: row i belongs to the split's example i."""
  ids: np.ndarray  # int32 [N, K] vocabulary ids of id pieces
  probs: np.ndarray  # float32 [N, K]
  offset: int  # index of the answer's first id piece in every target


def folder_of(split_folder: str | os.PathLike, config: SoftTargets) -> pathlib.Path:
  return pathlib.Path(split_folder) / config.key


def load(split_folder: str | os.PathLike, config: SoftTargets) -> SoftSplit | None:
  """The split's teacher arrays (int32 ids, float32 probabilities, whatever they are stored
  in), or None when none were built for these settings."""
  folder = folder_of(split_folder, config)
  if not (folder / META).is_file():
    return None
  meta = json.loads((folder / META).read_text())
  return SoftSplit(np.load(folder / "ids.npy").astype(np.int32),
                   np.load(folder / "probs.npy").astype(np.float32), meta["offset"])


def copy_compact(split_folder: str | os.PathLike, out_split_folder: str | os.PathLike,
                 config: SoftTargets) -> bool:
  """Copies a split's teacher arrays for a carry: ids as uint16 where they fit, probabilities
  as float16 (load reads them back as int32 / float32); False when the split has none."""
  soft = load(split_folder, config)
  if soft is None:
    return False
  out = folder_of(out_split_folder, config)
  out.mkdir(parents=True)
  ids = soft.ids.astype(np.uint16) if soft.ids.max(initial=0) < 2**16 else soft.ids
  np.save(out / "ids.npy", ids)
  np.save(out / "probs.npy", soft.probs.astype(np.float16))
  shutil.copyfile(folder_of(split_folder, config) / META, out / META)
  return True


def best_k(scores: np.ndarray, k: int) -> np.ndarray:
  """Indices of the min(k, len(scores)) best scores, best first, ties in index order."""
  k = min(k, len(scores))
  best = np.argpartition(-scores, k - 1)[:k]
  return best[np.lexsort((best, -scores[best]))]


def indexed_id_pieces(index: Any, vocabulary: Any) -> tuple[dict[str, int], np.ndarray,
                                                             np.ndarray]:
  """({disease id: its piece token} over the vocabulary, the index columns of the diseases that
  have a piece, those pieces' tokens aligned with the columns): what a Resnik row over the index
  is read through to name id pieces (the teacher here, ranker hints)."""
  from rarejax.sample import first_entry  # pylint: disable=import-outside-toplevel  (see build)
  piece_of = {name: token for token, name in first_entry.id_pieces(vocabulary).items()}
  columns = np.array([i for i, d in enumerate(index.disease_ids) if d in piece_of], np.int64)
  return piece_of, columns, np.array([piece_of[index.disease_ids[i]] for i in columns], np.int32)


def teacher_rows(scores: np.ndarray, tokens: np.ndarray, config: SoftTargets,
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(ids [K], probs [K]) of one example: the K best-scored diseases' tokens (score ties broken
  by index order), softmax(score / T) over them."""
  best = best_k(scores, config.k)
  k = len(best)
  logits = scores[best].astype(np.float64) / config.temperature
  probs = np.exp(logits - logits.max())
  ids = np.zeros(config.k, np.int32)
  out = np.zeros(config.k, np.float32)
  ids[:k], out[:k] = tokens[best], probs / probs.sum()
  return ids, out


def build(split_folder: str | os.PathLike, examples: Iterable[Mapping[str, Any]],
          index: Any, vocabulary: Any, config: SoftTargets,
          cached_targets: tuple[np.ndarray, np.ndarray]) -> pathlib.Path:
  """Writes the teacher of a cached diagnosis split unless it exists; returns its folder.

  Args:
    split_folder: the split's token cache folder (cached_batches.split_dir).
    examples: the split's builder examples in cache order (observed, excluded, gold_ids).
    index: the experiment's PhenotypeIndex; diseases without an id piece are left out.
    vocabulary: the tokenizer (id pieces, answer prefix).
    config: the settings.
    cached_targets: (targets tokens, offsets) of the cached split, to check the alignment.
  """
  folder = folder_of(split_folder, config)
  if (folder / META).is_file():
    return folder
  # Imported here: readers of the arrays (cached_batches, the accelerator carry) need neither the
  # rankers nor the model.
  from rarejax.phenotypes import baselines  # pylint: disable=import-outside-toplevel
  from rarejax.sample import first_entry  # pylint: disable=import-outside-toplevel
  piece_of, columns, tokens = indexed_id_pieces(index, vocabulary)
  offset = len(first_entry.id_answer_prefix(vocabulary))
  ranker = baselines.ResnikRanker(index)
  targets, offsets = cached_targets
  ids, probs, agree, named = [], [], 0, 0
  started = time.monotonic()
  for i, example in enumerate(examples):
    scores = ranker.scores(index.query(example["observed"], example["excluded"]))[columns]
    row_ids, row_probs = teacher_rows(scores, tokens, config)
    ids.append(row_ids)
    probs.append(row_probs)
    gold = [piece_of[g] for g in example["gold_ids"] if g in piece_of]
    if gold and offsets[i] + offset < offsets[i + 1]:
      named += 1
      agree += int(targets[offsets[i] + offset] in gold)
    if (i + 1) % 5000 == 0:
      logging.info("soft targets %s: %d examples, %.0f s", folder, i + 1,
                   time.monotonic() - started)
  n = len(offsets) - 1
  if len(ids) != n:
    raise ValueError(f"{split_folder}: {len(ids)} builder examples for {n} cached examples; "
                     "delete the token cache and build it again")
  agreement = agree / max(named, 1)
  if agreement < MIN_AGREEMENT:
    raise ValueError(f"{split_folder}: only {agreement:.1%} of the cached targets name the "
                     f"example's gold disease at position {offset}: the builder examples are not "
                     "in the cache's order, or the targets do not answer first with an id piece "
                     "(soft targets need DataSpec answer='id', reasoning='none', id_pieces)")
  tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{config.key}.", suffix=".tmp"))
  try:
    np.save(tmp / "ids.npy", np.stack(ids))
    np.save(tmp / "probs.npy", np.stack(probs))
    meta = {**dataclasses.asdict(config), "ranker": "resnik", "offset": offset, "examples": n,
            "agreement": agreement, "mean_top1_prob": float(np.mean([p[0] for p in probs]))}
    (tmp / META).write_text(json.dumps(meta, indent=1))
    os.rename(tmp, folder)
  except OSError:
    if not (folder / META).is_file():
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("soft targets %s: %d examples in %.0f s (teacher's mean top-1 probability %.2f)",
               folder, n, time.monotonic() - started, meta["mean_top1_prob"])
  return folder
