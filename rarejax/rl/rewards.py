"""RL reward terms from the one grader: the accuracy outcome, and format/repetition/length shaping.

Every term is computed per sample and kept separately (each is logged on its own):

  term        range    what
  accuracy    [0, 1]   the outcome. differential: the grader's rank reward (1 at rank 1, decaying
                       with rank, 0 beyond GraderConfig.max_rank or absent); final: the grader's
                       exact match, which needs a single-entry answer (a list of several diseases
                       is no final diagnosis and earns nothing; GraderConfig.final_single_entry)
  format      {-1, 0}  shaping: -1 when the grader finds the response malformed
  repetition  [-1, 0]  shaping: minus the fraction of the response's token n-grams that repeat an
                       earlier one
  overlong    [-1, 0]  shaping: DAPO's soft overlong punishment (Yu et al. 2025), L = response
                       tokens, L_max = the rollout's max_new_tokens, B = overlong_buffer:
                       0 for L <= L_max - B, ((L_max - B) - L) / B above, -1 at L_max (cut off)

The shaping of a sample is the weighted sum of its three penalties (weights from gin,
RewardConfig), in (-1, 0] because the weights sum below 1. Only the accuracy outcome decides which
groups train and the sign of each advantage; shaping scales an advantage's size by at most its
shaping (rarejax.rl.dapo.shaped_advantages). rl/reward logs accuracy + shaping.

A sample *passes* (rl/pass_rate) when its accuracy term is > 0: the gold disease within the top
max_rank of a differential, or the final diagnosis exactly. The curriculum's difficulty is
rank-aware: the mean accuracy term of a case's G samples (rollout.Samples.pass_rates).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gin
import numpy as np

from rarejax.data import format as format_lib
from rarejax.evaluate import grader as grader_lib
from rarejax.knowledge import grounding

TERMS = ("accuracy", "format", "repetition", "overlong")
SHAPING_TERMS = TERMS[1:]


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardConfig:
  """Weights of the shaping terms and their knobs.

  Attributes:
    format_weight, repetition_weight, overlong_weight: the shaping's coefficients (see the
      module docstring for each term); each >= 0, summing below 1: a sample with every penalty
      at -1 keeps 1 - sum of its advantage (never its sign).
    overlong_buffer: B, the last tokens before max_new_tokens over which the overlong
      punishment ramps from 0 to -1.
    repetition_ngram: n of the repeated n-grams.
    grader: how answers are judged (rank decay, max rank, single-entry final diagnosis, ...).
  """
  format_weight: float = 0.2
  repetition_weight: float = 0.3
  overlong_weight: float = 0.3
  overlong_buffer: int = 64
  repetition_ngram: int = 4
  grader: grader_lib.GraderConfig = grader_lib.GraderConfig()

  def __post_init__(self):
    if self.overlong_buffer < 1 or self.repetition_ngram < 1:
      raise ValueError(f"RewardConfig: overlong_buffer={self.overlong_buffer} and "
                       f"repetition_ngram={self.repetition_ngram} must be >= 1.")
    weights = self.weights().values()
    if min(weights) < 0 or sum(weights) >= 1:
      raise ValueError(f"RewardConfig: the shaping weights {self.weights()} must be >= 0 and "
                       "sum below 1 (shaping may shrink an advantage, never flip it).")

  def weights(self) -> dict[str, float]:
    """Shaping term -> weight."""
    return {"format": self.format_weight, "repetition": self.repetition_weight,
            "overlong": self.overlong_weight}


@dataclasses.dataclass(frozen=True)
class Rewards:
  """Rewards of N samples: each term float32 [N], the weighted shaping [N], pass flags bool [N]."""
  terms: dict[str, np.ndarray]
  shaping: np.ndarray
  passed: np.ndarray

  @property
  def accuracy(self) -> np.ndarray:
    """float32 [N]: the accuracy outcome (what dynamic sampling and the advantage signs see)."""
    return self.terms["accuracy"]

  @property
  def total(self) -> np.ndarray:
    """float32 [N]: accuracy + shaping (the logged scalar reward)."""
    return self.accuracy + self.shaping

  @staticmethod
  def combine(terms: dict[str, np.ndarray], weights: dict[str, float]) -> Rewards:
    """`terms` (every name in TERMS) with the shaping weighted by `weights`; pass = accuracy > 0."""
    shaping = sum(np.float32(weights[name]) * terms[name] for name in SHAPING_TERMS)
    return Rewards(terms=terms, shaping=np.asarray(shaping, np.float32),
                   passed=terms["accuracy"] > 0)

  @staticmethod
  def concatenate(parts: Sequence[Rewards]) -> Rewards:
    return Rewards(terms={k: np.concatenate([p.terms[k] for p in parts]) for k in TERMS},
                   shaping=np.concatenate([p.shaping for p in parts]),
                   passed=np.concatenate([p.passed for p in parts]))


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
  """DAPO soft overlong punishment of a response of `length` tokens (module docstring)."""
  if buffer >= max_length:
    raise ValueError(f"overlong_buffer={buffer} must be smaller than max_new_tokens="
                     f"{max_length}.")
  free = max_length - buffer
  if length <= free:
    return 0.0
  return max((free - length) / buffer, -1.0)


def repetition_penalty(tokens: Sequence[int], n: int) -> float:
  """Minus the fraction of the n-grams of `tokens` that already occurred earlier in it."""
  grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
  if not grams:
    return 0.0
  return -(1.0 - len(set(grams)) / len(grams))


def accuracy(grade: grader_lib.GradeResult, task: str) -> float:
  """The grader's rank reward for a differential, its (single-entry) exact match for a final
  diagnosis."""
  if task not in format_lib.TASKS:
    raise ValueError(f"task must be one of {format_lib.TASKS}, got {task!r}")
  return grade.rank_reward if task == "differential" else grade.exact_match


class GraderRewards:
  """reward_fn(texts, responses, golds, tasks) -> Rewards, judged by the shared grader.

  Args:
    index: the grounding index the grader matches names and ids with.
    config: weights and knobs.
    max_length: L_max of the overlong term (the rollout's max_new_tokens).
  """

  def __init__(self, index: grounding.GroundingIndex, config: RewardConfig, max_length: int):
    overlong_penalty(0, max_length, config.overlong_buffer)  # checks buffer < max_length
    self.index, self.config, self.max_length = index, config, max_length

  def __call__(self, texts: Sequence[str], responses: Sequence[Sequence[int]],
               golds: Sequence[Sequence[str]], tasks: Sequence[str]) -> Rewards:
    """Rewards of N samples: response texts, their token ids (stop token included), gold ids
    and task level of each."""
    config = self.config
    terms = {name: np.zeros(len(texts), np.float32) for name in TERMS}
    for i, (text, tokens, gold, task) in enumerate(zip(texts, responses, golds, tasks)):
      grade = grader_lib.grade(text, gold, self.index, config.grader)
      terms["accuracy"][i] = accuracy(grade, task)
      terms["format"][i] = grade.format_reward - 1.0
      terms["repetition"][i] = repetition_penalty(tokens, config.repetition_ngram)
      terms["overlong"][i] = overlong_penalty(len(tokens), self.max_length,
                                              config.overlong_buffer)
    return Rewards.combine(terms, config.weights())
