"""The honest split: cases are assigned to train/validation by publication, never case by case."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Sequence

from rarejax.cases.case import Case


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
  if not 0.0 <= validation_fraction <= 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
  return [dataclasses.replace(
      case, split="validation" if is_validation(publication_of(case), validation_fraction, seed)
      else "train") for case in cases]


def pmids(cases: Iterable[Case]) -> list[str]:
  """Sorted distinct PMIDs the cases come from (e.g. to exclude them from the knowledge base)."""
  return sorted({case.pmid for case in cases if case.pmid})
