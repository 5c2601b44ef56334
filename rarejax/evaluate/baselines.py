"""Classical phenotype rankers on the shared Case type: Resnik BMA, likelihood ratio, case-based kNN, fusion.

Each ranker maps a case's structured phenotypes (observed and excluded HPO ids) to one score per
indexed disease (higher is better). `rank_diseases` turns scores into a ranking with a fixed,
seeded tie-break, so that equal scores neither help nor hurt the gold disease systematically.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Protocol, Sequence

import numpy as np
from scipy import sparse

from rarejax.evaluate.phenotype_index import PhenotypeIndex, Query

_NEG_INF = np.float32(-1e30)


class PhenotypeCase(Protocol):
  """What a ranker reads from a case (rarejax.cases.Case satisfies it)."""
  observed: Sequence[str]
  excluded: Sequence[str]


class Ranker(Protocol):
  name: str

  def scores(self, query: Query) -> np.ndarray:
    """float32 [n_diseases] scores aligned with PhenotypeIndex.disease_ids."""


@dataclasses.dataclass
class ResnikRanker:
  """Phenomizer-style semantic similarity: Resnik (IC of the most informative common ancestor),
  best-match average; `symmetric` averages query→disease with disease→query."""
  index: PhenotypeIndex
  symmetric: bool = False
  name: str = "resnik"

  def scores(self, query: Query) -> np.ndarray:
    idx = self.index
    n = len(idx.disease_ids)
    if query.observed.size == 0:
      return np.zeros(n, np.float32)
    reach = idx.freq  # >0 where the disease's profile reaches the term
    query_to_disease = np.zeros(n, np.float32)
    common = np.unique(np.concatenate([idx.ancestors_of(q) for q in query.observed]))
    reached = (reach[:, common] > 0).toarray()  # [n_diseases, |C|]
    position = {c: j for j, c in enumerate(common)}
    for q in query.observed:
      cols = np.fromiter((position[c] for c in idx.ancestors_of(q)), dtype=np.int64)
      query_to_disease += (reached[:, cols] * idx.ic[common[cols]]).max(axis=1)
    query_to_disease /= query.observed.size
    if not self.symmetric:
      return query_to_disease
    # best[t] = max IC over the ancestors of t that are also ancestors of some query term
    weights = sparse.diags(idx.ic[common])
    best = (idx.ancestors[:, common] @ weights).max(axis=1).toarray().ravel()
    disease_to_query = idx.direct @ best
    return (0.5 * (query_to_disease + disease_to_query)).astype(np.float32)


@dataclasses.dataclass
class LikelihoodRatioRanker:
  """LIRICAL-like phenotype likelihood ratios, summed in log space.

  For an observed term q and disease d, P(q | d) is the propagated annotated frequency of q in d;
  when d only reaches an ancestor c of q, P(q | d) = freq[d, c] * bg(q) / bg(c) (the chance that a
  finding under c is specifically q). P(q | not d) is bg(q), the fraction of diseases reaching q.
  An observed term under one of d's NOT annotations gets `negated_penalty`. An excluded term e
  contributes log(1 - 0.9 * freq[d, e]).
  """
  index: PhenotypeIndex
  negated_penalty: float = float(np.log(0.01))
  floor: float = 1e-6
  name: str = "likelihood_ratio"

  def scores(self, query: Query) -> np.ndarray:
    idx = self.index
    total = np.zeros(len(idx.disease_ids), np.float32)
    for q in query.observed:
      anc = idx.ancestors_of(q)
      ratio = idx.background[q] / idx.background[anc]
      p_given_d = (idx.freq[:, anc].toarray() * ratio).max(axis=1)
      total += np.log(np.maximum(p_given_d, self.floor)) - np.log(idx.background[q])
      total += self.negated_penalty * (idx.negated[:, [q]].toarray().ravel() > 0)
    if query.excluded.size:
      present = idx.freq[:, query.excluded].toarray()
      total += np.log(np.maximum(1.0 - 0.9 * present, self.floor)).sum(axis=1)
    return total


@dataclasses.dataclass
class CaseKnnRanker:
  """Case-based nearest neighbours: IC-weighted cosine between propagated phenotype profiles of the
  query and each training case; a disease scores its best-matching training case (diseases without
  training cases score -inf)."""
  index: PhenotypeIndex
  cases: Sequence[PhenotypeCase]
  gold_ids: Sequence[Sequence[str]]
  name: str = "case_knn"

  def __post_init__(self):
    idx = self.index
    rows, owners = [], []
    for case, gold in zip(self.cases, self.gold_ids):
      targets = [idx.disease_index[g] for g in gold if g in idx.disease_index]
      query = idx.query(case.observed, case.excluded)
      if not targets or query.observed.size == 0:
        continue
      rows.append(self._profile(query))
      owners.append(targets[0])
    self.n_cases = len(rows)
    self._profiles = sparse.vstack(rows).tocsr() if rows else None
    self._owner = np.asarray(owners, np.int64)

  def _profile(self, query: Query) -> sparse.csr_matrix:
    idx = self.index
    terms = np.unique(np.concatenate([idx.ancestors_of(q) for q in query.observed]))
    weights = np.sqrt(idx.ic[terms])
    weights /= max(np.linalg.norm(weights), 1e-9)
    return sparse.csr_matrix((weights, terms, [0, len(terms)]), shape=(1, len(idx.terms)))

  def scores(self, query: Query) -> np.ndarray:
    out = np.full(len(self.index.disease_ids), _NEG_INF, np.float32)
    if self._profiles is None or query.observed.size == 0:
      return out
    similarity = (self._profiles @ self._profile(query).T).toarray().ravel().astype(np.float32)
    np.maximum.at(out, self._owner, similarity)
    return out


def rank_order(scores: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
  """Disease indices from best to worst; ties ordered by the fixed permutation `tie_break`."""
  return np.lexsort((tie_break, -scores))


def gold_rank(scores: np.ndarray, gold: Sequence[int], tie_break: np.ndarray) -> int | None:
  """1-based rank of the best-ranked gold disease, None when no gold disease is indexed."""
  if not gold:
    return None
  gold = np.asarray(gold)
  best = gold[np.lexsort((tie_break[gold], -scores[gold]))[0]]
  beats = (scores > scores[best]) | ((scores == scores[best]) & (tie_break < tie_break[best]))
  return int(beats.sum()) + 1


def ranks_from_scores(scores: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
  """int [n] rank of every disease (1 = best)."""
  ranks = np.empty(len(scores), np.int64)
  ranks[rank_order(scores, tie_break)] = np.arange(1, len(scores) + 1)
  return ranks


@dataclasses.dataclass
class FusionRanker:
  """Reciprocal-rank fusion: score(d) = sum_m w_m / (k + rank_m(d))."""
  rankers: Sequence[Ranker]
  weights: Sequence[float]
  tie_break: np.ndarray
  k: float = 60.0
  name: str = "fusion"

  def scores(self, query: Query) -> np.ndarray:
    total = np.zeros(len(self.tie_break), np.float64)
    for ranker, weight in zip(self.rankers, self.weights):
      total += weight / (self.k + ranks_from_scores(ranker.scores(query), self.tie_break))
    return total


def make_tie_break(n: int, seed: int = 0) -> np.ndarray:
  """A fixed random permutation used to order equal scores."""
  return np.random.default_rng(seed).permutation(n)


@dataclasses.dataclass(frozen=True)
class RankedCase:
  """One ranker's output on one case."""
  gold_rank: int | None
  top_ids: tuple[str, ...]
  top_scores: tuple[float, ...]


def rank_cases(ranker: Ranker, index: PhenotypeIndex, cases: Sequence[PhenotypeCase],
               gold_ids: Sequence[Sequence[str]], tie_break: np.ndarray,
               top_k: int = 10) -> list[RankedCase]:
  """Runs a ranker over cases; gold ids outside the index count as not found (rank None)."""
  results = []
  for case, gold in zip(cases, gold_ids):
    scores = ranker.scores(index.query(case.observed, case.excluded))
    order = rank_order(scores, tie_break)[:top_k]
    gold_idx = [index.disease_index[g] for g in gold if g in index.disease_index]
    results.append(RankedCase(
        gold_rank=gold_rank(scores, gold_idx, tie_break),
        top_ids=tuple(index.disease_ids[i] for i in order),
        top_scores=tuple(float(scores[i]) for i in order)))
  return results


def choose_fusion_weights(
    rankers: Sequence[Ranker], index: PhenotypeIndex, cases: Sequence[PhenotypeCase],
    gold_ids: Sequence[Sequence[str]], tie_break: np.ndarray,
    grid: Sequence[float] = (0.0, 0.5, 1.0, 2.0), ks: Sequence[float] = (1.0, 10.0, 60.0)
) -> tuple[tuple[float, ...], float, float]:
  """Picks reciprocal-rank-fusion weights and k maximizing MRR on the given (validation) cases.

  Each ranker scores each case once; every (weights, k) of the grid is then evaluated exactly
  (full fused ranking, same tie-break as FusionRanker). Returns (weights, k, validation MRR).
  """
  per_case = []  # (ranks int32 [rankers, n], gold indices)
  for case, gold in zip(cases, gold_ids):
    gold_idx = [index.disease_index[g] for g in gold if g in index.disease_index]
    if gold_idx:
      query = index.query(case.observed, case.excluded)
      per_case.append((np.stack([ranks_from_scores(r.scores(query), tie_break)
                                 for r in rankers]).astype(np.int32), gold_idx))
  if not per_case:
    raise ValueError("choose_fusion_weights: no validation case has an indexed gold disease")
  best, best_mrr = None, -1.0
  for k in ks:
    features = [(1.0 / (k + ranks), gold) for ranks, gold in per_case]
    for weights in itertools.product(grid, repeat=len(rankers)):
      if not any(weights):
        continue
      mrr = float(np.mean([1.0 / gold_rank(np.asarray(weights) @ f, g, tie_break)
                           for f, g in features]))
      if mrr > best_mrr:
        best, best_mrr = (tuple(float(w) for w in weights), float(k)), mrr
  return best[0], best[1], best_mrr


def default_rankers(index: PhenotypeIndex, train_cases: Sequence[PhenotypeCase] = (),
                    train_gold: Sequence[Sequence[str]] = ()) -> Mapping[str, Ranker]:
  """The three classical rankers (kNN only when training cases are given)."""
  rankers: dict[str, Ranker] = {"resnik": ResnikRanker(index),
                                "likelihood_ratio": LikelihoodRatioRanker(index)}
  if train_cases:
    rankers["case_knn"] = CaseKnnRanker(index, train_cases, train_gold)
  return rankers
