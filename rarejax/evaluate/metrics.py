"""Aggregate metrics over cases (top-k, MRR, found-rate) with seeded bootstrap intervals."""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from rarejax.evaluate import grader as grader_lib

DEFAULT_KS = (1, 3, 5, 10)


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean over cases with its bootstrap percentile interval."""
  value: float
  low: float
  high: float

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def rank_values(gold_ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS
                ) -> dict[str, np.ndarray]:
  """Per-case values whose means are the metrics: 'top{k}', 'mrr', 'found'; each [N] float64."""
  for rank in gold_ranks:
    if rank is not None and (isinstance(rank, bool) or int(rank) != rank or rank < 1):
      raise ValueError(f"gold ranks must be None or integers >= 1, got {rank!r}")
  ranks = np.array([np.inf if r is None else r for r in gold_ranks], dtype=np.float64)
  values = {f"top{k}": (ranks <= k).astype(np.float64) for k in ks}
  values["mrr"] = 1.0 / ranks  # 1/inf = 0 for absent golds
  values["found"] = np.isfinite(ranks).astype(np.float64)
  return values


def bootstrap(values: Mapping[str, np.ndarray], n_bootstrap: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, Estimate]:
  """Means of per-case values [N] with percentile intervals from case resampling.

  All metrics share the same resamples, so their intervals are comparable. Deterministic for
  a given seed.
  """
  if not values:
    raise ValueError("bootstrap needs at least one metric")
  names = list(values)
  table = np.stack([np.asarray(values[n], dtype=np.float64) for n in names])  # [M, N]
  n_cases = table.shape[1]
  if n_cases == 0:
    raise ValueError("no cases to aggregate: the list of per-case values is empty")
  if n_bootstrap < 1 or not 0 < confidence < 1:
    raise ValueError(f"need n_bootstrap >= 1 and 0 < confidence < 1, got {n_bootstrap}, "
                     f"{confidence}")
  rng = np.random.default_rng(seed)
  chunk = max(1, 2_000_000 // n_cases)  # bounds the [M, chunk, N] gather to ~16 MB per metric
  means = []
  for start in range(0, n_bootstrap, chunk):
    idx = rng.integers(0, n_cases, size=(min(chunk, n_bootstrap - start), n_cases))
    means.append(table[:, idx].mean(axis=-1))  # [M, chunk]
  means = np.concatenate(means, axis=1)  # [M, n_bootstrap]
  tail = (1.0 - confidence) / 2
  low, high = np.quantile(means, [tail, 1.0 - tail], axis=1)  # [M] each
  point = table.mean(axis=1)
  return {n: Estimate(float(point[i]), float(low[i]), float(high[i])) for i, n in enumerate(names)}


def summarize(gold_ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS,
              n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
              ) -> dict[str, Estimate]:
  """top-k, MRR and found-rate with bootstrap intervals, from one gold rank (or None) per case."""
  return bootstrap(rank_values(gold_ranks, ks), n_bootstrap, confidence, seed)


def summarize_grades(grades: Sequence[grader_lib.GradeResult], ks: Sequence[int] = DEFAULT_KS,
                     n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
                     ) -> dict[str, Estimate]:
  """`summarize` plus well-formed rate and mean rank reward, from grader results."""
  values = rank_values([g.gold_rank for g in grades], ks)
  values["well_formed"] = np.array([g.format_reward for g in grades])
  values["rank_reward"] = np.array([g.rank_reward for g in grades])
  return bootstrap(values, n_bootstrap, confidence, seed)
