"""HPO concept recognition over a clinical note: the text → phenotype-ids pipeline classical rankers need.

This is the pipeline the paper argues against (a model reading the note directly), built well
enough to be a fair baseline:

  note ─words─> normalized tokens ─token trie─> candidate mentions ─longest, non-overlapping─>
    mentions ─NegEx-style cues─> negated or not ─> observed / excluded HPO ids

* Dictionary: the label and synonyms of every current term under 'Phenotypic abnormality'
  (HP:0000118): EXACT synonyms (layperson, UK spelling and plural forms included), RELATED
  ones optionally, abbreviations optionally. Labels written 'A, B' ('Intellectual
  disability, severe') also match as 'B A'. When one phrase names several terms, the label
  beats an exact synonym beats a layperson/spelling variant beats a related synonym, then
  the more general term wins (the safer guess), then the smaller id.
* Normalization (applied to the dictionary and the note alike): case, accents, punctuation
  and hyphens, the article 'the', plurals ('seizures', 'abnormalities', 'vertebrae',
  'exostoses') and UK spellings ('haemorrhage', 'oedema', 'tumour', 'paralyse', 'centre').
  Matching works on whole tokens, so a phrase never matches inside a longer word.
* Negation: a pre-cue ('no', 'denies', 'without', 'negative for', 'absence of', 'does not
  have', ...) negates the mentions after it in the same clause; a post-cue ('was ruled out',
  'were absent', ...) the mentions before it. A scope ends at sentence punctuation (. ; : ! ?),
  a blank line or a bulleted line, a terminator ('but', 'however', 'although', 'has', ...), or
  after `negation_window` words that are neither part of a mention nor list glue ('and',
  'or', ','). Pseudo-negations ('no increase', 'not only') negate nothing. A section header
  'Pertinent negatives:' negates everything up to the next blank line.
A term mentioned both affirmed and negated counts as observed.

Negation is its own step (`NegationDetector`), so that another recognizer's mentions get the same
cues and scopes: `recognizers.make_recognizer` builds either of RECOGNIZERS, this module's
dictionary ('rarejax') or FastHPOCR's index with this negation ('fasthpocr',
rarejax.phenotypes.fasthpocr).
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import re
import unicodedata
from typing import Any, Iterable, Protocol, Sequence

from rarejax import knowledge
from rarejax.knowledge import ontology as ontology_lib

PRE_NEGATION = (
    "no", "not", "without", "denies", "denied", "deny", "negative for", "absence of",
    "no evidence of", "no sign of", "no signs of", "no history of", "free of", "never had",
    "lack of", "lacks", "lacked", "neither", "there is no", "there was no", "there were no",
    "does not have", "do not have", "did not have", "does not show", "did not show", "not have",
    "showed no", "shows no", "revealed no")
POST_NEGATION = (
    "was ruled out", "were ruled out", "is ruled out", "are ruled out", "ruled out",
    "was excluded", "were excluded", "is absent", "was absent", "are absent", "were absent",
    "was not seen", "were not seen", "not seen", "was not observed", "were not observed",
    "not observed", "was not present", "were not present", "not present", "not detected",
    "was negative", "were negative", "is negative", "are negative", "unlikely")
PSEUDO_NEGATION = (
    "no increase", "no change", "no significant change", "not only", "not necessarily",
    "without difficulty", "no further", "not certain if", "not certain whether",
    "gram negative", "no longer", "not be ruled out", "cannot be ruled out", "not ruled out",
    "not been ruled out", "could not be ruled out")
TERMINATORS = (
    "but", "however", "although", "though", "yet", "nevertheless", "except", "apart from",
    "aside from", "whereas", "while", "which", "who", "because", "secondary to", "due to",
    "has", "have", "had", "presents", "presented", "presenting", "is noted", "was noted")
SECTION_NEGATION = ("pertinent negatives", "negative findings", "pertinent negative")
LIST_GLUE = frozenset({"and", "or", "nor", "any", "other", "also"})
STOPWORDS = frozenset({"the"})

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE_BREAK = re.compile(r"[.;:!?]|\n[ \t]*\n|\n[ \t]*[-*•·]")
_INVERTED = re.compile(r"^([^,]+), ([^,]+)$")
_PRE, _POST, _PSEUDO, _STOP, _SECTION = "pre", "post", "pseudo", "stop", "section"
_END = ""  # trie key marking the end of a phrase (no token is empty)

# Dictionary priorities (lower wins when one phrase names several terms).
_LABEL, _EXACT, _VARIANT, _RELATED = 0, 1, 2, 3
_VARIANT_KINDS = ("layperson", "uk_spelling", "plural_form")
RECOGNIZERS = ("rarejax", "fasthpocr")


@dataclasses.dataclass(frozen=True)
class Mention:
  """One recognized phrase: the HPO id, character span [start, end) in the note, text, negation."""
  hpo_id: str
  start: int
  end: int
  text: str
  negated: bool


@dataclasses.dataclass(frozen=True)
class Recognized:
  """Distinct HPO ids affirmed (observed) and negated (excluded), in note order, and the mentions."""
  observed: tuple[str, ...]
  excluded: tuple[str, ...]
  mentions: tuple[Mention, ...]

  @classmethod
  def from_mentions(cls, mentions: Sequence[Mention]) -> Recognized:
    """Observed and excluded ids of note-ordered mentions; affirmed anywhere means observed."""
    observed = tuple(dict.fromkeys(m.hpo_id for m in mentions if not m.negated))
    excluded = tuple(dict.fromkeys(m.hpo_id for m in mentions
                                   if m.negated and m.hpo_id not in observed))
    return cls(observed, excluded, tuple(mentions))


class Recognizer(Protocol):
  """What the text pipeline needs of a concept recognizer (this module's, or `fasthpocr`'s)."""
  name: str  # 'rarejax' or 'fasthpocr' (RECOGNIZERS)
  config: Any  # a dataclass: what the report records

  def recognize(self, note: str) -> Recognized:
    ...


@dataclasses.dataclass(frozen=True)
class RecognizerConfig:
  """What the dictionary holds and how far a negation reaches.

  Attributes:
    related: also match RELATED-scope synonyms (more recall, less precision).
    abbreviations: also match abbreviation synonyms ('ASD', 'PDA'; often ambiguous).
    negation_window: words, besides mentions and list glue, that a cue reaches across.
    min_chars: shortest phrase kept in the dictionary (normalized characters, no spaces).
  """
  related: bool = False
  abbreviations: bool = False
  negation_window: int = 5
  min_chars: int = 3

  def __post_init__(self):
    if self.negation_window < 0 or self.min_chars < 1:
      raise ValueError(f"RecognizerConfig needs negation_window >= 0 and min_chars >= 1, got "
                       f"{self.negation_window}, {self.min_chars}")


@functools.lru_cache(maxsize=1 << 17)
def normalize_word(word: str) -> str:
  """Lower-cased, accent-free, singular, US-spelled form of one word ('Haemorrhages' → 'hemorrhage')."""
  w = "".join(c for c in unicodedata.normalize("NFKD", word.lower())
              if not unicodedata.combining(c))
  if len(w) <= 3 or not w.isalpha():
    return w
  w = _singular(w)
  return _us_spelling(w) if len(w) > 4 else w


def _singular(w: str) -> str:
  """Plural → singular for the regular and the common Greek/Latin endings."""
  if w.endswith("ies") and len(w) > 4:
    return w[:-3] + "y"
  if w.endswith("oses") and len(w) > 6:
    return w[:-4] + "osis"
  if w.endswith(("sses", "xes", "ches", "shes")):
    return w[:-2]
  if w.endswith("ae"):
    return w[:-1]
  if w.endswith("s") and not w.endswith(("ss", "us", "is", "ys")):
    return w[:-1]
  return w


def _us_spelling(w: str) -> str:
  """UK → US spelling: ae/oe between consonants (haem, oedema, foetal), -our, -ise, -yse, -tre."""
  w = re.sub(r"(?<![aeiou])(?:ae|oe)(?=[^aeiou])", "e", w)
  w = re.sub(r"oea$", "ea", w)  # diarrhoea
  w = re.sub(r"(?<=[^aeiou])our$", "or", w)  # tumour, behaviour (not 'four', 'hour')
  w = re.sub(r"(?<=.{3})is(e|ed|ing|ation)$", r"iz\1", w)
  w = re.sub(r"ys(e|ed|ing)$", r"yz\1", w)
  return re.sub(r"(?<=[^aeiou])tre$", "ter", w)


_Token = tuple[str, int, int]  # (normalized word, start char, end char)
_Span = tuple[int, int, str]  # (start token, end token, hpo id) of a mention


def tokenize(text: str) -> list[_Token]:
  """(normalized word, start, end) for every word of `text` except stopwords."""
  out = []
  for match in _WORD.finditer(text):
    word = normalize_word(match.group())
    if word not in STOPWORDS:
      out.append((word, match.start(), match.end()))
  return out


def phrase_key(text: str) -> tuple[str, ...]:
  """The normalized token sequence a phrase is matched by."""
  return tuple(word for word, _, _ in tokenize(text))


class _Trie:
  """Token-sequence trie: phrase → value, queried for every phrase starting at a position."""

  def __init__(self):
    self.root: dict = {}

  def add(self, key: Sequence[str], value) -> None:
    node = self.root
    for token in key:
      node = node.setdefault(token, {})
    node.setdefault(_END, []).append(value)

  def matches_at(self, tokens: Sequence[str], i: int) -> list[tuple[int, list]]:
    """(end token index, values) of every phrase starting at token i, shortest first."""
    out, node = [], self.root
    for j in range(i, len(tokens)):
      node = node.get(tokens[j])
      if node is None:
        break
      if _END in node:
        out.append((j + 1, node[_END]))
    return out


def _cue_trie() -> _Trie:
  trie = _Trie()
  for kind, phrases in ((_PRE, PRE_NEGATION), (_POST, POST_NEGATION), (_PSEUDO, PSEUDO_NEGATION),
                        (_STOP, TERMINATORS), (_SECTION, SECTION_NEGATION)):
    for phrase in phrases:
      trie.add(phrase_key(phrase), kind)
  return trie


class NegationDetector:
  """NegEx-style negation of mentions in a note (the cues and scopes of the module docstring).

  Works on token spans of `tokenize`, whoever found the mentions: this module's dictionary
  (`negated`) or another recognizer's character spans (`negated_chars`).
  """

  def __init__(self, window: int = RecognizerConfig.negation_window):
    self.window = window  # words, besides mentions and list glue, that a cue reaches across
    self._cues = _cue_trie()

  def negated(self, note: str, tokens: Sequence[_Token], spans: Sequence[_Span]) -> set[int]:
    """Indices (into `spans`) of negated mentions.

    Args:
      note: the text.
      tokens: `tokenize(note)`.
      spans: (start token, end token, anything) of each mention: sorted, not overlapping.
    """
    words = [t[0] for t in tokens]
    breaks = [i == 0 or bool(_SENTENCE_BREAK.search(note, tokens[i - 1][2], tokens[i][1]))
              for i in range(len(tokens))]
    mention_at = {i: k for k, (i, _, _) in enumerate(spans)}
    mention_end = {j - 1: k for k, (_, j, _) in enumerate(spans)}
    inside = set()
    for i, j, _ in spans:
      inside.update(range(i, j))
    negated: set[int] = set()
    i = 0
    while i < len(words):
      cue = None if i in inside else self._cue_at(words, i, inside)
      if cue is None:
        i += 1
        continue
      kind, end = cue
      if kind == _PRE:
        negated |= self._scope_forward(end, words, breaks, mention_at, spans)
      elif kind == _POST:
        negated |= self._scope_backward(i - 1, words, breaks, mention_end, spans)
      elif kind == _SECTION:
        negated |= self._section(note, tokens, end, mention_at)
      i = end
    return negated

  def negated_chars(self, note: str, spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Whether each character span [start, end) of `note` is negated; spans may overlap.

    Each span covers the words it touches; overlapping spans are merged into one mention (a
    cue reaches all of it or none), and a span that touches no word is never negated.
    """
    tokens = tokenize(note)
    starts = [t[1] for t in tokens]
    ends = [t[2] for t in tokens]
    covered = [(bisect.bisect_right(ends, start), bisect.bisect_left(starts, end))
               for start, end in spans]  # [first token ending after start, first starting at end)
    merged: list[list[int]] = []  # [start token, end token] of each merged mention
    group = [-1] * len(spans)
    for k in sorted(range(len(spans)), key=lambda k: covered[k]):
      i, j = covered[k]
      if i >= j:
        continue
      if merged and i < merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], j)
      else:
        merged.append([i, j])
      group[k] = len(merged) - 1
    negated = self.negated(note, tokens, [(i, j, None) for i, j in merged])
    return [g >= 0 and g in negated for g in group]

  def _cue_at(self, words: Sequence[str], i: int, inside: set[int]) -> tuple[str, int] | None:
    """(kind, end token) of the longest cue at token i that does not run into a mention."""
    for end, kinds in reversed(self._cues.matches_at(words, i)):
      if not inside.intersection(range(i, end)):
        return kinds[0], end
    return None

  def _scope_forward(self, i: int, words: Sequence[str], breaks: Sequence[bool],
                     mention_at: dict[int, int], spans: Sequence[_Span]) -> set[int]:
    """Mentions a pre-negation cue ending before token i reaches."""
    out, budget = set(), self.window
    while i < len(words) and not breaks[i] and self._continues(words, i, mention_at):
      if i in mention_at:
        out.add(mention_at[i])
        i = spans[mention_at[i]][1]
        continue
      if words[i] not in LIST_GLUE:
        budget -= 1
        if budget < 0:
          break
      i += 1
    return out

  def _scope_backward(self, i: int, words: Sequence[str], breaks: Sequence[bool],
                      mention_end: dict[int, int], spans: Sequence[_Span]) -> set[int]:
    """Mentions a post-negation cue starting after token i reaches."""
    out, budget = set(), self.window
    while i >= 0:
      if i in mention_end:
        out.add(mention_end[i])
        i = spans[mention_end[i]][0]
      elif self._is_stop(words, i):
        break
      elif words[i] not in LIST_GLUE:
        budget -= 1
        if budget < 0:
          break
      if breaks[i]:
        break
      i -= 1
    return out

  def _continues(self, words: Sequence[str], i: int, mention_at: dict[int, int]) -> bool:
    """True while token i may continue a forward scope (no terminator starts here)."""
    return i in mention_at or not self._is_stop(words, i)

  def _is_stop(self, words: Sequence[str], i: int) -> bool:
    return any(_STOP in kinds for _, kinds in self._cues.matches_at(words, i))

  @staticmethod
  def _section(note: str, tokens: Sequence[_Token], end: int, mention_at: dict[int, int]
               ) -> set[int]:
    """Mentions from token `end` to the next blank line."""
    if end >= len(tokens):
      return set()
    stop = note.find("\n\n", tokens[end - 1][2])
    stop = len(note) if stop < 0 else stop
    return {k for i, k in mention_at.items() if i >= end and tokens[i][1] < stop}


class ConceptRecognizer:
  """Finds HPO phenotypic-abnormality terms in a note and whether each mention is negated.

  Build once per ontology (`from_knowledge`, ~1 s); `recognize` is pure and thread-safe.
  """
  name = "rarejax"

  def __init__(self, ontology: ontology_lib.Ontology,
               config: RecognizerConfig = RecognizerConfig()):
    self.ontology = ontology
    self.config = config
    self._terms = _Trie()
    self._negation = NegationDetector(config.negation_window)
    phrases: dict[tuple[str, ...], tuple[int, int, str]] = {}
    for priority, hpo_id, text in self._dictionary():
      key = phrase_key(text)
      if sum(map(len, key)) < config.min_chars:
        continue
      rank = (priority, len(ontology.ancestors(hpo_id)), hpo_id)
      if key not in phrases or rank < phrases[key]:
        phrases[key] = rank
    for key, (_, _, hpo_id) in phrases.items():
      self._terms.add(key, hpo_id)
    self.n_phrases = len(phrases)

  @classmethod
  def from_knowledge(cls, kb: knowledge.KnowledgeBase,
                     config: RecognizerConfig = RecognizerConfig()) -> ConceptRecognizer:
    """A recognizer over the knowledge base's ontology."""
    return cls(kb.ontology, config)

  def _dictionary(self) -> Iterable[tuple[int, str, str]]:
    """(priority, hpo id, phrase) for every label, synonym and inverted label variant."""
    onto, config = self.ontology, self.config
    for hpo_id in sorted(onto.descendants(ontology_lib.PHENOTYPIC_ABNORMALITY)):
      term = onto.terms[hpo_id]
      entries = [(_LABEL, term.name)]
      for synonym in term.synonyms:
        if synonym.kind == "abbreviation" and not config.abbreviations:
          continue
        if synonym.scope == "EXACT":
          entries.append((_VARIANT if synonym.kind in _VARIANT_KINDS else _EXACT, synonym.text))
        elif synonym.scope == "RELATED" and config.related:
          entries.append((_RELATED, synonym.text))
      for priority, text in entries:
        yield priority, hpo_id, text
        inverted = _INVERTED.match(text)
        if inverted:
          yield priority, hpo_id, f"{inverted[2]} {inverted[1]}"

  def recognize(self, note: str) -> Recognized:
    """Mentions of phenotypic abnormalities in `note`, negation resolved."""
    tokens = tokenize(note)
    spans = self._mentions([t[0] for t in tokens])
    negated = self._negation.negated(note, tokens, spans)
    return Recognized.from_mentions([
        Mention(hpo_id, tokens[i][1], tokens[j - 1][2], note[tokens[i][1]:tokens[j - 1][2]],
                k in negated) for k, (i, j, hpo_id) in enumerate(spans)])

  def _mentions(self, words: Sequence[str]) -> list[_Span]:
    """Longest-first, non-overlapping (start token, end token, hpo id), in note order."""
    found = [(i, j, values[0]) for i in range(len(words))
             for j, values in self._terms.matches_at(words, i)]
    found.sort(key=lambda m: (m[0] - m[1], m[0]))
    taken = [False] * len(words)
    chosen = []
    for i, j, hpo_id in found:
      if not any(taken[i:j]):
        taken[i:j] = [True] * (j - i)
        chosen.append((i, j, hpo_id))
    return sorted(chosen)


@dataclasses.dataclass
class RecognitionScore:
  """Micro-averaged agreement of recognized ids with gold ids, summed over notes.

  A predicted id matches a gold id when equal ('exact') or, 'tolerant', when one is an
  ancestor-or-self of the other below 'Phenotypic abnormality'.
  """
  n_predicted: int = 0
  n_gold: int = 0
  predicted_exact: int = 0  # predicted ids equal to some gold id
  gold_exact: int = 0  # gold ids equal to some predicted id
  predicted_tolerant: int = 0
  gold_tolerant: int = 0

  def add(self, predicted: Iterable[str], gold: Iterable[str],
          ontology: ontology_lib.Ontology) -> None:
    """Adds one note's predicted and gold ids (gold ids are resolved to current terms)."""
    predicted = set(predicted)
    gold = {g for g in map(ontology.resolve, gold) if g}

    def related(a: str, b: str) -> bool:
      return ((a in ontology.ancestors(b) or b in ontology.ancestors(a))
              and ontology_lib.PHENOTYPIC_ABNORMALITY not in (a, b))

    self.n_predicted += len(predicted)
    self.n_gold += len(gold)
    self.predicted_exact += len(predicted & gold)
    self.gold_exact += len(predicted & gold)
    self.predicted_tolerant += sum(any(related(p, g) for g in gold) for p in predicted)
    self.gold_tolerant += sum(any(related(p, g) for p in predicted) for g in gold)

  def as_dict(self) -> dict[str, float]:
    """precision/recall, exact and tolerant, plus the counts."""
    def ratio(a: int, b: int) -> float | None:
      return a / b if b else None

    return {"precision_exact": ratio(self.predicted_exact, self.n_predicted),
            "recall_exact": ratio(self.gold_exact, self.n_gold),
            "precision_tolerant": ratio(self.predicted_tolerant, self.n_predicted),
            "recall_tolerant": ratio(self.gold_tolerant, self.n_gold),
            "n_predicted": self.n_predicted, "n_gold": self.n_gold}
