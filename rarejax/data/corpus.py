"""Knowledge corpus (TF-free): disease profile documents and question–answer pairs both ways.

Per disease D (after the knowledge base's exclusions, so a finding that only an excluded
publication supports never appears):

  profile              a document: names, ids, definition, inheritance, onset, findings grouped
                       by frequency, findings typically absent
  disease_findings     D → its most frequent findings
  disease_inheritance  D → mode of inheritance          (when annotated)
  disease_onset        D → age of onset                 (when annotated)
  disease_definition   D → Orphanet definition          (when the knowledge base has one)
  disease_id           D's name → its identifiers
  findings_disease     a few frequency-weighted findings → D  (`findings_questions` per disease)
  disease_support      which findings support D, which argue against it
  finding_support      why one specific finding supports D

Each example is a dict {id, kind, disease_id, question, answer}; documents have question ''.
Everything is a pure function of (knowledge base, disease ids, seed).
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Iterator, Sequence

import numpy as np
from scipy import sparse

from rarejax import knowledge
from rarejax.phenotypes import phenotype_index

KINDS = ("profile", "disease_findings", "disease_inheritance", "disease_onset",
         "disease_definition", "disease_id", "findings_disease", "disease_support",
         "finding_support")
# (lowest frequency, word, range) from most to least frequent (HPO frequency terms).
FREQUENCY_BANDS = ((0.8, "very frequent", "80–99%"), (0.3, "frequent", "30–79%"),
                   (0.05, "occasional", "5–29%"), (1e-9, "very rare", "1–4%"))
SPECIFIC_IC = 3.0  # a finding at least this informative is called specific
MIN_SUPPORT_IC = 2.0  # a less specific finding must be at least this informative to count
MAX_LISTED = 12  # findings named in one answer


@dataclasses.dataclass(frozen=True)
class Finding:
  """One distinct annotated phenotype of a disease, resolved to the current HPO term."""
  hpo_id: str
  name: str
  frequency: float | None  # mean annotated frequency; None when no row gives one
  ic: float


def lower_first(text: str) -> str:
  """'Short stature' → 'short stature'; keeps acronyms and letter prefixes ('EEG abnormality',
  'IgA deficiency', 'X-linked recessive inheritance')."""
  first = text.split(" ", 1)[0]
  if len(first) == 1 or (first[1:].islower() and first[1:2].isalpha()):
    return text[:1].lower() + text[1:]
  return text


def join_words(items: Sequence[str], last: str = "and") -> str:
  """'a', 'a and b', 'a, b and c'."""
  items = list(items)
  return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def frequency_band(frequency: float | None) -> tuple[str, str]:
  """(word, range) of an annotated frequency: ('frequent', '30–79%'); ('reported', 'frequency
  not given') for None and ('absent', '0%') for 0."""
  if frequency is None:
    return "reported", "frequency not given"
  for low, word, span in FREQUENCY_BANDS:
    if frequency >= low:
      return word, span
  return "absent", "0%"


def findings(kb: knowledge.KnowledgeBase, disease: knowledge.Disease) -> list[Finding]:
  """Distinct current phenotype findings of a disease, most frequent first (then most specific)."""
  onto = kb.ontology
  values: dict[str, list[float]] = {}
  for row in disease.phenotypes:
    hpo_id = onto.resolve(row.hpo_id)
    if hpo_id and onto.is_phenotype(hpo_id):
      values.setdefault(hpo_id, [])
      if row.frequency is not None:
        values[hpo_id].append(row.frequency)
  out = [Finding(h, onto.name(h), float(np.mean(v)) if v else None, kb.ic(h))
         for h, v in values.items()]
  return sorted(out, key=lambda f: (-_sort_frequency(f.frequency), -f.ic, f.hpo_id))


def support_table(kb: knowledge.KnowledgeBase, disease: knowledge.Disease,
                  ) -> tuple[dict[str, Finding], dict[str, str]]:
  """What a disease's annotations can account for: (its present findings by HPO id, and for
  each informative ancestor (IC >= MIN_SUPPORT_IC) of one, the annotated id it stands for).

  A note's finding supports the disease when it is annotated, or a less specific form of an
  annotated finding that is still informative; the targets and the evidence finder agree on it.
  """
  annotated = {f.hpo_id: f for f in findings(kb, disease) if f.frequency != 0.0}
  vaguer: dict[str, str] = {}
  for hpo_id in annotated:
    for ancestor in sorted(kb.ontology.ancestors(hpo_id, include_self=False)):
      if kb.ic(ancestor) >= MIN_SUPPORT_IC:
        vaguer.setdefault(ancestor, hpo_id)
  return annotated, vaguer


def _sort_frequency(frequency: float | None) -> float:
  return knowledge.DEFAULT_FREQUENCY if frequency is None else frequency


def absent_findings(kb: knowledge.KnowledgeBase, disease: knowledge.Disease,
                    found: Sequence[Finding]) -> list[str]:
  """Names of NOT-annotated findings and of `found` findings annotated with frequency 0."""
  onto = kb.ontology
  ids = [onto.resolve(a.hpo_id) for a in disease.excluded]
  ids += [f.hpo_id for f in found if f.frequency == 0.0]
  return [onto.name(h) for h in dict.fromkeys(i for i in ids if i)]


def term_names(kb: knowledge.KnowledgeBase, hpo_ids: Sequence[str]) -> list[str]:
  """Lower-cased names of known terms ('autosomal dominant inheritance'), unknown ids dropped."""
  names = (kb.ontology.name(h) for h in hpo_ids)
  return [lower_first(n) for n in dict.fromkeys(names) if n]


def select_diseases(kb: knowledge.KnowledgeBase, n: int | None = None, seed: int = 0,
                    prefix: str = "OMIM", min_findings: int = 5) -> tuple[str, ...]:
  """A deterministic, sorted subset of `n` diseases (all when None) with ≥ min_findings findings."""
  eligible = [d for d in kb.disease_ids(prefix)
              if len(kb.diseases[d].phenotype_ids()) >= min_findings]
  if n is not None:
    if n < 1:
      raise ValueError(f"n must be >= 1 or None, got {n}")
    order = np.random.default_rng(seed).permutation(len(eligible))[:n]
    eligible = [eligible[i] for i in order]
  return tuple(sorted(eligible))


def select_differential_groups(kb: knowledge.KnowledgeBase, n_groups: int, group_size: int,
                               seed: int = 0, prefix: str = "OMIM", min_findings: int = 5,
                               ) -> tuple[str, ...]:
  """`n_groups` groups of `group_size` look-alike diseases (sorted ids, deterministic).

  A group is a seed disease, drawn at random among the diseases with ≥ min_findings findings,
  and the group_size - 1 not yet chosen such diseases whose annotation profiles are most similar
  to it: cosine of their propagated phenotype profiles, each term weighted by its information
  content. No ranker's scores take part, so the groups favour none of them.
  """
  if n_groups < 1 or group_size < 1:
    raise ValueError(f"need n_groups >= 1 and group_size >= 1, got {n_groups}, {group_size}")
  eligible = list(select_diseases(kb, None, seed, prefix, min_findings))
  if n_groups * group_size > len(eligible):
    raise ValueError(f"{n_groups} groups of {group_size} need {n_groups * group_size} diseases; "
                     f"only {len(eligible)} {prefix} diseases have >= {min_findings} findings")
  index = phenotype_index.PhenotypeIndex(kb, disease_ids=eligible)
  profiles = (index.freq > 0).astype(np.float32) @ sparse.diags(index.ic)
  norms = np.sqrt(np.asarray(profiles.multiply(profiles).sum(axis=1)).ravel())
  profiles = sparse.diags(1.0 / np.maximum(norms, 1e-9)) @ profiles
  free = np.ones(len(eligible), bool)  # the size check above leaves >= group_size free per group
  chosen: list[str] = []
  for first in np.random.default_rng(seed).permutation(len(eligible)):
    if len(chosen) == n_groups * group_size:
      break
    if not free[first]:
      continue
    similarity = (profiles @ profiles[first].T).toarray().ravel()
    similarity[~free] = -np.inf
    similarity[first] = np.inf
    group = np.argsort(-similarity, kind="stable")[:group_size]
    free[group] = False
    chosen += [eligible[i] for i in group]
  return tuple(sorted(chosen))


def profile_document(kb: knowledge.KnowledgeBase, disease: knowledge.Disease) -> str:
  """The disease's profile as a short structured document."""
  lines = [f"{disease.name} ({disease.id})"]
  if disease.synonyms:
    lines.append(f"Also known as: {'; '.join(disease.synonyms)}.")
  if disease.xrefs:
    lines.append(f"Equivalent identifiers: {', '.join(disease.xrefs)}.")
  if disease.definition:
    lines.append(f"Definition: {disease.definition.strip()}")
  if disease.inheritance:
    lines.append(f"Inheritance: {join_words(term_names(kb, disease.inheritance))}.")
  if disease.onsets:
    lines.append(f"Onset: {join_words(term_names(kb, disease.onsets), 'or')}.")
  found = findings(kb, disease)
  bands: dict[str, list[str]] = {}
  for finding in found:
    if finding.frequency != 0.0:
      word, span = frequency_band(finding.frequency)
      bands.setdefault(f"{word} ({span})", []).append(lower_first(finding.name))
  for band, names in bands.items():
    lines.append(f"Findings, {band}: {', '.join(names)}.")
  absent = absent_findings(kb, disease, found)
  if absent:
    lines.append(f"Findings typically absent: {', '.join(map(lower_first, absent))}.")
  return "\n".join(lines)


def disease_examples(kb: knowledge.KnowledgeBase, disease_id: str, seed: int = 0,
                     findings_questions: int = 3) -> list[dict[str, str]]:
  """Every corpus example about one disease (see module docstring), in a fixed order."""
  disease = kb.diseases.get(disease_id)
  if disease is None:
    raise KeyError(f"unknown disease {disease_id!r}: not in the knowledge base (knowledge "
                   f"digest {kb.version.digest})")
  found = findings(kb, disease)
  label = f"{disease.name} ({disease.id})"
  qa: list[tuple[str, str, str]] = [("profile", "", profile_document(kb, disease))]
  present = [f for f in found if f.frequency != 0.0]
  if present:
    top = [lower_first(f.name) for f in present[:MAX_LISTED]]
    qa.append(("disease_findings", f"What are the typical clinical findings of {label}?",
               f"Typical findings of {disease.name} include {join_words(top)}."))
  if disease.inheritance:
    modes = join_words(term_names(kb, disease.inheritance))
    qa.append(("disease_inheritance", f"How is {label} inherited?",
               f"Inheritance of {disease.name}: {modes}."))
  if disease.onsets:
    qa.append(("disease_onset", f"When does {label} usually begin?",
               f"Onset of {disease.name}: {join_words(term_names(kb, disease.onsets), 'or')}."))
  if disease.definition:
    qa.append(("disease_definition", f"What is {disease.name}?", disease.definition.strip()))
  other_ids = "".join(f", also {x}" for x in disease.xrefs)
  qa.append(("disease_id", f"What is the identifier of {disease.name}?",
             f"{disease.name} is {disease.id}{other_ids}."))
  rng = np.random.default_rng([seed, zlib.crc32(disease_id.encode())])
  for _ in range(findings_questions if len(present) >= 2 else 0):
    names = [lower_first(f.name) for f in _draw_findings(present, rng)]
    qa.append(("findings_disease", f"A patient presents with {join_words(names)}. Which rare "
               "disease best explains these findings?", label))
  if present:
    qa.append(("disease_support", f"Which findings support a diagnosis of {label}, and which "
               "argue against it?", _support_answer(present, absent_findings(kb, disease, found))))
    best = max(present[:MAX_LISTED], key=lambda f: (f.ic, f.hpo_id))
    specific = ", and few other diseases share it" if best.ic >= SPECIFIC_IC else ""
    qa.append(("finding_support", f"Why does {lower_first(best.name)} support {label}?",
               f"{best.name} is {_frequency_phrase(best.frequency)} finding of {label}"
               f"{specific}, so its presence raises the likelihood of this diagnosis."))
  return [{"id": f"{disease_id}|{kind}|{i}", "kind": kind, "disease_id": disease_id,
           "question": question, "answer": answer}
          for i, (kind, question, answer) in enumerate(qa)]


def _draw_findings(present: Sequence[Finding], rng: np.random.Generator) -> list[Finding]:
  """2–6 findings drawn without replacement, weighted by annotated frequency."""
  size = min(len(present), int(rng.integers(2, 7)))
  weights = np.array([_sort_frequency(f.frequency) for f in present]) + 0.05
  chosen = rng.choice(len(present), size, replace=False, p=weights / weights.sum())
  return [present[i] for i in sorted(chosen)]


def with_frequency(name: str, frequency: float | None) -> str:
  """'ptosis (frequent, 30–79%)'; just the name when no frequency is annotated."""
  if frequency is None:
    return name
  return f"{name} ({', '.join(frequency_band(frequency))})"


def _frequency_phrase(frequency: float | None) -> str:
  """'a very frequent', 'an occasional', 'a reported'."""
  word, _ = frequency_band(frequency)
  return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _support_answer(present: Sequence[Finding], absent: Sequence[str]) -> str:
  """Supporting findings with their frequencies; absent findings (or missing frequent ones)."""
  listed = [with_frequency(lower_first(f.name), f.frequency) for f in present[:MAX_LISTED]]
  if absent:
    names = join_words([lower_first(a) for a in absent[:MAX_LISTED]], "or")
    against = f"the presence of {names}, which are typically absent"
  else:
    names = join_words([lower_first(f.name) for f in present[:3]])
    against = f"the absence of its most frequent findings ({names})"
  return f"Supporting findings: {'; '.join(listed)}. Arguing against it: {against}."


def knowledge_examples(kb: knowledge.KnowledgeBase, disease_ids: Sequence[str], seed: int = 0,
                       findings_questions: int = 3) -> Iterator[dict[str, str]]:
  """Corpus examples for every disease, in the order given."""
  for disease_id in disease_ids:
    yield from disease_examples(kb, disease_id, seed, findings_questions)
