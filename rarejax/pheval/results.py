"""rarejax's ranked disease lists (an evaluation's cases.tsv) regrouped per phenopacket file.

The phenopacket file is the unit PhEval's post-processing names its results by.

rarejax names a case by its phenopacket's `id` (the file name when there is none); PhEval names
a result by the phenopacket's file name. `case_files` maps one to the other, `ranked_lists`
reads one method's candidates from cases.tsv.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import pathlib

from rarejax.evaluate import report


@dataclasses.dataclass(frozen=True)
class Ranked:
  """One candidate disease as rarejax ranked it."""
  disease_id: str
  label: str
  score: float


def phenopacket_files(phenopacket_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """The corpus's phenopacket files (PhEval reads FOLDER/NAME.json, no subfolders), sorted.

  Raises:
    FileNotFoundError: no such folder, or no .json file in it.
  """
  folder = pathlib.Path(phenopacket_dir)
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: no such folder; PhEval corpora keep their phenopackets in "
                            "TESTDATA_DIR/phenopackets/ (one GA4GH Phenopacket v2 JSON file each)")
  files = sorted(p for p in folder.glob("*.json") if p.is_file())
  if not files:
    raise FileNotFoundError(f"{folder}: no .json phenopackets inside; put one Phenopacket v2 JSON "
                            "file per case there")
  return files


def case_files(phenopacket_dir: str | pathlib.Path) -> dict[str, str]:
  """rarejax case id → phenopacket file stem, for every file that is a JSON object.

  A file that is not JSON is left out here: rarejax's reader skips it too (with a count in its
  report) and PhEval scores it as not found.

  Raises:
    ValueError: two files give the same case id (the `id` field), naming both.
  """
  ids: dict[str, pathlib.Path] = {}
  for path in phenopacket_files(phenopacket_dir):
    try:
      doc = json.loads(path.read_bytes())
    except (ValueError, OSError):
      continue
    if not isinstance(doc, dict):
      continue
    case_id = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else path.stem
    if case_id in ids:
      raise ValueError(f"{ids[case_id]} and {path} share the phenopacket id {case_id!r}: rarejax "
                       "names its results by that id; give each phenopacket a unique \"id\"")
    ids[case_id] = path
  return {case_id: path.stem for case_id, path in ids.items()}


def ranked_lists(cases_tsv: str | pathlib.Path, method: str) -> dict[str, list[Ranked]]:
  """Case id → the candidates `method` ranked for it, best first, from a report's cases.tsv.

  Candidates without a disease id (a model's answer entry that grounded to nothing) are left
  out; a case the method answered with no disease gets an empty list.

  Raises:
    FileNotFoundError: no cases.tsv (the run step did not finish).
    ValueError: cases.tsv lacks a rarejax report column, or has no row for `method`.
  """
  path = pathlib.Path(cases_tsv)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file; it is what the run step's `rarejax evaluate` "
                            "writes: run that step first (pheval run does)")
  lists: dict[str, list[Ranked]] = {}
  with open(path, newline="", encoding="utf-8") as stream:
    reader = csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = sorted(set(report.TSV_COLUMNS) - set(reader.fieldnames or ()))
    if missing:
      raise ValueError(f"{path}: not a rarejax cases.tsv (no column {missing[0]!r})")
    for row in reader:
      if row["method"] != method:
        continue
      ranked = lists.setdefault(row["case_id"], [])
      if row["disease_id"]:
        ranked.append(Ranked(row["disease_id"], row["label"], float(row["score"])))
  if not lists:
    raise ValueError(f"{path}: no row for method {method!r}; the run step ranked with another "
                     "method or no phenopacket could be read (see evaluate.log beside it)")
  return lists
