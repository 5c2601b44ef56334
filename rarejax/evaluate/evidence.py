"""Which findings of a note support or argue against a candidate disease, by its HPO annotations.

A note's findings (HPO concepts recognized in it, or a phenopacket's structured phenotypes) are
matched against a candidate's annotated phenotypes (phenotype.hpoa rows with a non-zero
frequency), with the same rule the SFT reasoning uses (rarejax.data.targets):

  supporting    'annotated'      the finding is annotated for the disease;
                'less_specific'  it is a less specific form of an annotated finding (an ancestor,
                                 informative enough: IC >= corpus.MIN_SUPPORT_IC);
                'more_specific'  it is a more specific form of an annotated finding (that
                                 annotated ancestor informative enough);
  contradicting 'absent'         the note says the finding is absent, yet it (or a more specific
                                 form of it) is annotated for the disease;
                'not_expected'   the note reports a finding the disease is annotated NOT to have
                                 (a NOT row, or frequency 0).

A candidate id without annotations of its own borrows those of an exact-match equivalent
(e.g. an ORPHA id for an OMIM disease). Pure Python over the knowledge base (no model).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from rarejax import knowledge
from rarejax.data import corpus
from rarejax.phenotypes import concepts

SUPPORTING = ("annotated", "less_specific", "more_specific")
CONTRADICTING = ("absent", "not_expected")


@dataclasses.dataclass(frozen=True)
class NoteFinding:
  """A finding of the note: its HPO id and how the note words it ('' for structured phenotypes)."""
  hpo_id: str
  text: str = ""


@dataclasses.dataclass(frozen=True)
class NoteFindings:
  """The note's findings, present and explicitly absent, in note order."""
  observed: tuple[NoteFinding, ...]
  excluded: tuple[NoteFinding, ...]

  @classmethod
  def recognized(cls, result: concepts.Recognized) -> NoteFindings:
    """From concept recognition: one finding per id, worded as its first mention."""
    first: dict[tuple[str, bool], str] = {}
    for mention in result.mentions:
      first.setdefault((mention.hpo_id, mention.negated), mention.text)
    return cls(tuple(NoteFinding(h, first.get((h, False), "")) for h in result.observed),
               tuple(NoteFinding(h, first.get((h, True), "")) for h in result.excluded))

  @classmethod
  def structured(cls, observed: Iterable[str], excluded: Iterable[str]) -> NoteFindings:
    """From structured phenotypes (e.g. a phenopacket's)."""
    return cls(tuple(NoteFinding(h) for h in dict.fromkeys(observed)),
               tuple(NoteFinding(h) for h in dict.fromkeys(excluded)))


@dataclasses.dataclass(frozen=True)
class Evidence:
  """One note finding related to a candidate's annotations.

  Attributes:
    hpo_id, label: the note's finding (current HPO id) and its HPO label.
    text: how the note words it ('' for structured phenotypes).
    relation: one of SUPPORTING or CONTRADICTING (module docstring).
    annotated_id, annotated_label: the candidate's annotated (or NOT-annotated) term it meets.
    frequency: annotated frequency of that term in the disease (None when not given).
  """
  hpo_id: str
  label: str
  text: str
  relation: str
  annotated_id: str
  annotated_label: str
  frequency: float | None


@dataclasses.dataclass(frozen=True)
class CandidateEvidence:
  """The note findings that support a candidate, and those that argue against it."""
  disease_id: str | None
  annotated_as: str | None  # the knowledge-base disease whose annotations were used
  supporting: tuple[Evidence, ...] = ()
  contradicting: tuple[Evidence, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Profile:
  """A disease's annotations, indexed for matching."""
  annotated: dict[str, float | None]  # hpo id → frequency (non-zero)
  vaguer: dict[str, str]  # informative ancestor → the annotated term it generalizes
  not_expected: frozenset[str]  # NOT-annotated or frequency-0 terms


class EvidenceFinder:
  """Matches note findings to candidates' annotations (profiles are built once per disease)."""

  def __init__(self, kb: knowledge.KnowledgeBase,
               equivalence: knowledge.IdEquivalence | None = None):
    self.kb = kb
    self.equivalence = equivalence or knowledge.IdEquivalence(
        {d.id: d.xrefs for d in kb.diseases.values()})
    self._profiles: dict[str, _Profile] = {}

  def annotated_disease(self, disease_id: str | None) -> str | None:
    """The knowledge-base disease whose annotations describe `disease_id` (itself or an
    exact-match equivalent with annotations), else None."""
    if disease_id is None:
      return None
    for candidate in (disease_id, *sorted(self.equivalence.equivalents(disease_id))):
      disease = self.kb.diseases.get(candidate)
      if disease is not None and disease.phenotypes:
        return candidate
    return None

  def _profile(self, disease_id: str) -> _Profile:
    if disease_id not in self._profiles:
      disease = self.kb.diseases[disease_id]
      found = corpus.findings(self.kb, disease)
      present, vaguer = corpus.support_table(self.kb, disease)
      annotated = {hpo_id: f.frequency for hpo_id, f in present.items()}
      onto = self.kb.ontology
      not_expected = {onto.resolve(a.hpo_id) for a in disease.excluded}
      not_expected |= {f.hpo_id for f in found if f.frequency == 0.0}
      self._profiles[disease_id] = _Profile(annotated, vaguer, frozenset(not_expected - {None}))
    return self._profiles[disease_id]

  def _evidence(self, finding: NoteFinding, relation: str, annotated_id: str,
                profile: _Profile) -> Evidence:
    onto = self.kb.ontology
    return Evidence(finding.hpo_id, onto.name(finding.hpo_id), finding.text, relation,
                    annotated_id, onto.name(annotated_id), profile.annotated.get(annotated_id))

  def _supports(self, finding: NoteFinding, profile: _Profile) -> Evidence | None:
    hpo_id = finding.hpo_id
    if hpo_id in profile.annotated:
      return self._evidence(finding, "annotated", hpo_id, profile)
    if hpo_id in profile.vaguer:
      return self._evidence(finding, "less_specific", profile.vaguer[hpo_id], profile)
    general = [a for a in self.kb.ontology.ancestors(hpo_id, include_self=False)
               if a in profile.annotated and self.kb.ic(a) >= corpus.MIN_SUPPORT_IC]
    if general:
      best = max(general, key=lambda a: (self.kb.ic(a), a))
      return self._evidence(finding, "more_specific", best, profile)
    return None

  def _contradicts_absent(self, finding: NoteFinding, profile: _Profile) -> Evidence | None:
    hpo_id = finding.hpo_id
    if hpo_id in profile.annotated:
      return self._evidence(finding, "absent", hpo_id, profile)
    if hpo_id in profile.vaguer:
      return self._evidence(finding, "absent", profile.vaguer[hpo_id], profile)
    return None

  def for_candidate(self, disease_id: str | None, findings: NoteFindings) -> CandidateEvidence:
    """The evidence of the note's findings for one candidate (empty when it has no annotations)."""
    source = self.annotated_disease(disease_id)
    if source is None:
      return CandidateEvidence(disease_id, None)
    profile = self._profile(source)
    resolve = self.kb.ontology.resolve
    observed = [NoteFinding(r, f.text) for f in findings.observed if (r := resolve(f.hpo_id))]
    excluded = [NoteFinding(r, f.text) for f in findings.excluded if (r := resolve(f.hpo_id))]
    supporting = [e for f in observed if (e := self._supports(f, profile))]
    contradicting = [e for f in excluded if (e := self._contradicts_absent(f, profile))]
    contradicting += [self._evidence(f, "not_expected", f.hpo_id, profile) for f in observed
                      if f.hpo_id in profile.not_expected]
    return CandidateEvidence(disease_id, source, tuple(supporting), tuple(contradicting))
