"""Disease annotations from phenotype.hpoa: phenotypes with frequencies, onset, inheritance, references."""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Iterable

DEFAULT_FREQUENCY = 0.5

# HPO frequency terms mapped to the midpoint of the range they stand for.
FREQUENCY_TERMS = {
    "HP:0040280": 1.0,    # Obligate (100%)
    "HP:0040281": 0.895,  # Very frequent (80-99%)
    "HP:0040282": 0.545,  # Frequent (30-79%)
    "HP:0040283": 0.17,   # Occasional (5-29%)
    "HP:0040284": 0.025,  # Very rare (1-4%)
    "HP:0040285": 0.0,    # Excluded (0%)
}
_HPOA_COLUMNS = ("database_id", "disease_name", "qualifier", "hpo_id", "reference", "evidence",
                 "onset", "frequency", "sex", "modifier", "aspect", "biocuration")


@dataclasses.dataclass(frozen=True, slots=True)
class Annotation:
  """One phenotype.hpoa row about a phenotype of a disease."""
  hpo_id: str
  frequency: float | None = None
  onset: str | None = None
  sex: str | None = None
  evidence: str = ""
  references: tuple[str, ...] = ()
  modifiers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Disease:
  """A disease with its phenotype profile and (optionally) definition and synonyms."""
  id: str
  name: str
  phenotypes: tuple[Annotation, ...] = ()
  excluded: tuple[Annotation, ...] = ()
  inheritance: tuple[str, ...] = ()
  onsets: tuple[str, ...] = ()
  definition: str = ""
  synonyms: tuple[str, ...] = ()
  xrefs: tuple[str, ...] = ()

  def frequency_of(self, hpo_id: str) -> float | None:
    """Mean annotated frequency of a phenotype over its rows; None if not annotated with one."""
    values = [a.frequency for a in self.phenotypes if a.hpo_id == hpo_id and a.frequency is not None]
    return sum(values) / len(values) if values else None

  def phenotype_ids(self) -> tuple[str, ...]:
    """Distinct annotated phenotype ids in file order."""
    return tuple(dict.fromkeys(a.hpo_id for a in self.phenotypes))


class HpoaFormatError(ValueError):
  """phenotype.hpoa could not be read; the message names the file, line and field."""


def parse_frequency(text: str) -> float | None:
  """Frequency column → number in [0, 1]: an HPO frequency term, 'n/m' or 'x%'; None when empty."""
  text = text.strip()
  if not text:
    return None
  if text in FREQUENCY_TERMS:
    return FREQUENCY_TERMS[text]
  if match := re.fullmatch(r"(\d+)\s*/\s*(\d+)", text):
    num, den = int(match[1]), int(match[2])
    return min(num / den, 1.0) if den else None
  if match := re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text):
    return min(float(match[1]) / 100.0, 1.0)
  raise ValueError(f"unrecognised frequency {text!r} (want HP:00402xx, n/m or x%)")


@dataclasses.dataclass(frozen=True)
class HpoaRelease:
  """Everything read from one phenotype.hpoa file, after exclusions."""
  version: str
  diseases: dict[str, Disease]
  n_rows: int
  n_excluded_rows: int


def _pmids_of(reference: str) -> set[str]:
  return {r.strip() for r in reference.split(";") if r.strip().startswith("PMID:")}


def read_hpoa(path: str | os.PathLike, exclude_pmids: Iterable[str] = ()) -> HpoaRelease:
  """Reads phenotype.hpoa, dropping every row whose reference cites one of `exclude_pmids`."""
  excluded_refs = {p if p.startswith("PMID:") else f"PMID:{p}" for p in exclude_pmids}
  names: dict[str, str] = {}
  rows: dict[str, dict[str, list]] = collections.defaultdict(
      lambda: {"P": [], "NOT": [], "I": [], "C": []})
  version, n_rows, n_excluded = "unknown", 0, 0
  with open(path, encoding="utf-8") as stream:
    for line_no, line in enumerate(stream, 1):
      if line.startswith("#"):
        if line.startswith("#version:"):
          version = line.split(":", 1)[1].strip()
        continue
      fields = line.rstrip("\n").split("\t")
      if fields[0] == "database_id":
        continue
      if len(fields) != len(_HPOA_COLUMNS):
        raise HpoaFormatError(f"{path}:{line_no}: expected {len(_HPOA_COLUMNS)} tab-separated "
                              f"columns {_HPOA_COLUMNS}, found {len(fields)}")
      row = dict(zip(_HPOA_COLUMNS, fields))
      n_rows += 1
      if excluded_refs and _pmids_of(row["reference"]) & excluded_refs:
        n_excluded += 1
        continue
      disease_id = row["database_id"].replace("ORPHANET:", "ORPHA:")
      names.setdefault(disease_id, row["disease_name"])
      entry = rows[disease_id]  # created even when only modifier (M/H) rows exist
      aspect = row["aspect"]
      if aspect == "P":
        try:
          frequency = parse_frequency(row["frequency"])
        except ValueError as err:
          raise HpoaFormatError(f"{path}:{line_no}: field 'frequency': {err}") from None
        annotation = Annotation(
            hpo_id=row["hpo_id"], frequency=frequency, onset=row["onset"] or None,
            sex=row["sex"].upper() or None, evidence=row["evidence"],
            references=tuple(r for r in row["reference"].split(";") if r),
            modifiers=tuple(m for m in row["modifier"].split(";") if m))
        entry["NOT" if row["qualifier"] == "NOT" else "P"].append(annotation)
      elif aspect in ("I", "C"):
        entry[aspect].append(row["hpo_id"])
  diseases = {
      d: Disease(id=d, name=names[d], phenotypes=tuple(r["P"]), excluded=tuple(r["NOT"]),
                 inheritance=tuple(dict.fromkeys(r["I"])), onsets=tuple(dict.fromkeys(r["C"])))
      for d, r in rows.items()}
  return HpoaRelease(version, diseases, n_rows, n_excluded)
