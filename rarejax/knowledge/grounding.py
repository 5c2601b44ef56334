"""Grounding: disease names, synonyms and written identifiers → knowledge-base disease ids.

One index answers "which disease does this text name?" for the answer parser, the grader,
RERS filters and the diagnose CLI:

  1. an identifier written in the text ('OMIM:154700', '#154700', 'OMIM #154700', 'ORPHA:558',
     'Orphanet_558', 'MONDO:0007947', ...) that the index knows — directly or as an xref — wins;
  2. otherwise the name is normalized (case, accents, punctuation, possessives, OMIM ';' suffixes,
     roman numerals, 'type 2' ↔ '2') and looked up exactly, then with its tokens sorted
     ('Myopathy, centronuclear, X-linked' = 'X-linked centronuclear myopathy');
  3. otherwise a fuzzy match: rapidfuzz ratio over the sorted tokens ≥ cutoff, among names with
     exactly the same numbers ('Bardet-Biedl syndrome 18' never grounds to '... 17'), and only
     when every differing word is one edit away from a word of the name, with the same first
     letter, more than 4 letters, and no swap of contrasting prefixes (micro/macro, eso/exo). So
     'Marfan syndrom' matches, but not 'Seckel' for 'Meckel', 'cblC' for 'cblD', 'PFAPA' for
     'PAPA', 'hyper-' for 'hypo-', 'American' for 'African', 'non progressive' for 'progressive'
     or 'debranching' for 'branching'.

`IdEquivalence` says whether a predicted id counts as a gold id: equal, or one exact-match hop
apart through the knowledge base's xrefs (which hold the MONDO exact-match families).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import re
import unicodedata
from typing import Iterable, Mapping, NamedTuple, Sequence

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from rarejax.knowledge import gc_pause

# Preferred prefixes when several ids share a name (earlier wins); unknown prefixes come last.
DEFAULT_PREFIX_ORDER = ("OMIM", "ORPHA", "DECIPHER", "MONDO")
DEFAULT_FUZZY_CUTOFF = 90.0
_FUZZY_CANDIDATES = 10  # best-scoring names checked for a plausible misspelling, in score order

# --------------------------------------------------------------------------------------------
# Identifiers written in text.

_PREFIX_ALIASES = {"omim": "OMIM", "mim": "OMIM", "orpha": "ORPHA", "orphanet": "ORPHA",
                   "mondo": "MONDO", "decipher": "DECIPHER"}
_ID_RE = re.compile(
    r"(?<![a-z0-9])(?:"
    r"(?P<prefix>omim|mim|orphanet|orpha|mondo|decipher)[ \t]?[:_#]?[ \t]?#?(?P<number>\d{1,9})"
    r"|omim\.org/entry/(?P<entry>\d{6})"
    r"|[#%][ \t]?(?P<sigil>\d{6})"
    r")(?!\d)", re.IGNORECASE)


def _canonical(prefix: str, number: str) -> str:
  """Canonical CURIE for a parsed (prefix, digits): MONDO zero-padded to 7, ORPHA unpadded."""
  prefix = _PREFIX_ALIASES[prefix.lower()]
  if prefix == "MONDO":
    number = f"{int(number):07d}"
  elif prefix in ("ORPHA", "DECIPHER"):
    number = str(int(number))
  return f"{prefix}:{number}"


def _match_id(match: re.Match) -> str:
  if match.group("prefix"):
    return _canonical(match.group("prefix"), match.group("number"))
  return "OMIM:" + (match.group("entry") or match.group("sigil"))


def find_disease_ids(text: str) -> list[tuple[str, int, int]]:
  """All disease identifiers written in `text`, as (canonical id, start, end), in order."""
  return [(_match_id(m), m.start(), m.end()) for m in _ID_RE.finditer(text)]


_CANONICAL_RE = re.compile(r"(?:OMIM|ORPHA|DECIPHER):[1-9]\d*|MONDO:\d{7}")


def canonical_id(disease_id: str) -> str:
  """'Orphanet_558' → 'ORPHA:558', 'OMIM #154700' → 'OMIM:154700'; unparseable ids unchanged."""
  if _CANONICAL_RE.fullmatch(disease_id):
    return disease_id
  stripped = disease_id.strip()
  match = _ID_RE.fullmatch(stripped)
  return _match_id(match) if match else stripped


# Characters that separate a name from an id or a list marker: 'Name - OMIM:1', 'Name (ID)'.
_NAME_EDGE = " \t-–—:;,./|*_`"
# ' - ' / ': ' often start an explanation ('Marfan syndrome - tall, lens subluxation'), but some
# names hold them too ('Glaucoma - sleep apnea'); grounding tries the full name first.
_EXPLANATION_RE = re.compile(r" [-–—] | ?: ")


def _clean_name(text: str) -> str:
  """Strips markdown emphasis, separators and dangling brackets around a name."""
  text = text.replace("**", "").replace("__", "")
  text = text.lstrip(_NAME_EDGE + ")]}").rstrip(_NAME_EDGE + "([{")
  unclosed = text.count("(") + text.count("[") - text.count(")") - text.count("]")
  end = len(text)
  while unclosed < 0 and end and text[end - 1] in ")]":  # 'Name (Type I))' → 'Name (Type I)'
    end -= 1
    unclosed += 1
    while end and text[end - 1] in _NAME_EDGE + "([{":
      unclosed -= text[end - 1] in "(["
      end -= 1
  return text[:end].strip()


def split_name_and_id(text: str) -> tuple[str, str | None]:
  """Splits 'Marfan syndrome (OMIM:154700)' into ('Marfan syndrome', 'OMIM:154700').

  The first identifier wins; the name is the text before it, or — when nothing precedes it
  ('OMIM #154700 MARFAN SYNDROME; MFS') — the text after it without further identifiers.
  Without an identifier the id is None and the name is the cleaned text.
  """
  ids = find_disease_ids(text)
  if not ids:
    return _clean_name(text), None
  disease_id, start, end = ids[0]
  name = _clean_name(text[:start]) or _clean_name(_ID_RE.sub(" ", text[end:]))
  return name, disease_id


# --------------------------------------------------------------------------------------------
# Name normalization.

_GREEK = str.maketrans({"α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon",
                        "κ": "kappa", "λ": "lambda", "μ": "mu"})
_POSSESSIVE_RE = re.compile(r"(?<=\w)['’]s\b")
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
# Words after which a lone 'x' or a roman numeral with a letter suffix ('type IIb') is a number.
_NUMBERING_WORDS = frozenset({"type", "subtype", "group", "class", "form", "factor", "grade",
                              "stage"})


def _roman(value: int) -> str:
  """Lower-case roman numeral for 1 ≤ value < 40."""
  tens, ones = divmod(value, 10)
  units = ("", "i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix")
  return "x" * tens + units[ones]


# 'xx' is left alone: it is a karyotype ('46,XX') far more often than the number 20.
_ROMAN = {_roman(v): str(v) for v in range(1, 20)}
_ROMAN_SUFFIX_RE = re.compile(r"^([ivx]+)([a-e])$")


def _arabic(token: str, previous: str, is_last: bool) -> str:
  """Roman-numeral token → arabic ('ii' → '2', 'type IIb' → '2b'); other tokens unchanged."""
  after_word = previous in _NUMBERING_WORDS
  if token in _ROMAN and (len(token) > 1 or token != "x" or after_word):
    return _ROMAN[token]
  match = _ROMAN_SUFFIX_RE.match(token)
  if match and match.group(1) in _ROMAN and (after_word or is_last):
    return _ROMAN[match.group(1)] + match.group(2)
  return token


def _fold(name: str) -> str:
  """Casefolded; Greek letters spelled out; no accents ('Café' → 'cafe', 'β' → 'beta')."""
  name = name.casefold()
  if name.isascii():
    return name
  name = unicodedata.normalize("NFKD", name.translate(_GREEK))
  return "".join(c for c in name if not unicodedata.combining(c))


def normalize_tokens(name: str) -> tuple[str, ...]:
  """Normalized tokens of a disease name (see `normalize`)."""
  name = _fold(name)
  head = name.split(";", 1)[0]  # OMIM titles: 'MARFAN SYNDROME; MFS'
  name = head if head.strip() else name
  name = _POSSESSIVE_RE.sub("", name.replace("&", " and "))
  name = name.replace("ae", "e").replace("oe", "e")  # British spellings: anaemia, oedema
  raw = _NON_ALNUM_RE.sub(" ", name).split()
  tokens = [_arabic(t, raw[i - 1] if i else "", i == len(raw) - 1) for i, t in enumerate(raw)]
  # 'type 2' ↔ '2': drop 'type' before a number.
  return tuple(t for i, t in enumerate(tokens)
               if not (t == "type" and i + 1 < len(tokens) and tokens[i + 1][0].isdigit()))


def normalize(name: str) -> str:
  """Normalized form of a disease name: equal for spelling variants of the same name.

  'Neurofibromatosis, type II' and 'neurofibromatosis type 2' → 'neurofibromatosis 2';
  "Alzheimer's disease" → 'alzheimer disease'; 'MARFAN SYNDROME; MFS' → 'marfan syndrome';
  'Haemophilia A' → 'hemophilia a'.
  """
  return " ".join(normalize_tokens(name))


def _numbers(tokens: Sequence[str]) -> tuple[str, ...]:
  """The tokens holding a digit, sorted: names must agree on these to match fuzzily."""
  return tuple(sorted(t for t in tokens if not t.isalpha()))  # tokens are [a-z0-9]+


# Words a variant may add or drop without changing the disease.
_FILLER_WORDS = frozenset({"a", "an", "the", "of", "and", "in"})
# Prefixes one edit apart that mean opposite things.
_CONTRASTING_PREFIXES = (("micro", "macro"), ("eso", "exo"))


def _misspelling(a: str, b: str) -> bool:
  """Whether word `a` could be a misspelling of the different word `b` (see module docstring)."""
  if min(len(a), len(b)) <= 4 or a[0] != b[0]:
    return False
  for p, q in _CONTRASTING_PREFIXES:
    if (a.startswith(p) and b.startswith(q)) or (a.startswith(q) and b.startswith(p)):
      return False
  return OSA.distance(a, b, score_cutoff=1) <= 1


def _plausible_variant(query: Sequence[str], name: Sequence[str]) -> bool:
  """Whether the words the two token lists do not share pair up as misspellings."""
  query_counts, name_counts = collections.Counter(query), collections.Counter(name)
  extra = [t for t in (query_counts - name_counts).elements() if t not in _FILLER_WORDS]
  missing = [t for t in (name_counts - query_counts).elements() if t not in _FILLER_WORDS]
  if len(extra) != len(missing):
    return False
  for word in extra:
    partner = next((m for m in missing if _misspelling(word, m)), None)
    if partner is None:
      return False
    missing.remove(partner)
  return True


# --------------------------------------------------------------------------------------------
# Identifier equivalence.


class IdEquivalence:
  """Says whether a predicted id counts as a gold id: equal, or exact-match xrefs of each other.

  `xrefs` maps an id to its exactly equivalent ids (the knowledge base's Disease.xrefs); the
  relation is made symmetric but not transitive beyond what `xrefs` lists, so one broad
  mapping cannot chain unrelated diseases together.
  """

  def __init__(self, xrefs: Mapping[str, Iterable[str]] | None = None):
    links: dict[str, set[str]] = collections.defaultdict(set)
    for disease_id, others in (xrefs or {}).items():
      disease_id = canonical_id(disease_id)
      for other in map(canonical_id, others):
        if other != disease_id:
          links[disease_id].add(other)
          links[other].add(disease_id)
    self._links = {k: tuple(sorted(v)) for k, v in links.items()}

  def equivalents(self, disease_id: str) -> frozenset[str]:
    """The id itself and every id listed as exactly equivalent to it."""
    disease_id = canonical_id(disease_id)
    return frozenset((disease_id, *self._links.get(disease_id, ())))

  def same(self, predicted: str, gold: str) -> bool:
    """True when `predicted` names the same disease as `gold`."""
    predicted, gold = canonical_id(predicted), canonical_id(gold)
    return predicted == gold or gold in self._links.get(predicted, ())

  def matches_any(self, predicted: str, gold_ids: Iterable[str]) -> bool:
    """True when `predicted` names the same disease as any of `gold_ids`."""
    return any(self.same(predicted, gold) for gold in gold_ids)


# --------------------------------------------------------------------------------------------
# The index.


@dataclasses.dataclass(frozen=True)
class GroundingResult:
  """Where a text grounded.

  Attributes:
    id: the chosen knowledge-base id, or None when kind is 'none'.
    kind: 'id' (a written identifier), 'exact' (normalized name), 'fuzzy', or 'none'.
    score: 100 for 'id'/'exact', the rapidfuzz score for 'fuzzy', 0 for 'none'.
    matched_name: the indexed name that matched (for 'id', the id's primary name).
    alternatives: other ids the same text matches equally well (deterministically ordered).
  """
  id: str | None
  kind: str
  score: float
  matched_name: str = ""
  alternatives: tuple[str, ...] = ()

  @property
  def found(self) -> bool:
    return self.kind != "none"

  @property
  def candidates(self) -> tuple[str, ...]:
    """The chosen id followed by the alternatives (empty when nothing matched)."""
    return (self.id, *self.alternatives) if self.id is not None else ()


NOT_FOUND = GroundingResult(id=None, kind="none", score=0.0)


class _Name(NamedTuple):
  """One indexed name: its display text and the ids carrying it (best first)."""
  text: str
  ids: tuple[str, ...]

  def result(self, kind: str, score: float) -> GroundingResult:
    return GroundingResult(id=self.ids[0], kind=kind, score=score, matched_name=self.text,
                           alternatives=self.ids[1:])


class _NameMatcher:
  """Normalized name → _Name: exact, then sorted tokens, then guarded fuzzy (module docstring).

  Kept apart from GroundingIndex so that the index's lookup cache refers to this object only
  and no reference cycle keeps an index alive.
  """

  def __init__(self, by_name: dict[str, _Name], by_tokens: dict[str, _Name], cutoff: float):
    self._by_name, self._by_tokens, self._cutoff = by_name, by_tokens, cutoff
    groups: dict[tuple[str, ...], list[tuple[str, _Name]]] = collections.defaultdict(list)
    for key, name in sorted(by_tokens.items()):
      groups[_numbers(key.split())].append((key, name))
    # numbers → (sorted-token keys, their names), in a fixed order for deterministic ties.
    self._fuzzy = {n: ([k for k, _ in items], [v for _, v in items])
                   for n, items in groups.items()}

  def match(self, key: str) -> GroundingResult:
    """Grounds a normalized name (see `normalize`)."""
    if not key:
      return NOT_FOUND
    tokens = key.split()
    sorted_key = " ".join(sorted(tokens))
    name = self._by_name.get(key) or self._by_tokens.get(sorted_key)
    if name is not None:
      return name.result("exact", 100.0)
    group = self._fuzzy.get(_numbers(tokens))
    if group is None or self._cutoff >= 100:
      return NOT_FOUND
    best = process.extract(sorted_key, group[0], scorer=fuzz.ratio, processor=None,
                           score_cutoff=self._cutoff, limit=_FUZZY_CANDIDATES)
    for choice, score, position in best:
      if _plausible_variant(tokens, choice.split()):
        return group[1][position].result("fuzzy", float(score))
    return NOT_FOUND


class GroundingIndex:
  """Names/synonyms/ids → disease ids. Immutable after construction; lookups are cached.

  Args:
    entries: (id, names) pairs; the first name is the primary label, the rest synonyms.
    xrefs: id → exactly equivalent ids (e.g. Disease.xrefs). Written xref ids ground to the
      diseases carrying them; `equivalence` uses them to compare predictions with gold ids.
    fuzzy_cutoff: minimum rapidfuzz score (0–100) for a fuzzy match; 100 disables fuzzy matching.
    prefix_order: preferred id prefixes when several ids share a name.
    cache_size: number of distinct names whose grounding is memoized.
  """

  def __init__(self, entries: Iterable[tuple[str, Iterable[str]]],
               xrefs: Mapping[str, Iterable[str]] | None = None, *,
               fuzzy_cutoff: float = DEFAULT_FUZZY_CUTOFF,
               prefix_order: Sequence[str] = DEFAULT_PREFIX_ORDER, cache_size: int = 1 << 16):
    if not 0 <= fuzzy_cutoff <= 100:
      raise ValueError(f"fuzzy_cutoff must be within [0, 100], got {fuzzy_cutoff}")
    self.fuzzy_cutoff = float(fuzzy_cutoff)
    self._prefix_rank = {p: i for i, p in enumerate(prefix_order)}
    self.primary_names: dict[str, str] = {}
    with gc_pause.cyclic_gc_paused():
      matcher = _NameMatcher(*self._read_names(entries), self.fuzzy_cutoff)
      self.equivalence = IdEquivalence(xrefs)
      self._by_xref = self._xref_targets(xrefs or {})
    self._match_name = functools.lru_cache(maxsize=cache_size)(matcher.match)

  def _read_names(self, entries: Iterable[tuple[str, Iterable[str]]]
                  ) -> tuple[dict[str, _Name], dict[str, _Name]]:
    """Fills primary_names; returns the tables of normalized names and of their sorted tokens
    ('x linked centronuclear myopathy' → 'centronuclear linked myopathy x')."""
    by_name: list[tuple[str, bool, str, str]] = []  # (key, is a synonym, id, name)
    by_tokens: list[tuple[str, bool, str, str]] = []
    for disease_id, names in entries:
      disease_id = canonical_id(disease_id)
      for position, name in enumerate(names):
        if position == 0:
          self.primary_names.setdefault(disease_id, name)
        tokens = normalize_tokens(name)
        if tokens:
          by_name.append((" ".join(tokens), position > 0, disease_id, name))
          by_tokens.append((" ".join(sorted(tokens)), position > 0, disease_id, name))
    return self._table(by_name), self._table(by_tokens)

  def _xref_targets(self, xrefs: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Written xref id → the indexed diseases listing it, best first."""
    targets: dict[str, set[str]] = collections.defaultdict(set)
    for disease_id, others in xrefs.items():
      disease_id = canonical_id(disease_id)
      if disease_id in self.primary_names:
        for other in others:
          targets[canonical_id(other)].add(disease_id)
    return {k: tuple(sorted(v, key=self._id_order)) for k, v in targets.items()}

  @classmethod
  def from_knowledge(cls, kb, **kwargs) -> GroundingIndex:
    """Index of a KnowledgeBase: each disease's name and synonyms, with its xrefs."""
    diseases = kb.diseases.values()
    return cls(((d.id, (d.name, *d.synonyms)) for d in diseases),
               xrefs={d.id: d.xrefs for d in diseases}, **kwargs)

  def __len__(self) -> int:
    return len(self.primary_names)

  def __contains__(self, disease_id: str) -> bool:
    return canonical_id(disease_id) in self.primary_names

  def _id_order(self, disease_id: str) -> tuple:
    prefix, _, local = disease_id.partition(":")
    return (self._prefix_rank.get(prefix, len(self._prefix_rank)), prefix,
            int(local) if local.isdigit() else float("inf"), local)

  def _table(self, rows: list[tuple[str, bool, str, str]]) -> dict[str, _Name]:
    """key → _Name whose ids are ordered primary-label matches first, then by prefix and number.

    The text is the name that matched for the first id (its primary label when it matched).
    """
    rows.sort(key=lambda r: (r[0], r[1], self._id_order(r[2])))
    return {key: _Name(text=group[0][3], ids=tuple(dict.fromkeys(r[2] for r in group)))
            for key, group in ((k, list(g)) for k, g in itertools.groupby(rows, lambda r: r[0]))}

  def resolve_id(self, disease_id: str) -> tuple[str, ...]:
    """Indexed ids that a written id denotes: itself if indexed, else diseases with it as xref."""
    disease_id = canonical_id(disease_id)
    if disease_id in self.primary_names:
      return (disease_id,)
    return self._by_xref.get(disease_id, ())

  def ground(self, text: str, disease_id: str | None = None) -> GroundingResult:
    """Grounds a name (optionally with an identifier written in it, or given as `disease_id`).

    A known identifier wins over the name; an unknown one is ignored and the name decides.
    """
    written = [disease_id] if disease_id else []
    written += [i for i, _, _ in find_disease_ids(text)]
    for candidate in written:
      ids = self.resolve_id(candidate)
      if ids:
        return GroundingResult(id=ids[0], kind="id", score=100.0,
                               matched_name=self.primary_names[ids[0]], alternatives=ids[1:])
    name = split_name_and_id(text)[0]
    result = self._match_name(normalize(name))
    head = _EXPLANATION_RE.split(name, maxsplit=1)[0]
    if result.found or head == name:
      return result
    return self._match_name(normalize(head))
