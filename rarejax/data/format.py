"""The one prompt/answer format: prompt builder, response formatter and a never-failing parser.

A response is a reasoning section and an answer section holding a ranked differential:

  <think>
  ...reasoning...
  </think>
  <answer>
  1. Marfan syndrome (OMIM:154700)
  2. Loeys-Dietz syndrome 1 (OMIM:609192)
  </answer>

`build_prompt` ends exactly where the response starts, so prompt + response is the training
text. `parse_response` accepts anything a model may write and reports what was wrong with it;
the grader turns a `ParsedAnswer` into grounded ids, metrics and rewards.

Instruction styles (INSTRUCTION_STYLES), one choice per experiment (DataSpec.instruction):
'full' opens the prompt with SYSTEM_INSTRUCTION, which describes the format in words — what a
pretrained instruction-following model needs. 'none' starts at 'Clinical note:': for a model
trained from scratch on this format the constant prefix teaches nothing (it learns the format
from the responses) and costs tokens in every example (about as many as the note itself).

Models whose chat template already opens the reasoning block may omit the leading `<think>`;
that is not a format problem. Pure Python (no TensorFlow).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from rarejax.knowledge import grounding

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
TASKS = ("differential", "final")
INSTRUCTION_STYLES = ("full", "none")  # module docstring

MAX_ENTRIES = 100  # entries kept after de-duplication; more is a problem, not an error
MAX_LINE_CHARS = 1000  # longer answer lines are cut before parsing (no name is this long)
MAX_ANSWER_LINES = 1000  # answer lines read at most; more is a problem, not an error

SYSTEM_INSTRUCTION = (
    "You are an expert clinical geneticist specialised in rare diseases. Read the clinical "
    "note and diagnose the patient. Reason step by step inside " + THINK_OPEN + " " +
    THINK_CLOSE + ": weigh the findings that support and argue against each candidate. Then "
    "write the answer inside " + ANSWER_OPEN + " " + ANSWER_CLOSE + " as a numbered list, one "
    "disease per line, most likely first, each with its OMIM or Orphanet identifier, e.g. "
    "'1. Marfan syndrome (OMIM:154700)'.")
_TASK_INSTRUCTIONS = {
    "differential": "List the {n} most likely rare diseases, ranked from most to least likely.",
    "final": "Give the single most likely diagnosis as a one-line list.",
}
RESPONSE_HEADER = "Response:\n"

# Problems reported by parse_response (any problem makes a response not well-formed).
THINK_UNCLOSED = "think_unclosed"
THINK_REPEATED = "think_repeated"
ANSWER_MISSING = "answer_missing"
ANSWER_UNCLOSED = "answer_unclosed"
ANSWER_REPEATED = "answer_repeated"
ANSWER_EMPTY = "answer_empty"
TAG_MISPLACED = "tag_misplaced"
TEXT_OUTSIDE_SECTIONS = "text_outside_sections"
LINES_NOT_ENTRIES = "lines_not_entries"
ENTRIES_UNNUMBERED = "entries_unnumbered"
NUMBERING_OUT_OF_ORDER = "numbering_out_of_order"
ENTRIES_DUPLICATED = "entries_duplicated"
TOO_MANY_ENTRIES = "too_many_entries"


def check_instruction(style: str, field: str = "instruction") -> str:
  """`style` when it is one of INSTRUCTION_STYLES; else a ValueError naming `field`."""
  if style not in INSTRUCTION_STYLES:
    raise ValueError(f"{field} must be one of {INSTRUCTION_STYLES}, got {style!r}")
  return style


def build_prompt(note: str, task: str = "differential", max_candidates: int = 10,
                 instruction: str = "full") -> str:
  """[System instruction +] clinical note + task instruction, ending where the response starts.

  `instruction` is the style (module docstring): 'full' opens with SYSTEM_INSTRUCTION, 'none'
  with the clinical note.
  """
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
  check_instruction(instruction)
  if max_candidates < 1:
    raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
  if not note or not note.strip():
    raise ValueError("note is empty: a prompt needs the clinical note text")
  task_instruction = _TASK_INSTRUCTIONS[task].format(n=max_candidates)
  prompt = (f"Clinical note:\n{note.strip()}\n\nTask: {task_instruction}\n\n"
            f"{RESPONSE_HEADER}")
  return prompt if instruction == "none" else f"{SYSTEM_INSTRUCTION}\n\n{prompt}"


def format_entry(rank: int, name: str, disease_id: str | None) -> str:
  """One answer line: '1. Marfan syndrome (OMIM:154700)'; '1. Name' without an id; '1. OMIM:154700'
  without a name (the 'id' answer style of models trained from scratch: the id is one token)."""
  name = " ".join(name.split())
  if not name and not disease_id:
    raise ValueError("an answer entry needs a name or an id")
  if not name:
    return f"{rank}. {disease_id}"
  return f"{rank}. {name} ({disease_id})" if disease_id else f"{rank}. {name}"


def format_response(reasoning: str, ranked: Sequence[tuple[str, str | None]]) -> str:
  """A well-formed response from reasoning text and a ranked [(name, id or None)] list."""
  for part in (reasoning, *(name for name, _ in ranked)):
    for tag in TAGS:
      if tag in part:
        raise ValueError(f"{tag!r} inside the reasoning or a name would break the format: "
                         f"{part[:80]!r}")
  if not ranked:
    raise ValueError("ranked is empty: the answer needs at least one (name, id) entry")
  lines = [format_entry(r, name, disease_id) for r, (name, disease_id) in enumerate(ranked, 1)]
  answer = "\n".join(lines)
  return (f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n"
          f"{ANSWER_OPEN}\n{answer}\n{ANSWER_CLOSE}")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One answer entry: 1-based rank after de-duplication, name, written id, original line."""
  rank: int
  name: str
  id: str | None
  raw_line: str


@dataclasses.dataclass(frozen=True)
class ParsedAnswer:
  """What parse_response read. `well_formed` is True exactly when `problems` is empty."""
  reasoning: str
  entries: tuple[Entry, ...]
  well_formed: bool
  problems: tuple[str, ...]
  truncated: bool


# '1.', '1)', '(1)', '1:', '#1', or a bullet, followed by whitespace.
_MARKER_RE = re.compile(
    r"\s*(?:\(?(?P<number>\d{1,4})[.):\]]|#(?P<hash>\d{1,4})[.):]?|[-*•·+])\s+")


@dataclasses.dataclass(frozen=True)
class _Line:
  number: int | None  # the written number, None for bullets and bare lines
  marked: bool  # numbered or bulleted
  name: str
  id: str | None
  raw: str


def _as_text(text) -> str:
  if text is None:
    return ""
  if isinstance(text, (bytes, bytearray)):
    return bytes(text).decode("utf-8", errors="replace")
  return text if isinstance(text, str) else str(text)


def _marker_number(marker: re.Match | None) -> int | None:
  number = marker and (marker.group("number") or marker.group("hash"))
  return int(number) if number else None


def _number(raw: str) -> int | None:
  """The number of a numbered line ('3. ...' → 3), else None."""
  return _marker_number(_MARKER_RE.match(raw[:20] + " "))


def _read_line(raw: str) -> _Line | None:
  """Parses one answer line; None for blank lines, headers ('Differential:') and stray tags."""
  line = raw[:MAX_LINE_CHARS]
  for tag in TAGS:
    line = line.replace(tag, " ")
  line = line.replace("**", "").replace("__", "").strip()
  marker = _MARKER_RE.match(line + " ")
  body = line[marker.end():] if marker else line
  name, disease_id = grounding.split_name_and_id(body)
  if not name and disease_id is None:
    return None
  if marker is None and disease_id is None and body.endswith(":"):
    return None
  return _Line(number=_marker_number(marker), marked=marker is not None, name=name, id=disease_id,
               raw=raw[:MAX_LINE_CHARS])


def _entries(lines: Sequence[_Line], max_entries: int, problems: list[str]) -> tuple[Entry, ...]:
  """Keeps marked lines when some are marked, checks numbering, de-duplicates, caps the count."""
  if any(line.marked for line in lines):
    if not all(line.marked for line in lines):
      problems.append(LINES_NOT_ENTRIES)
    lines = [line for line in lines if line.marked]
  if len(lines) > 1 and any(line.number is None for line in lines):
    problems.append(ENTRIES_UNNUMBERED)
  numbers = [line.number for line in lines if line.number is not None]
  if numbers and numbers != list(range(1, len(numbers) + 1)):
    problems.append(NUMBERING_OUT_OF_ORDER)
  kept: list[_Line] = []
  seen_ids: set[str] = set()
  seen_names: dict[str, str | None] = {}
  for line in lines:
    key = grounding.normalize(line.name)
    if (line.id is not None and line.id in seen_ids) or (
        key and key in seen_names and (line.id is None or seen_names[key] is None)):
      if ENTRIES_DUPLICATED not in problems:
        problems.append(ENTRIES_DUPLICATED)
      continue
    if line.id is not None:
      seen_ids.add(line.id)
    if key:
      seen_names.setdefault(key, line.id)
    kept.append(line)
  if len(kept) > max_entries:
    if TOO_MANY_ENTRIES not in problems:
      problems.append(TOO_MANY_ENTRIES)
    kept = kept[:max_entries]
  return tuple(Entry(rank=r, name=line.name, id=line.id, raw_line=line.raw)
               for r, line in enumerate(kept, 1))


def _read_lines(raws: Sequence[str], problems: list[str]) -> list[_Line]:
  """Parses up to MAX_ANSWER_LINES lines, skipping blank lines and headers."""
  if len(raws) > MAX_ANSWER_LINES:
    problems.append(TOO_MANY_ENTRIES)
    raws = raws[:MAX_ANSWER_LINES]
  return [line for line in map(_read_line, raws) if line is not None]


def _last_numbered_list(text: str, problems: list[str]) -> list[_Line]:
  """The numbered lines of the last list in `text` that starts at '1.' (answer fallback)."""
  raws = text.split("\n")
  start = next((i for i in range(len(raws) - 1, -1, -1) if _number(raws[i]) == 1), None)
  if start is None:
    return []
  return _read_lines([raw for raw in raws[start:] if _number(raw) is not None], problems)


def _answer_lines(answer: str, cut: bool, problems: list[str]) -> list[_Line]:
  """Answer lines; when the text was cut, an unfinished last line is dropped unless it ends
  with ')' (a cut '(OMIM:1547' must not read as a different id)."""
  raws = answer.split("\n")
  if cut and raws[-1].strip() and not raws[-1].rstrip().endswith(")"):
    raws = raws[:-1]
  return _read_lines(raws, problems)


def _split_reasoning(text: str, problems: list[str]) -> tuple[str, str, bool]:
  """(reasoning, text after it, reasoning was cut off), tolerating missing or repeated tags."""
  close = text.find(THINK_CLOSE)
  answer_at = text.find(ANSWER_OPEN)
  if close < 0 or (0 <= answer_at < close):
    end = answer_at if answer_at >= 0 else len(text)
    if THINK_OPEN in text or answer_at >= 0:
      problems.append(THINK_UNCLOSED)
    reasoning, rest = text[:end], text[end:]
    cut = answer_at < 0 and THINK_OPEN in text
  else:
    reasoning, rest, cut = text[:close], text[close + len(THINK_CLOSE):], False
  opened = reasoning.find(THINK_OPEN)
  if opened >= 0:
    if reasoning[:opened].strip():
      problems.append(TEXT_OUTSIDE_SECTIONS)
    reasoning = reasoning[opened + len(THINK_OPEN):]
  if THINK_OPEN in reasoning or THINK_OPEN in rest or THINK_CLOSE in rest:
    problems.append(THINK_REPEATED)
  return reasoning.strip(), rest, cut


def parse_response(text: str, max_entries: int = MAX_ENTRIES) -> ParsedAnswer:
  """Parses a model response. Never raises; every deviation from the format is a `problem`.

  The answer is the last `<answer>` section after the reasoning. Without one, the entries fall
  back to the last numbered list ('1. ...') outside the reasoning — or anywhere, when the text
  has no tags at all — and the answer is not well-formed. Entries are numbered or bulleted lines
  (bare lines when none is marked), each 'Name (ID)', 'Name - ID', 'ID Name', 'Name' or 'ID';
  repeats (same id, or same normalized name) keep their first occurrence.

  `truncated` is True when the text ends inside an open section (reasoning or answer).
  """
  text = _as_text(text).replace("\r\n", "\n").replace("\r", "\n")
  problems: list[str] = []
  has_tags = any(tag in text for tag in TAGS)
  reasoning, rest, truncated = _split_reasoning(text, problems)
  start = rest.rfind(ANSWER_OPEN)
  if start < 0:
    if not truncated:
      problems.append(ANSWER_MISSING)
    lines = [] if truncated else _last_numbered_list(rest if has_tags else text, problems)
  else:
    if rest.count(ANSWER_OPEN) > 1:
      problems.append(ANSWER_REPEATED)
    if rest[:rest.find(ANSWER_OPEN)].strip() and TEXT_OUTSIDE_SECTIONS not in problems:
      problems.append(TEXT_OUTSIDE_SECTIONS)
    body = rest[start + len(ANSWER_OPEN):]
    end = body.find(ANSWER_CLOSE)
    if end < 0:
      problems.append(ANSWER_UNCLOSED)
      truncated = True
    elif body[end + len(ANSWER_CLOSE):].strip() and TEXT_OUTSIDE_SECTIONS not in problems:
      problems.append(TEXT_OUTSIDE_SECTIONS)
    answer = body if end < 0 else body[:end]
    if any(tag in answer for tag in TAGS):
      problems.append(TAG_MISPLACED)
    lines = _answer_lines(answer, end < 0, problems)
  entries = _entries(lines, max_entries, problems)
  if not entries and ANSWER_MISSING not in problems and not truncated:
    problems.append(ANSWER_EMPTY)
  return ParsedAnswer(reasoning=reasoning, entries=entries, well_formed=not problems,
                      problems=tuple(problems), truncated=truncated)
