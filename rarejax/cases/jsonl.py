"""Generic JSON Lines cases: one {id, note, gold_ids, ...Case fields} object per line, read and written."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

from rarejax import atomic_io
from rarejax.cases.case import Case, CaseFormatError, ReadReport, decode_json


def read_jsonl(path: str | os.PathLike) -> tuple[list[Case], ReadReport]:
  """Reads cases from a JSONL file; bad lines are skipped and reported (blank lines ignored).

  Each line is a JSON object with at least `id` (str), `note` (str) and `gold_ids` (list of str),
  optionally any other Case field; `source` defaults to 'jsonl'.
  """
  report = ReadReport()
  cases = []
  with open(path, "rb") as stream:
    for line_no, raw in enumerate(stream, 1):
      if not raw.strip():
        continue
      try:
        cases.append(parse_jsonl_line(raw, f"{path}:{line_no}"))
      except CaseFormatError as err:
        report.skip(err)
  report.n_read = len(cases)
  return cases, report


def parse_jsonl_line(raw: bytes | str, where: str) -> Case:
  """One JSONL line → Case; raises CaseFormatError naming `where` (file:line) and the field."""
  obj = decode_json(raw, where, "<line>")
  if isinstance(obj, dict):
    obj = {"source": "jsonl", **obj}
  return Case.from_json(obj, where)


def write_json_lines(records: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
  """Writes one JSON object per line (UTF-8, sorted keys) atomically; returns the count."""
  lines = [json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records]
  atomic_io.write_atomic(path, "".join(lines))
  return len(lines)


def write_jsonl(cases: Iterable[Case], path: str | os.PathLike) -> int:
  """Writes cases one JSON object per line (atomically); returns the number written."""
  return write_json_lines((case.to_json() for case in cases), path)
