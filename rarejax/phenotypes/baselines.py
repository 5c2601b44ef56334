"""Classical phenotype rankers on the shared Case type: Resnik BMA, likelihood ratio, case-based, fusion.

Each ranker maps a case's structured phenotypes (observed and excluded HPO ids) to one score per
indexed disease (higher is better); a case-based ranker scores a disease without training cases
-inf (`UNRANKED`: it has nothing to say about it). `rank_order` turns scores into a ranking with a
fixed, seeded tie-break, so that equal scores neither help nor hurt the gold disease
systematically.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Protocol, Sequence

import numpy as np
from scipy import sparse

from rarejax.phenotypes.phenotype_index import PhenotypeIndex, Query

UNRANKED = np.float32(-1e30)  # the score of a disease a ranker does not rank


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
    out = np.full(len(self.index.disease_ids), UNRANKED, np.float32)
    if self._profiles is None or query.observed.size == 0:
      return out
    similarity = (self._profiles @ self._profile(query).T).toarray().ravel().astype(np.float32)
    np.maximum.at(out, self._owner, similarity)
    return out


@dataclasses.dataclass
class CaseResnikRanker:
  """Case-based Resnik: each training case scores the best-match average (BMA) of Resnik
  similarities (IC of the most informative common ancestor) between the query's terms and the
  case's terms; a disease scores the mean of its `top_cases` best cases (1: its best case).

  BMA query→case = mean over query terms q of max over case terms c of sim(q, c); `symmetric`
  averages it with case→query. Diseases without training cases score UNRANKED. Similarity rows
  sim(q, ·) over the training cases' distinct terms are computed once per query term.
  """
  index: PhenotypeIndex
  cases: Sequence[PhenotypeCase]
  gold_ids: Sequence[Sequence[str]]
  symmetric: bool = True  # the inner split's best (experiments/case_rankers_*)
  top_cases: int = 2
  name: str = "case_resnik"

  def __post_init__(self):
    if self.top_cases < 1:
      raise ValueError(f"CaseResnikRanker.top_cases must be >= 1, got {self.top_cases}")
    idx = self.index
    terms, owners = [], []
    for case, gold in zip(self.cases, self.gold_ids):
      targets = [idx.disease_index[g] for g in gold if g in idx.disease_index]
      observed = idx.query(case.observed, case.excluded).observed
      if targets and observed.size:
        terms.append(observed)
        owners.append(targets[0])
    self.n_cases = len(terms)
    self._owner = np.asarray(owners, np.int64)
    lengths = np.array([len(t) for t in terms], np.int64)
    self._lengths = lengths.astype(np.float32)
    self._starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(terms) if terms else np.zeros(0, np.int32)
    vocabulary, self._flat = np.unique(flat, return_inverse=True)  # distinct case terms
    self._reach = idx.ancestors[vocabulary].tocsc()  # [V, terms]: ancestors of case terms
    self._rows: dict[int, np.ndarray] = {}

  def _similarity(self, term: int) -> np.ndarray:
    """float32 [V] Resnik similarity of one term to every distinct training-case term."""
    row = self._rows.get(term)
    if row is None:
      common = self.index.ancestors_of(term)
      reached = self._reach[:, common].toarray()
      row = self._rows[term] = (reached * self.index.ic[common]).max(axis=1)
    return row

  def case_scores(self, query: Query) -> np.ndarray:
    """float32 [n_cases] BMA similarity of the query to each training case."""
    pairs = np.stack([self._similarity(int(q)) for q in query.observed])[:, self._flat]
    to_case = np.maximum.reduceat(pairs, self._starts, axis=1).mean(axis=0)
    if not self.symmetric:
      return to_case
    to_query = np.add.reduceat(pairs.max(axis=0), self._starts) / self._lengths
    return 0.5 * (to_case + to_query)

  def scores(self, query: Query) -> np.ndarray:
    if not self.n_cases or query.observed.size == 0:
      return np.full(len(self.index.disease_ids), UNRANKED, np.float32)
    return top_mean_by_owner(self.case_scores(query), self._owner,
                             len(self.index.disease_ids), self.top_cases)


def top_mean_by_owner(values: np.ndarray, owner: np.ndarray, n_owners: int,
                      top: int) -> np.ndarray:
  """float32 [n_owners]: the mean of each owner's `top` largest values (fewer when it has fewer);
  UNRANKED for owners without values."""
  order = np.lexsort((-values, owner))
  owner, values = owner[order], values[order]
  first = np.searchsorted(owner, owner)  # index of each owner's first (best) value
  keep = np.arange(len(owner)) - first < top
  total = np.zeros(n_owners, np.float64)
  count = np.zeros(n_owners, np.float64)
  np.add.at(total, owner[keep], values[keep])
  np.add.at(count, owner[keep], 1.0)
  out = np.full(n_owners, UNRANKED, np.float32)
  has = count > 0
  out[has] = total[has] / count[has]
  return out


class Memoized:
  """A ranker whose scores are kept per query (a fusion tuned or run next to its base rankers
  reuses their scores); holds one score vector per distinct query."""

  def __init__(self, ranker: Ranker):
    self.ranker, self.name = ranker, ranker.name
    self._memo: dict[tuple[bytes, bytes], np.ndarray] = {}

  def scores(self, query: Query) -> np.ndarray:
    key = (query.observed.tobytes(), query.excluded.tobytes())
    if key not in self._memo:
      self._memo[key] = self.ranker.scores(query)
    return self._memo[key]


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


def reciprocal_ranks(scores: np.ndarray, tie_break: np.ndarray, k: float) -> np.ndarray:
  """float [n] 1 / (k + rank) of every disease the scores rank; 0 for UNRANKED diseases."""
  return np.where(scores > UNRANKED, 1.0 / (k + ranks_from_scores(scores, tie_break)), 0.0)


@dataclasses.dataclass
class RankFusion:
  """Reciprocal-rank fusion over what each ranker ranks.

  score(d) = sum_m w_m / (k + rank_m(d)) over the rankers m that rank d (not UNRANKED); with
  `mean`, divided by sum_m w_m over those same rankers. A disease a case-based ranker leaves
  UNRANKED (no training case) is still ranked by the annotation rankers; with `mean` it is judged
  by them alone on the same scale, so the case ranker cannot push it out of the ranking.
  """
  rankers: Sequence[Ranker]
  weights: Sequence[float]
  tie_break: np.ndarray
  k: float = 60.0
  mean: bool = True
  name: str = "rrf"

  def scores(self, query: Query) -> np.ndarray:
    fused = np.zeros(len(self.tie_break), np.float64)
    weight_sum = np.zeros(len(self.tie_break), np.float64)
    for ranker, weight in zip(self.rankers, self.weights):
      if weight:
        scores = ranker.scores(query)
        fused += weight * reciprocal_ranks(scores, self.tie_break, self.k)
        weight_sum += weight * (scores > UNRANKED)
    return fused / np.maximum(weight_sum, 1e-12) if self.mean else fused


@dataclasses.dataclass(frozen=True)
class RankFusionChoice:
  """RankFusion settings and the MRR they reached on the cases they were chosen on."""
  weights: tuple[float, ...]
  k: float
  mean: bool
  mrr: float


# Weight grids of the rank fusion: an annotation ranker (which ranks every disease) never gets 0,
# so that a disease without training cases is always ranked; a case-based ranker may.
ANNOTATION_WEIGHTS = (0.5, 1.0, 2.0)
CASE_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
FUSION_KS = (1.0, 3.0, 10.0, 30.0, 60.0)


def choose_rank_fusion(
    rankers: Sequence[Ranker], index: PhenotypeIndex, cases: Sequence[PhenotypeCase],
    gold_ids: Sequence[Sequence[str]], tie_break: np.ndarray,
    grids: Sequence[Sequence[float]], **settings) -> RankFusionChoice:
  """RankFusion weights (one grid per ranker), k and `mean` maximizing MRR on the given (tuning)
  cases (see `rank_fusion_grid`)."""
  ranks, gold = tuning_ranks(rankers, index, cases, gold_ids, tie_break)
  return max(rank_fusion_grid(ranks, gold, tie_break, grids, **settings), key=lambda c: c.mrr)


def rank_fusion_grid(ranks: np.ndarray, gold: np.ndarray, tie_break: np.ndarray,
                     grids: Sequence[Sequence[float]], ks: Sequence[float] = FUSION_KS,
                     means: Sequence[bool] = (False, True)) -> list[RankFusionChoice]:
  """Every RankFusion setting (weights from `grids`, one per ranker; k; mean) with its exact MRR
  (full fused ranking, same tie-break as RankFusion), vectorized over cases; `ranks`, `gold` from
  `tuning_ranks`. Weight vectors that differ only by a common factor rank alike and are tried
  once."""
  if len(grids) != ranks.shape[1]:
    raise ValueError(f"rank_fusion_grid: {len(grids)} weight grids for {ranks.shape[1]} rankers")
  present = (ranks > 0).astype(np.float32)
  out = []
  for k in ks:
    reciprocal = np.where(ranks > 0, 1.0 / (k + ranks), 0.0).astype(np.float32)
    for weights in _weight_vectors(grids):
      fused = np.einsum("nrd,r->nd", reciprocal, weights)
      for mean in means:
        scores = (fused / np.maximum(np.einsum("nrd,r->nd", present, weights), 1e-12)
                  if mean else fused)
        mrr = float(np.mean(1.0 / _gold_ranks(scores, gold, tie_break)))
        out.append(RankFusionChoice(tuple(float(w) for w in weights), float(k), mean, mrr))
  return out


def tuning_ranks(rankers: Sequence[Ranker], index: PhenotypeIndex,
                 cases: Sequence[PhenotypeCase], gold_ids: Sequence[Sequence[str]],
                 tie_break: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(int32 [cases, rankers, diseases] ranks with 0 = UNRANKED, int [cases, G] gold indices
  padded by repeating the first) over the cases that have an indexed gold disease."""
  ranks, gold = [], []
  for case, ids in zip(cases, gold_ids):
    gold_idx = [index.disease_index[g] for g in ids if g in index.disease_index]
    if gold_idx:
      query = index.query(case.observed, case.excluded)
      per_ranker = []
      for ranker in rankers:
        scores = ranker.scores(query)
        per_ranker.append(np.where(scores > UNRANKED, ranks_from_scores(scores, tie_break), 0))
      ranks.append(np.stack(per_ranker).astype(np.int32))
      gold.append(gold_idx)
  if not ranks:
    raise ValueError("choose_rank_fusion: no tuning case has an indexed gold disease")
  width = max(len(g) for g in gold)
  return np.stack(ranks), np.array([g + g[:1] * (width - len(g)) for g in gold])


def _weight_vectors(grids: Sequence[Sequence[float]]) -> list[np.ndarray]:
  """Every non-zero weight vector over the grids, one per direction (scaled to max 1)."""
  seen, out = set(), []
  for weights in itertools.product(*grids):
    if any(weights):
      key = tuple(np.round(np.asarray(weights) / max(weights), 6))
      if key not in seen:
        seen.add(key)
        out.append(np.asarray(weights, np.float32))
  return out


def _gold_ranks(scores: np.ndarray, gold: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
  """int [cases] 1-based rank of the best gold disease per row of scores [cases, diseases]."""
  beats = []
  for column in gold.T:
    own = np.take_along_axis(scores, column[:, None], axis=1)
    beats.append(((scores > own) | ((scores == own) & (tie_break < tie_break[column][:, None])))
                 .sum(axis=1))
  return np.min(beats, axis=0) + 1


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
