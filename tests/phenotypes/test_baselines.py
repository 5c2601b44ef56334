"""Tests for the classical phenotype rankers: Resnik, likelihood ratio, case kNN, case Resnik,
fusions, tie-breaks."""
import dataclasses

import numpy as np
import pytest
from scipy import sparse

from rarejax.phenotypes import baselines
from rarejax.phenotypes.phenotype_index import PhenotypeIndex, Query


@dataclasses.dataclass(frozen=True)
class Pheno:
  observed: tuple = ()
  excluded: tuple = ()


@pytest.fixture(scope="module")
def index(kb):
  return PhenotypeIndex(kb)


@pytest.fixture(scope="module")
def tie_break(index):
  return baselines.make_tie_break(len(index.disease_ids))


def _profile(kb, disease_id, n=8):
  """The n most specific annotated phenotypes of a disease (by IC)."""
  ids = kb.diseases[disease_id].phenotype_ids()
  return tuple(sorted(ids, key=kb.ic, reverse=True)[:n])


@pytest.mark.parametrize("disease_id", ["OMIM:154700", "OMIM:219700", "OMIM:143100"])
@pytest.mark.parametrize("make", [baselines.ResnikRanker, baselines.LikelihoodRatioRanker])
def test_annotation_rankers_find_a_textbook_case(kb, index, tie_break, make, disease_id):
  case = Pheno(observed=_profile(kb, disease_id))
  [ranked] = baselines.rank_cases(make(index), index, [case], [(disease_id,)], tie_break)
  assert ranked.gold_rank is not None and ranked.gold_rank <= 3
  assert ranked.top_ids[ranked.gold_rank - 1] == disease_id
  assert list(ranked.top_scores) == sorted(ranked.top_scores, reverse=True)


def test_symmetric_resnik_differs_and_is_bounded(kb, index):
  query = index.query(_profile(kb, "OMIM:154700"))
  one_sided = baselines.ResnikRanker(index).scores(query)
  both = baselines.ResnikRanker(index, symmetric=True).scores(query)
  assert not np.allclose(one_sided, both)
  assert one_sided.max() <= index.ic.max() + 1e-5 and one_sided.min() >= 0


def test_excluded_frequent_finding_lowers_likelihood(kb, index):
  marfan = kb.diseases["OMIM:154700"]
  frequent = max(marfan.phenotypes, key=lambda a: a.frequency or 0).hpo_id
  observed = tuple(x for x in _profile(kb, "OMIM:154700") if x != frequent)
  ranker = baselines.LikelihoodRatioRanker(index)
  d = index.disease_index["OMIM:154700"]
  plain = ranker.scores(index.query(observed))[d]
  negated = ranker.scores(index.query(observed, [frequent]))[d]
  assert negated < plain


def test_query_resolves_obsolete_and_drops_non_phenotypes(kb, index):
  alt = next(a for t in kb.ontology.terms.values() if not t.is_obsolete
             and t.id in index.term_index for a in t.alt_ids)
  query = index.query([alt, "HP:0000006", "HP:9999999"])  # alt id, inheritance term, unknown
  assert query.observed.size == 1 and query.n_dropped == 2


def test_case_knn_prefers_the_disease_of_a_matching_training_case(kb, index, tie_break):
  train = [Pheno(observed=_profile(kb, d)) for d in ("OMIM:154700", "OMIM:219700")]
  ranker = baselines.CaseKnnRanker(index, train, [("OMIM:154700",), ("OMIM:219700",)])
  assert ranker.n_cases == 2
  [ranked] = baselines.rank_cases(ranker, index, [train[1]], [("OMIM:219700",)], tie_break)
  assert ranked.gold_rank == 1
  scores = ranker.scores(index.query(train[1].observed))
  assert np.isclose(scores[index.disease_index["OMIM:219700"]], 1.0, atol=1e-5)
  assert (scores > -1).sum() == 2                             # diseases without cases stay at -inf


def test_gold_rank_uses_the_fixed_tie_break():
  scores = np.array([1.0, 3.0, 3.0, 2.0], np.float32)
  tie_break = np.array([3, 1, 0, 2])
  order = baselines.rank_order(scores, tie_break)
  assert order.tolist() == [2, 1, 3, 0]
  assert baselines.gold_rank(scores, [1], tie_break) == 2
  assert baselines.gold_rank(scores, [1, 0], tie_break) == 2    # best of several gold ids
  assert baselines.gold_rank(scores, [], tie_break) is None
  ranks = baselines.ranks_from_scores(scores, tie_break)
  assert ranks.tolist() == [4, 2, 1, 3]


class _Fixed:
  """A ranker that returns fixed scores (for fusion tests)."""
  def __init__(self, scores, name):
    self._scores, self.name = np.asarray(scores, np.float32), name

  def scores(self, query):
    del query
    return self._scores


def test_fusion_and_weight_choice(kb, index, tie_break):
  n = len(index.disease_ids)
  good = np.zeros(n)
  good[5] = 1.0                                                 # puts disease 5 first
  noise = np.random.default_rng(0).normal(size=n)
  rankers = [_Fixed(noise, "noise"), _Fixed(good, "good")]
  gold = [(index.disease_ids[5],)] * 3
  cases = [Pheno(observed=("HP:0001250",))] * 3
  weights, k, mrr = baselines.choose_fusion_weights(rankers, index, cases, gold, tie_break,
                                                    grid=(0.0, 1.0), ks=(1.0, 60.0))
  assert weights == (0.0, 1.0) and k == 1.0 and mrr == 1.0
  fused = baselines.FusionRanker(rankers, (1.0, 1.0), tie_break).scores(None)
  expected = sum(1 / (60 + baselines.ranks_from_scores(r.scores(None), tie_break))
                 for r in rankers)
  np.testing.assert_allclose(fused, expected, rtol=1e-6)


class TinyIndex:
  """Five terms, root(0) <- A(1) <- {B(2), C(3)} and root <- D(4), with IC 0, 1, 2, 3, 1.5; queries
  name terms by index."""
  ic = np.array([0.0, 1.0, 2.0, 3.0, 1.5], np.float32)
  _ancestors = [[0], [0, 1], [0, 1, 2], [0, 1, 3], [0, 4]]

  def __init__(self, disease_ids):
    self.disease_ids = list(disease_ids)
    self.disease_index = {d: i for i, d in enumerate(self.disease_ids)}
    rows, cols = zip(*[(t, a) for t, anc in enumerate(self._ancestors) for a in anc])
    self.ancestors = sparse.csc_matrix((np.ones(len(rows), np.float32), (rows, cols)), (5, 5))

  def ancestors_of(self, term):
    return np.asarray(self._ancestors[term], np.int32)

  def query(self, observed, excluded=()):
    return Query(np.unique(np.asarray(observed, np.int32)), np.zeros(0, np.int32))


def test_case_resnik_bma_math_on_three_terms():
  index = TinyIndex(["X", "Y"])
  query = index.query([2, 4])                                   # B and D; the case has C
  one_sided = baselines.CaseResnikRanker(index, [Pheno((3,))], [("X",)], symmetric=False)
  both = baselines.CaseResnikRanker(index, [Pheno((3,))], [("X",)], symmetric=True)
  # query->case: sim(B, C) = IC(A) = 1, sim(D, C) = IC(root) = 0 -> 0.5; case->query: C's best
  # match is B (1) -> 1; symmetric: 0.75
  np.testing.assert_allclose(one_sided.case_scores(query), [0.5])
  np.testing.assert_allclose(both.case_scores(query), [0.75])
  scores = one_sided.scores(query)
  assert scores[0] == pytest.approx(0.5) and scores[1] == baselines.UNRANKED  # Y has no case


@pytest.mark.parametrize("symmetric", [False, True])
def test_case_resnik_ranks_a_case_of_the_right_disease_first(symmetric):
  index = TinyIndex(["X", "Y", "Z"])
  train = [Pheno((2,)), Pheno((3,)), Pheno((4,)), Pheno((1,))]
  ranker = baselines.CaseResnikRanker(index, train, [("X",), ("Y",), ("Z",), ("Y",)], symmetric,
                                      top_cases=1)
  tie_break = np.arange(3)
  for term, gold in ((2, "X"), (3, "Y"), (4, "Z")):
    [ranked] = baselines.rank_cases(ranker, index, [Pheno((term,))], [(gold,)], tie_break)
    assert ranked.gold_rank == 1 and ranked.top_ids[0] == gold


def test_case_resnik_on_real_knowledge_finds_the_training_case(kb, index, tie_break):
  train = [Pheno(observed=_profile(kb, d)) for d in ("OMIM:154700", "OMIM:219700")]
  ranker = baselines.CaseResnikRanker(index, train, [("OMIM:154700",), ("OMIM:219700",)])
  [ranked] = baselines.rank_cases(ranker, index, [train[1]], [("OMIM:219700",)], tie_break)
  assert ranker.n_cases == 2 and ranked.gold_rank == 1


def test_top_mean_by_owner_averages_each_owners_best_values():
  values = np.array([1.0, 3.0, 2.0, 5.0], np.float32)
  out = baselines.top_mean_by_owner(values, np.array([0, 0, 0, 2]), 3, top=2)
  np.testing.assert_allclose(out, [2.5, baselines.UNRANKED, 5.0])


def test_rank_fusion_math_and_a_disease_absent_from_one_ranker():
  unranked = baselines.UNRANKED
  first = _Fixed([3.0, 2.0, 1.0, unranked], "case")            # ranks 1, 2, 3, - (no case)
  second = _Fixed([1.0, 2.0, 3.0, 4.0], "annotation")           # ranks 4, 3, 2, 1
  tie_break = np.arange(4)
  summed = baselines.RankFusion([first, second], (1.0, 2.0), tie_break, k=1.0, mean=False)
  np.testing.assert_allclose(summed.scores(None),
                             [1 / 2 + 2 / 5, 1 / 3 + 2 / 4, 1 / 4 + 2 / 3, 2 / 2])
  averaged = baselines.RankFusion([first, second], (1.0, 2.0), tie_break, k=1.0, mean=True)
  np.testing.assert_allclose(averaged.scores(None),
                             [0.9 / 3, (1 / 3 + 2 / 4) / 3, (1 / 4 + 2 / 3) / 3, 1.0 / 2])
  assert baselines.rank_order(averaged.scores(None), tie_break)[0] == 3  # ranked by the other


def test_choose_rank_fusion_is_exact_and_keeps_the_annotation_ranker():
  rng = np.random.default_rng(0)
  index = TinyIndex([f"D{i}" for i in range(6)])
  scores = rng.normal(size=(2, 6)).astype(np.float32)
  scores[1, 4] = baselines.UNRANKED
  rankers = [_Fixed(scores[0], "annotation"), _Fixed(scores[1], "case")]
  gold = [("D0",), ("D4",), ("D5", "D1")]
  cases = [Pheno((2,))] * 3
  tie_break = np.arange(6)
  grids = ((0.5, 1.0), (0.0, 1.0, 2.0))
  choice = baselines.choose_rank_fusion(rankers, index, cases, gold, tie_break, grids,
                                        ks=(1.0, 10.0))
  assert choice.weights[0] > 0
  fused = baselines.RankFusion(rankers, choice.weights, tie_break, choice.k, choice.mean)
  expected = np.mean([1 / baselines.gold_rank(fused.scores(None),
                                              [index.disease_index[g] for g in ids], tie_break)
                      for ids in gold])
  assert choice.mrr == pytest.approx(expected)
  ranks, gold_idx = baselines.tuning_ranks(rankers, index, cases, gold, tie_break)
  grid = baselines.rank_fusion_grid(ranks, gold_idx, tie_break, grids, ks=(1.0, 10.0))
  assert max(c.mrr for c in grid) == choice.mrr and len(grid) == 4 * 2 * 2  # 4 weight directions
