"""Optional extra knowledge sources: Orphanet (ORDO JSON) definitions/synonyms and MONDO SSSOM maps."""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os

_ORPHA_IRI = "http://www.orpha.net/ORDO/Orphanet_"
_PREFIXES = {"Orphanet": "ORPHA", "ORPHANET": "ORPHA", "OMIM": "OMIM", "MONDO": "MONDO"}


class SourceFormatError(ValueError):
  """An extra knowledge source could not be read; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class OrphanetEntry:
  """One Orphanet disease from ORDO: label, definition and synonyms."""
  id: str
  label: str
  definition: str
  synonyms: tuple[str, ...]


def normalize_curie(curie: str) -> str:
  """'Orphanet:558' → 'ORPHA:558'; other CURIE prefixes unchanged."""
  prefix, _, local = curie.partition(":")
  return f"{_PREFIXES.get(prefix, prefix)}:{local}"


def read_ordo(path: str | os.PathLike) -> dict[str, OrphanetEntry]:
  """Reads the ORDO OBO-graph JSON (optionally gzipped) into ORPHA id → entry."""
  opener = gzip.open if os.fspath(path).endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8") as stream:
      nodes = json.load(stream)["graphs"][0]["nodes"]
  except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
    raise SourceFormatError(f"{path}: not an ORDO OBO-graph JSON file (need graphs[0].nodes): "
                            f"{err}") from err
  entries = {}
  for node in nodes:
    iri = node.get("id", "")
    if not iri.startswith(_ORPHA_IRI) or "lbl" not in node:
      continue
    meta = node.get("meta") or {}
    orpha_id = "ORPHA:" + iri[len(_ORPHA_IRI):]
    entries[orpha_id] = OrphanetEntry(
        id=orpha_id, label=node["lbl"],
        definition=(meta.get("definition") or {}).get("val", ""),
        synonyms=tuple(s["val"] for s in meta.get("synonyms", ()) if "val" in s))
  return entries


@dataclasses.dataclass(frozen=True)
class ExactMatch:
  """One skos:exactMatch row of a MONDO SSSOM file."""
  mondo_id: str
  mondo_label: str
  other_id: str
  other_label: str


def read_sssom(path: str | os.PathLike) -> list[ExactMatch]:
  """Reads the skos:exactMatch rows of a MONDO SSSOM TSV (comment header lines start with '#')."""
  try:
    with open(path, encoding="utf-8") as stream:
      lines = [line for line in stream if not line.startswith("#")]
  except (OSError, UnicodeDecodeError) as err:
    raise SourceFormatError(f"{path}: cannot read SSSOM TSV: {err}") from err
  reader = csv.DictReader(lines, delimiter="\t")
  needed = {"subject_id", "predicate_id", "object_id"}
  if not reader.fieldnames or not needed <= set(reader.fieldnames):
    raise SourceFormatError(f"{path}: SSSOM header must have columns {sorted(needed)}, "
                            f"found {reader.fieldnames}")
  return [ExactMatch(row["subject_id"], row.get("subject_label") or "",
                     normalize_curie(row["object_id"]), row.get("object_label") or "")
          for row in reader if row["predicate_id"] == "skos:exactMatch"]
