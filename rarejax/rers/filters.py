"""Keep rules for RERS trajectories; every rule gives a recorded verdict for every response.

  correct             the grader (the one judgment) ranks a gold disease at most required_rank
  well_formed         the parser found no format problem
  no_feedback_phrase  no wording of the reflection turns (reflection.FEEDBACK_PHRASES) appears
  no_hint_copy        no run of more than max_copied_words words is copied from the reflection
                      turns the teacher was shown, unless the note holds the same run; disease
                      ids and the terms the turns list (disease names, finding, onset and
                      inheritance terms: reflection.turn_terms) cut runs, so what counts is
                      copied prose, not naming the facts the model also learned
  findings_supported  every HPO finding the reasoning mentions (rarejax.phenotypes.concepts; names
                      of the cited diseases are blanked first) is in the note, a less specific
                      form of a note finding, or annotated (present or absent, again allowing
                      less specific forms) for a disease the response cites: an answer entry or
                      an identifier written in the reasoning — except a finding the reflection
                      turns named (or a less specific form of one): the feedback lists the gold
                      disease's findings, so those are accepted from the note alone, and a
                      reflected answer cannot assert the hint's findings about the patient

Rejection-sampled responses (no reflection turn) pass no_hint_copy trivially; all other rules
apply to every response alike, so RERS and plain rejection sampling keep by the same standard.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Iterable, Sequence

from rarejax import knowledge
from rarejax.data import format as format_lib
from rarejax.evaluate import grader as grader_lib
from rarejax.knowledge import grounding
from rarejax.phenotypes import concepts
from rarejax.rers import reflection

RULES = ("correct", "well_formed", "no_feedback_phrase", "no_hint_copy", "findings_supported")
_WORD = re.compile(r"[^\W_]+")
_FEEDBACK = re.compile(r"(?<!\w)(?:" + "|".join(
    r"\s+".join(map(re.escape, p.split())) for p in reflection.FEEDBACK_PHRASES) + r")(?!\w)",
                       re.IGNORECASE)
_SHOWN = 3  # examples named in a verdict's detail


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """Thresholds of the keep rules.

  Attributes:
    required_rank: the gold disease must be at this rank or better (1: the top answer).
    max_copied_words: longest run of words a response may share with the reflection turns
      (runs the note also holds do not count).
    max_unsupported: findings the reasoning may mention without support (0: none).
  """
  required_rank: int = 1
  max_copied_words: int = 8
  max_unsupported: int = 0

  def __post_init__(self):
    if self.required_rank < 1 or self.max_copied_words < 1 or self.max_unsupported < 0:
      raise ValueError(f"FilterConfig needs required_rank >= 1, max_copied_words >= 1 and "
                       f"max_unsupported >= 0, got {self}")


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One rule's judgment of one response."""
  rule: str
  passed: bool
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class Judgment:
  """Every rule's verdict on one response; kept when all passed."""
  verdicts: tuple[Verdict, ...]

  @property
  def kept(self) -> bool:
    return all(v.passed for v in self.verdicts)

  @property
  def failed(self) -> tuple[str, ...]:
    return tuple(v.rule for v in self.verdicts if not v.passed)

  def passed(self, rule: str) -> bool:
    return next(v.passed for v in self.verdicts if v.rule == rule)

  def to_json(self) -> dict[str, dict[str, Any]]:
    return {v.rule: {"passed": v.passed, "detail": v.detail} for v in self.verdicts}


@dataclasses.dataclass(frozen=True)
class NoteContext:
  """What a response may cite from its case: the note and every finding it supports.

  Attributes:
    note: the note text the teacher read.
    supported: the note's HPO findings (recognized in the text, plus the structured findings
      it was written from) and all their ancestors.
  """
  note: str
  supported: frozenset[str]


def name_pattern(names: Iterable[str]) -> re.Pattern | None:
  """Case-insensitive whole-word alternation of `names` (longest first); None without names."""
  return _name_pattern(tuple(sorted({" ".join(n.split()) for n in names if n.strip()},
                                    key=lambda n: (-len(n), n))))


@functools.lru_cache(maxsize=256)
def _name_pattern(names: tuple[str, ...]) -> re.Pattern | None:
  if not names:
    return None
  body = "|".join(r"\s+".join(map(re.escape, n.split())) for n in names)
  return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


def _pieces(text: str, names: re.Pattern | None) -> Iterable[str]:
  """The text between the names and the disease ids it writes."""
  for piece in [text] if names is None else names.split(text):
    start = 0
    for _, begin, end in grounding.find_disease_ids(piece):
      yield piece[start:begin]
      start = end
    yield piece[start:]


def word_runs(text: str, n: int, names: re.Pattern | None = None) -> set[tuple[str, ...]]:
  """Every run of n consecutive lower-cased words; names and disease ids split the text."""
  out: set[tuple[str, ...]] = set()
  for piece in _pieces(text, names):
    words = _WORD.findall(piece.lower())
    out.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
  return out


def copied_runs(response: str, shown: str, note: str, n: int,
                names: re.Pattern | None = None) -> list[str]:
  """Runs of n words the response shares with `shown` that `note` does not hold (sorted)."""
  copied = word_runs(response, n, names) & word_runs(shown, n, names)
  return sorted(" ".join(run) for run in copied - word_runs(note, n, names))


class TrajectoryFilter:
  """Judges responses against the keep rules; build once per knowledge base (~2 s)."""

  def __init__(self, kb: knowledge.KnowledgeBase, config: FilterConfig = FilterConfig(),
               recognizer: concepts.ConceptRecognizer | None = None):
    self.kb = kb
    self.config = config
    self.recognizer = recognizer or concepts.ConceptRecognizer.from_knowledge(kb)
    self._known: dict[str, frozenset[str]] = {}

  def note_context(self, note: str, structured: Sequence[str] = ()) -> NoteContext:
    """The findings a response may take from this note (`structured`: the HPO ids it was
    rendered from, if any)."""
    found = self.recognizer.recognize(note)
    return NoteContext(note, self._closure((*found.observed, *found.excluded, *structured)))

  def _closure(self, hpo_ids: Iterable[str]) -> frozenset[str]:
    onto = self.kb.ontology
    out: set[str] = set()
    for hpo_id in hpo_ids:
      resolved = onto.resolve(hpo_id)
      if resolved:
        out |= onto.ancestors(resolved)
    return frozenset(out)

  def known_findings(self, disease_id: str) -> frozenset[str]:
    """Findings annotated for a disease (present or absent) and their ancestors."""
    if disease_id not in self._known:
      disease = self.kb.diseases.get(disease_id)
      rows = () if disease is None else (*disease.phenotypes, *disease.excluded)
      self._known[disease_id] = self._closure(a.hpo_id for a in rows)
    return self._known[disease_id]

  def judge(self, response: str, parsed: format_lib.ParsedAnswer,
            grade: grader_lib.GradeResult, context: NoteContext, shown: str = "",
            names: Sequence[str] = ()) -> Judgment:
    """Every rule's verdict on one response.

    Args:
      response: the response text (what would be kept).
      parsed, grade: its parse and the grader's judgment of it.
      context: the note the teacher read (`note_context`).
      shown: the reflection turns the teacher was shown before writing it ('' for none).
      names: the terms the turns list (reflection.turn_terms), which never count as copied.
    """
    return Judgment((self._correct(grade), _well_formed(parsed), _no_feedback_phrase(response),
                     self._no_hint_copy(response, context.note, shown, names),
                     self._findings_supported(parsed, grade, context, shown)))

  def _correct(self, grade: grader_lib.GradeResult) -> Verdict:
    rank = grade.gold_rank
    return Verdict("correct", rank is not None and rank <= self.config.required_rank,
                   f"gold rank {rank}, required <= {self.config.required_rank}")

  def _no_hint_copy(self, response: str, note: str, shown: str, names: Sequence[str]) -> Verdict:
    if not shown:
      return Verdict("no_hint_copy", True, "no reflection turn")
    n = self.config.max_copied_words + 1
    copied = copied_runs(response, shown, note, n, name_pattern(names))
    return Verdict("no_hint_copy", not copied,
                   f"{len(copied)} copied runs of {n} words" +
                   (f": {'; '.join(copied[:_SHOWN])}" if copied else ""))

  def _findings_supported(self, parsed: format_lib.ParsedAnswer, grade: grader_lib.GradeResult,
                          context: NoteContext, shown: str) -> Verdict:
    cited = [e.id for e in grade.ranked if e.id is not None]
    cited += [i for i, _, _ in grounding.find_disease_ids(parsed.reasoning)]
    cited_names = [e.entry.name for e in grade.ranked] + reflection.disease_names(self.kb, cited)
    pattern = name_pattern(cited_names)
    reasoning = parsed.reasoning if pattern is None else pattern.sub(" | ", parsed.reasoning)
    found = self.recognizer.recognize(reasoning)
    known = frozenset().union(*(self.known_findings(d) for d in dict.fromkeys(cited)))
    hinted = self._hinted(shown)
    unsupported = [h for h in dict.fromkeys((*found.observed, *found.excluded))
                   if h not in context.supported and (h not in known or h in hinted)]
    from_hint = sum(h in hinted for h in unsupported)
    names = [self.kb.ontology.name(h) for h in unsupported[:_SHOWN]]
    return Verdict("findings_supported", len(unsupported) <= self.config.max_unsupported,
                   f"{len(unsupported)} unsupported" +
                   (f" ({from_hint} named by the feedback)" if from_hint else "") +
                   (f": {', '.join(names)}" if names else ""))

  def _hinted(self, shown: str) -> frozenset[str]:
    """The findings the reflection turns name, with their less specific forms."""
    if not shown:
      return frozenset()
    found = self.recognizer.recognize(shown)
    return self._closure((*found.observed, *found.excluded))


def _well_formed(parsed: format_lib.ParsedAnswer) -> Verdict:
  return Verdict("well_formed", parsed.well_formed, ", ".join(parsed.problems))


def _no_feedback_phrase(response: str) -> Verdict:
  found = sorted({m.group(0).lower() for m in _FEEDBACK.finditer(response)})
  return Verdict("no_feedback_phrase", not found, ", ".join(found[:_SHOWN]))
