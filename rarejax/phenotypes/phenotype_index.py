"""Sparse disease × HPO-term matrices (propagated frequencies, IC, background) for vectorized rankers."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse

from rarejax import knowledge
from rarejax.knowledge import ontology as ontology_lib


@dataclasses.dataclass(frozen=True)
class Query:
  """A case's phenotypes as term indices: observed and excluded (unknown/non-phenotype ids dropped)."""
  observed: np.ndarray  # int32 [Q]
  excluded: np.ndarray  # int32 [E]
  n_dropped: int = 0


class PhenotypeIndex:
  """Everything classical rankers need, computed once per knowledge base.

  Terms are the current HPO terms under 'Phenotypic abnormality'. For disease d and term t:
    freq[d, t]     = max annotated frequency over d's annotations a with t an ancestor-or-self of a
                     (DEFAULT_FREQUENCY when the row has no frequency; 0 where d does not reach t)
    negated[d, t]  = 1 when d has a NOT annotation n with n an ancestor-or-self of t
    direct[d, t]   = 1/|A_d| for d's direct annotations A_d (row-normalized, for averages over A_d)
    ancestors[t, c] = 1 when c is an ancestor-or-self of t
  ic[t] is the knowledge base's information content, background[t] the smoothed fraction of
  indexed diseases whose propagated profile contains t.
  """

  def __init__(self, kb: knowledge.KnowledgeBase, prefixes: Sequence[str] = ("OMIM",),
               disease_ids: Sequence[str] | None = None):
    """Indexes the diseases of `prefixes` (or exactly `disease_ids`, e.g. an experiment's subset)."""
    onto = kb.ontology
    self.ontology = onto
    self.terms = sorted(onto.descendants(ontology_lib.PHENOTYPIC_ABNORMALITY))
    self.term_index = {t: i for i, t in enumerate(self.terms)}
    self.disease_ids = (list(disease_ids) if disease_ids is not None
                        else [d for p in prefixes for d in kb.disease_ids(p)])
    self.disease_index = {d: i for i, d in enumerate(self.disease_ids)}
    self.ic = np.array([kb.ic(t) for t in self.terms], dtype=np.float32)
    self._anc_idx = [np.fromiter((self.term_index[a] for a in onto.ancestors(t)
                                  if a in self.term_index), dtype=np.int32) for t in self.terms]
    self.ancestors = _indicator_matrix(self._anc_idx, len(self.terms)).tocsc()
    freq_rows, neg_rows, direct_rows = [], [], []
    for disease_id in self.disease_ids:
      freq, negated, direct = self._disease_rows(kb.diseases[disease_id])
      freq_rows.append(freq)
      neg_rows.append(negated)
      direct_rows.append(direct)
    self.freq = _stack_rows(freq_rows, len(self.terms)).tocsc()
    self.negated = _stack_rows(neg_rows, len(self.terms)).tocsc()
    self.direct = _stack_rows(direct_rows, len(self.terms)).tocsr()
    n = len(self.disease_ids)
    counts = np.asarray((self.freq > 0).sum(axis=0)).ravel()
    self.background = ((counts + 1.0) / (n + 1.0)).astype(np.float32)

  def _disease_rows(self, disease: knowledge.Disease):
    resolve = self.ontology.resolve
    best: dict[int, float] = {}
    direct: set[int] = set()
    negated: set[int] = set()
    for annotation in disease.phenotypes:
      term = resolve(annotation.hpo_id)
      if term not in self.term_index:
        continue
      freq = knowledge.DEFAULT_FREQUENCY if annotation.frequency is None else annotation.frequency
      if freq <= 0.0:  # 'Excluded (0%)' frequency: treat as a NOT annotation
        negated.add(self.term_index[term])
        continue
      direct.add(self.term_index[term])
      for anc in self._anc_idx[self.term_index[term]]:
        best[int(anc)] = max(best.get(int(anc), 0.0), freq)
    for annotation in disease.excluded:
      term = resolve(annotation.hpo_id)
      if term in self.term_index:
        negated.add(self.term_index[term])
    negated_down = {int(i) for t in negated for i in self._descendant_idx(t)}
    direct_weight = 1.0 / max(1, len(direct))
    return best, dict.fromkeys(negated_down, 1.0), dict.fromkeys(direct, direct_weight)

  def _descendant_idx(self, term_idx: int) -> Iterable[int]:
    return (self.term_index[d] for d in self.ontology.descendants(self.terms[term_idx]))

  def query(self, observed: Iterable[str], excluded: Iterable[str] = ()) -> Query:
    """Maps HPO ids (alt/obsolete ids resolved) to term indices; drops what is not a phenotype."""
    def indices(ids):
      out = []
      for hpo_id in ids:
        term = self.ontology.resolve(hpo_id)
        if term in self.term_index:
          out.append(self.term_index[term])
      return np.unique(np.asarray(out, dtype=np.int32))
    observed, excluded = list(observed), list(excluded)
    obs, exc = indices(observed), indices(excluded)
    return Query(obs, exc, n_dropped=len(set(observed)) + len(set(excluded)) - len(obs) - len(exc))

  def ancestors_of(self, term_idx: int) -> np.ndarray:
    """Ancestor-or-self term indices of one term."""
    return self._anc_idx[term_idx]


def _indicator_matrix(rows: Sequence[np.ndarray], n_cols: int) -> sparse.csr_matrix:
  indptr = np.cumsum([0] + [len(r) for r in rows])
  indices = np.concatenate(rows) if rows else np.zeros(0, np.int32)
  return sparse.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                           shape=(len(rows), n_cols))


def _stack_rows(rows: Sequence[dict[int, float]], n_cols: int) -> sparse.csr_matrix:
  indptr = np.cumsum([0] + [len(r) for r in rows])
  indices = np.fromiter((k for r in rows for k in r), dtype=np.int32, count=int(indptr[-1]))
  values = np.fromiter((v for r in rows for v in r.values()), dtype=np.float32,
                       count=int(indptr[-1]))
  return sparse.csr_matrix((values, indices, indptr), shape=(len(rows), n_cols))
