"""Narrative case texts: INI-like files with [source], [diagnosis] and one or more [text] sections.

Layout (../shared/data/case-texts/dev/*.txt)::

  [source]
  pmid = PMID:16962354
  title = ...
  [diagnosis]
  disease_id = OMIM:142946
  disease_label = Holoprosencephaly 4
  [text]
  A male proband presenting with ...
  [text]            <- optional further patients of the same publication

Everything after a `[text]` line up to the next `[text]` line is one patient's note.
"""
from __future__ import annotations

import os
import pathlib
import re

from rarejax.cases.case import Case, CaseFormatError, ReadReport

_HEADER = re.compile(r"\[(source|diagnosis|text)\]\s*")
_DISEASE_ID = re.compile(r"[A-Za-z][\w.-]*:\S+")
_PMID = re.compile(r"(?:PMID:)?\s*(\d+)")


def parse_text_cases(text: str, where: str = "<string>") -> list[Case]:
  """Parses one case-text document into one Case per [text] section.

  Raises:
    CaseFormatError: a missing or malformed section or key, or an empty note.
  """
  fields, notes = _sections(text, where)
  gold_ids = tuple(i for i in re.split(r"[\s,;]+", fields.get("diagnosis.disease_id", "")) if i)
  if not gold_ids:
    raise CaseFormatError(where, "diagnosis.disease_id", "missing disease id")
  for gold in gold_ids:
    if not _DISEASE_ID.fullmatch(gold):
      raise CaseFormatError(where, "diagnosis.disease_id", "not a disease id",
                            f"got {gold!r}, want e.g. OMIM:154700")
  pmid = _pmid(fields.get("source.pmid", ""), where)
  stem = pathlib.PurePath(where).stem
  label = fields.get("diagnosis.disease_label", "")
  cases = []
  for i, note in enumerate(notes):
    if not note:
      raise CaseFormatError(where, f"text[{i}]", "empty note")
    cases.append(Case(
        id=stem if len(notes) == 1 else f"{stem}_{i + 1}", note=note, gold_ids=gold_ids,
        source="text", pmid=pmid,
        provenance={"file": where, "title": fields.get("source.title", ""),
                    "gold_labels": [label] if label else []}))
  return cases


def read_text_cases(source: str | os.PathLike) -> tuple[list[Case], ReadReport]:
  """Reads a case-text file or every *.txt under a directory; bad files are skipped and reported."""
  source = pathlib.Path(source)
  if not source.exists():
    raise FileNotFoundError(f"case-text source not found: {source}")
  if source.is_dir():
    paths = sorted(p for p in source.rglob("*.txt") if not p.is_dir())
  else:
    paths = [source]
  report = ReadReport()
  cases = []
  for path in paths:
    try:
      cases.extend(read_text_file(path))
    except CaseFormatError as err:
      report.skip(err)
    except OSError as err:  # e.g. a dangling link or a file without read permission
      report.skip(CaseFormatError(str(path), "<file>", "unreadable",
                                  f"{type(err).__name__}: {err}"))
  report.n_read = len(cases)
  return cases, report


def read_text_file(path: str | os.PathLike) -> list[Case]:
  """Reads one case-text file (UTF-8); raises CaseFormatError naming the file and field."""
  data = pathlib.Path(path).read_bytes()
  try:
    text = data.decode("utf-8-sig")  # a leading BOM is fine
  except UnicodeDecodeError as err:
    raise CaseFormatError(str(path), "<file>", "invalid UTF-8", f"byte {err.start}") from None
  return parse_text_cases(text, str(path))


def _sections(text: str, where: str) -> tuple[dict[str, str], list[str]]:
  """('section.key' → value for [source]/[diagnosis], [note per [text] section])."""
  fields: dict[str, str] = {}
  notes: list[list[str]] = []
  section = None
  for line_no, line in enumerate(text.splitlines(), 1):
    header = _HEADER.fullmatch(line.strip()) if not notes or line.strip() == "[text]" else None
    if header:
      section = header[1]
      if section == "text":
        notes.append([])
    elif section == "text":
      notes[-1].append(line)
    elif line.strip():
      if section is None or "=" not in line:
        raise CaseFormatError(f"{where}:{line_no}", section or "<header>",
                              "expected 'key = value' under [source] or [diagnosis]",
                              f"got {line.strip()[:60]!r}")
      key, value = line.split("=", 1)
      fields[f"{section}.{key.strip()}"] = value.strip()
  if not notes:
    raise CaseFormatError(where, "[text]", "missing [text] section")
  return fields, ["\n".join(n).strip() for n in notes]


def _pmid(value: str, where: str) -> str | None:
  """'PMID:123' or '123' → 'PMID:123'; '' → None."""
  if not value:
    return None
  match = _PMID.fullmatch(value.strip())
  if not match:
    raise CaseFormatError(where, "source.pmid", "not a PubMed id", f"got {value!r}, want PMID:123")
  return f"PMID:{match[1]}"
