"""The Human Phenotype Ontology: terms, synonyms, the is_a DAG and obsolete-id resolution."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterable, Mapping

import fastobo

PHENOTYPIC_ABNORMALITY = "HP:0000118"
ONSET_ROOT = "HP:0003674"
INHERITANCE_ROOT = "HP:0000005"
FREQUENCY_ROOT = "HP:0040279"


@dataclasses.dataclass(frozen=True, slots=True)
class Synonym:
  """A synonym of a term: its text, OBO scope (EXACT, RELATED, BROAD, NARROW) and kind."""
  text: str
  scope: str
  kind: str = ""  # '' or 'layperson', 'abbreviation', 'plural_form', 'uk_spelling', ...


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
  """One HPO term as written in hp.obo."""
  id: str
  name: str
  definition: str = ""
  synonyms: tuple[Synonym, ...] = ()
  parents: tuple[str, ...] = ()
  alt_ids: tuple[str, ...] = ()
  is_obsolete: bool = False
  replaced_by: str | None = None


class OboFormatError(ValueError):
  """hp.obo could not be read; the message names the file and the frame."""


class Ontology:
  """An immutable view of HPO: look-ups by id, resolution of old ids, ancestors and descendants."""

  def __init__(self, terms: Mapping[str, Term], version: str):
    self.terms: dict[str, Term] = dict(terms)
    self.version = version
    self._alias: dict[str, str] = {}
    for term in self.terms.values():
      for alt in term.alt_ids:
        self._alias.setdefault(alt, term.id)
    children: dict[str, list[str]] = {t: [] for t in self.terms}
    for term in self.terms.values():
      if not term.is_obsolete:
        for parent in term.parents:
          children.setdefault(parent, []).append(term.id)
    self._children = {k: tuple(sorted(v)) for k, v in children.items()}

  def __getstate__(self):
    return {"terms": self.terms, "version": self.version, "_alias": self._alias,
            "_children": self._children}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __len__(self) -> int:
    return len(self.terms)

  def resolve(self, hpo_id: str) -> str | None:
    """Current primary id for a current id, an alt_id or a replaced obsolete id; None if unknown."""
    for _ in range(8):  # replaced_by chains are short; the bound guards against cycles
      term = self.terms.get(hpo_id)
      if term is None:
        hpo_id = self._alias.get(hpo_id, "")
        if not hpo_id:
          return None
        continue
      if not term.is_obsolete:
        return term.id
      if not term.replaced_by:
        return None
      hpo_id = term.replaced_by
    return None

  def name(self, hpo_id: str) -> str:
    """Label of the resolved term, '' when unknown."""
    resolved = self.resolve(hpo_id)
    return self.terms[resolved].name if resolved else ""

  def parents(self, hpo_id: str) -> tuple[str, ...]:
    return self.terms[hpo_id].parents if hpo_id in self.terms else ()

  def children(self, hpo_id: str) -> tuple[str, ...]:
    return self._children.get(hpo_id, ())

  def ancestors(self, hpo_id: str, include_self: bool = True) -> frozenset[str]:
    """All is_a ancestors of a current term (empty for unknown ids)."""
    found = self._ancestors(hpo_id) if hpo_id in self.terms else frozenset()
    return found if include_self else found - {hpo_id}

  def descendants(self, hpo_id: str, include_self: bool = True) -> frozenset[str]:
    """All is_a descendants of a current term (empty for unknown ids)."""
    if hpo_id not in self.terms:
      return frozenset()
    seen, stack = {hpo_id}, [hpo_id]
    while stack:
      for child in self._children.get(stack.pop(), ()):
        if child not in seen:
          seen.add(child)
          stack.append(child)
    return frozenset(seen if include_self else seen - {hpo_id})

  def is_phenotype(self, hpo_id: str) -> bool:
    """True for terms under 'Phenotypic abnormality' (HP:0000118)."""
    return PHENOTYPIC_ABNORMALITY in self.ancestors(hpo_id)

  def current_ids(self) -> list[str]:
    """Sorted ids of all non-obsolete terms."""
    return sorted(t.id for t in self.terms.values() if not t.is_obsolete)

  @functools.lru_cache(maxsize=None)
  def _ancestors(self, hpo_id: str) -> frozenset[str]:
    found = {hpo_id}
    for parent in self.terms[hpo_id].parents:
      if parent in self.terms:
        found |= self._ancestors(parent)
    return frozenset(found)


def _term_from_frame(frame: fastobo.term.TermFrame) -> Term:
  """Converts one fastobo term frame into a Term."""
  fields = {"name": "", "definition": "", "replaced_by": None, "is_obsolete": False}
  synonyms, parents, alt_ids = [], [], []
  for clause in frame:
    kind = type(clause).__name__
    if kind == "NameClause":
      fields["name"] = str(clause.name)
    elif kind == "DefClause":
      fields["definition"] = str(clause.definition)
    elif kind == "SynonymClause":
      syn = clause.synonym
      synonyms.append(Synonym(str(syn.desc), str(syn.scope), str(syn.type) if syn.type else ""))
    elif kind == "IsAClause":
      parents.append(str(clause.term))
    elif kind == "AltIdClause":
      alt_ids.append(str(clause.alt_id))
    elif kind == "IsObsoleteClause":
      fields["is_obsolete"] = bool(clause.obsolete)
    elif kind == "ReplacedByClause":
      fields["replaced_by"] = str(clause.term)
  return Term(id=str(frame.id), synonyms=tuple(synonyms), parents=tuple(parents),
              alt_ids=tuple(alt_ids), **fields)


def _version_of(header: Iterable) -> str:
  for clause in header:
    if type(clause).__name__ == "DataVersionClause":
      return str(clause.version).rsplit("/", 1)[-1]
  return "unknown"


def read_obo(path: str | os.PathLike) -> Ontology:
  """Parses an OBO file (e.g. hp.obo) with fastobo into an Ontology."""
  try:
    doc = fastobo.load(os.fspath(path))
  except (SyntaxError, ValueError, OSError) as err:
    raise OboFormatError(f"{path}: not a readable OBO 1.4 file ({err}); pass the hp.obo of an "
                         "HPO release") from err
  terms = {}
  for frame in doc:
    if isinstance(frame, fastobo.term.TermFrame):
      term = _term_from_frame(frame)
      terms[term.id] = term
  if not terms:
    raise OboFormatError(f"{path}: no [Term] frames found; is this an HPO OBO file?")
  return Ontology(terms, _version_of(doc.header))
