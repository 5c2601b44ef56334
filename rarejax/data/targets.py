"""Diagnosis SFT targets (TF-free): templated knowledge-grounded reasoning, ranked differential.

The reasoning names the note's findings, says which are annotated for the gold disease (and how
often), which are less specific forms of an annotated finding, which it does not explain, which
absent findings fit it, its inheritance and onset, and what the top alternatives share with the
case ('full'); the 'brief' style keeps only which findings the gold disease explains and the
conclusion, for small models and short generation budgets; 'none' answers first with an empty
reasoning section (a from-scratch model learns the diagnosis, not templated prose). The ranked list puts the gold disease(s) first, then the best-scoring other candidates of
a classical likelihood-ratio ranker on the case's phenotypes. Prompts are in the experiment's
instruction style (format.INSTRUCTION_STYLES). Same case, same targets.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from rarejax import cases as cases_lib
from rarejax import knowledge
from rarejax.data import corpus
from rarejax.data import format as format_lib
from rarejax.phenotypes import baselines
from rarejax.phenotypes.phenotype_index import PhenotypeIndex

MAX_ALTERNATIVES = 3  # alternatives discussed in the reasoning
REASONING_STYLES = ("full", "brief", "none")
# How answer lines name a disease: 'name_id' writes 'Name (ID)' (display, pretrained models);
# 'id' writes the id alone, one vocabulary piece when the tokenizer has disease-id pieces
# (DataSpec.id_pieces): an answer line costs one token, and the name is rendered from the
# knowledge when the answer is shown (grader grounding).
ANSWER_STYLES = ("name_id", "id")
_NO_SCORE = -1e29  # rankers score impossible diseases -1e30


def check_answer(style: str, field: str = "answer") -> str:
  """`style` when it is one of ANSWER_STYLES; else a ValueError naming `field`."""
  if style not in ANSWER_STYLES:
    raise ValueError(f"{field} must be one of {ANSWER_STYLES}, got {style!r}")
  return style


def check_reasoning(style: str, field: str = "reasoning") -> str:
  """`style` when it is one of REASONING_STYLES; else a ValueError naming `field`."""
  if style not in REASONING_STYLES:
    raise ValueError(f"{field} must be one of {REASONING_STYLES}, got {style!r}")
  return style


class DiagnosisTargets:
  """Builds prompts and reference responses (both task levels) for cases of one knowledge base."""

  def __init__(self, kb: knowledge.KnowledgeBase, candidates: Sequence[str] = (),
               n_ranked: int = 10, seed: int = 0, reasoning: str = "full",
               instruction: str = "full", answer: str = "name_id"):
    """Args:
      kb: the knowledge base the reasoning cites.
      candidates: disease ids the differential may list (default: every OMIM disease).
      n_ranked: entries of the differential, gold included.
      seed: the ranker's tie-break permutation.
      reasoning: 'full', 'brief' or 'none' (module docstring).
      instruction: the prompts' style, 'full' or 'none' (format.build_prompt).
      answer: how answer lines name diseases, 'name_id' or 'id' (ANSWER_STYLES).
    """
    if n_ranked < 1:
      raise ValueError(f"n_ranked must be >= 1, got {n_ranked}")
    check_reasoning(reasoning)
    check_answer(answer)
    self.kb = kb
    self.n_ranked = n_ranked
    self.instruction = format_lib.check_instruction(instruction)
    self.brief = reasoning == "brief"
    self.answer_first = reasoning == "none"
    self.ids_only = answer == "id"
    prefixes = sorted({c.split(":", 1)[0] for c in candidates}) or ["OMIM"]
    self.index = PhenotypeIndex(kb, prefixes)
    self.ranker = baselines.LikelihoodRatioRanker(self.index)
    self.tie_break = baselines.make_tie_break(len(self.index.disease_ids), seed)
    allowed = set(candidates) or set(self.index.disease_ids)
    self.allowed = np.array([d in allowed for d in self.index.disease_ids])
    self._support: dict[str, tuple[dict[str, corpus.Finding], dict[str, str]]] = {}

  def example(self, case: cases_lib.Case) -> dict[str, str]:
    """Prompts and responses for the 'differential' and 'final' task levels."""
    ranked = self.ranked(case)
    reasoning = "" if self.answer_first else self.reasoning(case, ranked)
    if self.ids_only:
      ranked = [("", disease_id) for _, disease_id in ranked]
    return {
        "prompt": format_lib.build_prompt(case.note, "differential", self.n_ranked,
                                          self.instruction),
        "response": format_lib.format_response(reasoning, ranked),
        "prompt_final": format_lib.build_prompt(case.note, "final",
                                                instruction=self.instruction),
        "response_final": format_lib.format_response(reasoning, ranked[:1]),
    }

  def gold_name(self, case: cases_lib.Case, i: int) -> str:
    """Name of the i-th gold disease: knowledge base name, else the source's label, else the id."""
    disease = self.kb.diseases.get(case.gold_ids[i])
    labels = case.provenance.get("gold_labels", ())
    return disease.name if disease else (labels[i] if i < len(labels) else case.gold_ids[i])

  def ranked(self, case: cases_lib.Case) -> list[tuple[str, str]]:
    """[(name, id)]: the gold disease(s), then the ranker's best other candidates that explain
    at least one of the case's findings (so the list may be shorter than n_ranked)."""
    out = [(self.gold_name(case, i), g) for i, g in enumerate(case.gold_ids)]
    observed = self._resolved(case.observed)
    if not observed or len(out) >= self.n_ranked:
      return out[:self.n_ranked]
    skip = set(case.gold_ids)
    for gold in case.gold_ids:
      if gold in self.kb.diseases:
        skip.update(self.kb.diseases[gold].xrefs)
    scores = self.ranker.scores(self.index.query(case.observed, case.excluded))
    for i in baselines.rank_order(scores, self.tie_break):
      if len(out) >= self.n_ranked or scores[i] <= _NO_SCORE:
        break
      disease_id = self.index.disease_ids[i]
      if (self.allowed[i] and disease_id not in skip
          and self._explained(observed, disease_id)):
        out.append((self.kb.diseases[disease_id].name, disease_id))
    return out

  def reasoning(self, case: cases_lib.Case, ranked: Sequence[tuple[str, str]]) -> str:
    """The templated explanation (see module docstring) of `ranked` (from `self.ranked`)."""
    gold_id = case.gold_ids[0]
    name = self.gold_name(case, 0)
    disease = self.kb.diseases.get(gold_id)
    observed = self._resolved(case.observed)
    if not observed:
      sentences = [f"The presentation described in the note is most consistent with {name}."]
    elif disease is None:
      sentences = [f"The note describes {corpus.join_words(self._names(observed))}, which fits "
                   f"the clinical picture of {name}."]
    else:
      sentences = self._support_sentences(observed, disease, name)
    if disease is not None and not self.brief:
      sentences += self._absent_sentences(case, disease, name)
      sentences += self._course_sentences(case, disease, name)
    if observed and not self.brief:
      n_gold = len(self._explained(observed, gold_id)) if disease else 0
      sentences += self._alternative_sentences(observed, ranked[len(case.gold_ids):], n_gold)
    sentences.append(f"Overall, {name} ({gold_id}) explains the findings best.")
    return " ".join(sentences)

  # ---- pieces -------------------------------------------------------------------------------

  def _resolved(self, hpo_ids: Sequence[str]) -> list[str]:
    onto = self.kb.ontology
    return list(dict.fromkeys(r for r in map(onto.resolve, hpo_ids) if r))

  def _names(self, hpo_ids: Sequence[str]) -> list[str]:
    return [corpus.lower_first(self.kb.ontology.name(h)) for h in hpo_ids]

  def _support_table(self, disease_id: str) -> tuple[dict[str, corpus.Finding], dict[str, str]]:
    """(annotated finding by id, annotated id by each informative ancestor) of a disease."""
    if disease_id not in self._support:
      self._support[disease_id] = corpus.support_table(self.kb, self.kb.diseases[disease_id])
    return self._support[disease_id]

  def _explained(self, observed: Sequence[str], disease_id: str) -> list[str]:
    """The observed findings a disease's annotations account for (exactly or less specifically)."""
    annotated, vaguer = self._support_table(disease_id)
    return [h for h in observed if h in annotated or h in vaguer]

  def _support_sentences(self, observed: Sequence[str], disease: knowledge.Disease,
                         name: str) -> list[str]:
    """Which observed findings the disease's annotations explain, and how often they occur."""
    annotated, vaguer = self._support_table(disease.id)
    typical, general, unexplained = [], [], []
    for hpo_id in observed:
      label = corpus.lower_first(self.kb.ontology.name(hpo_id))
      if hpo_id in annotated:
        frequency = annotated[hpo_id].frequency
        typical.append(label if frequency is None else
                       f"{label} ({corpus.frequency_band(frequency)[0]})")
      elif hpo_id in vaguer:
        specific = corpus.lower_first(self.kb.ontology.name(vaguer[hpo_id]))
        general.append(f"{label} (a less specific form of {specific})")
      else:
        unexplained.append(label)
    out = []
    if typical:
      out.append(f"Findings known in {name}: {', '.join(typical)}.")
    if general:
      out.append(f"Consistent with {name}: {', '.join(general)}.")
    if unexplained:
      out.append(f"Not explained by {name}: {corpus.join_words(unexplained)}.")
    return out

  def _absent_sentences(self, case: cases_lib.Case, disease: knowledge.Disease,
                        name: str) -> list[str]:
    """Reported absences that the disease predicts (NOT-annotated or frequency 0)."""
    found = corpus.findings(self.kb, disease)
    expected = {n.lower() for n in corpus.absent_findings(self.kb, disease, found)}
    fitting = [n for n in self._names(self._resolved(case.excluded)) if n.lower() in expected]
    if not fitting:
      return []
    return [f"The absence of {corpus.join_words(fitting, 'or')} fits {name}."]

  def _course_sentences(self, case: cases_lib.Case, disease: knowledge.Disease,
                        name: str) -> list[str]:
    out = []
    if disease.inheritance:
      out.append(f"Inheritance of {name}: "
                 f"{corpus.join_words(corpus.term_names(self.kb, disease.inheritance))}.")
    if disease.onsets:
      onsets = corpus.join_words(corpus.term_names(self.kb, disease.onsets), "or")
      fits = "; the patient's onset fits" if case.onset in disease.onsets else ""
      out.append(f"Onset of {name}: {onsets}{fits}.")
    return out

  def _alternative_sentences(self, observed: Sequence[str],
                             alternatives: Sequence[tuple[str, str]], n_gold: int) -> list[str]:
    """What the top alternatives share with the case (n_gold: findings the gold explains)."""
    out = []
    for alt_name, alt_id in alternatives[:MAX_ALTERNATIVES]:
      shared = self._explained(observed, alt_id)
      fewer = ", but fewer of the findings" if len(shared) < n_gold else ""
      out.append(f"{alt_name} ({alt_id}) also accounts for "
                 f"{corpus.join_words(self._names(shared))}{fewer}.")
    return out
