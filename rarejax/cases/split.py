"""The honest split: cases are assigned to train/validation by publication, never case by case."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Sequence

from rarejax.cases.case import HELDOUT, Case

# The inner split (of the training publications) draws its coins with seed + INNER_SEED_OFFSET;
# a split made inside the inner training publications (e.g. fusion tuning) goes one level deeper.
INNER_SEED_OFFSET = 1


def publication_of(case: Case) -> str:
  """The unit a case is split by: its PMID, or its own id when it cites no publication."""
  return case.pmid or f"case:{case.id}"


def is_validation(unit: str, fraction: float, seed: int) -> bool:
  """Deterministic coin for one publication: sha256(seed, unit) below `fraction` → validation."""
  digest = hashlib.sha256(f"{seed}\x00{unit}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def split_by_publication(cases: Sequence[Case], validation_fraction: float = 0.2,
                         seed: int = 0) -> list[Case]:
  """Returns the cases with `split` set to 'train' or 'validation', whole publications at a time.

  About `validation_fraction` of the publications (not of the cases) go to validation; the
  assignment of a publication depends only on (seed, pmid), so adding cases never moves others.
  """
  return development_split(cases, validation_fraction, seed)


def development_split(cases: Sequence[Case], validation_fraction: float = 0.2, seed: int = 0,
                      inner: bool = False) -> list[Case]:
  """The development protocol's split; with `inner`, the split inside its training publications.

  Outer (default): `split_by_publication`. Inner: the outer validation publications become
  'heldout' (never trained on, never looked at while choosing) and the outer training
  publications are split again, with seed + INNER_SEED_OFFSET and the same fraction, into 'train'
  and 'validation'. Choices are made on the inner validation cases; the outer ones are evaluated
  once, at the end. The inner validation publications are exactly those the fusion tuning of
  `rarejax evaluate` holds out of the outer training cases.
  """
  if not 0.0 <= validation_fraction <= 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")

  def split_of(case: Case) -> str:
    unit = publication_of(case)
    if is_validation(unit, validation_fraction, seed):
      return HELDOUT if inner else "validation"
    if inner and is_validation(unit, validation_fraction, seed + INNER_SEED_OFFSET):
      return "validation"
    return "train"

  return [dataclasses.replace(case, split=split_of(case)) for case in cases]


def pmids(cases: Iterable[Case]) -> list[str]:
  """Sorted distinct PMIDs the cases come from (e.g. to exclude them from the knowledge base)."""
  return sorted({case.pmid for case in cases if case.pmid})
