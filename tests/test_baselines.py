"""Tests for the classical phenotype rankers: Resnik, likelihood ratio, case kNN, fusion, tie-breaks."""
import dataclasses

import numpy as np
import pytest

from rarejax.evaluate import baselines
from rarejax.evaluate.phenotype_index import PhenotypeIndex


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
