"""RL reward terms from the one grader: accuracy (rank-aware or exact), format, repetition, length.

Every term is computed per sample and kept separately (each is logged on its own); the scalar
reward the advantages see is their weighted sum (weights from gin, RewardConfig):

  term        range    what
  accuracy    [0, 1]   differential: the grader's rank reward (1 at rank 1, decaying with rank,
                       0 beyond GraderConfig.max_rank or absent); final: the grader's exact match
  format      {0, 1}   the grader's format validity (a well-formed response)
  repetition  [-1, 0]  minus the fraction of the response's token n-grams that repeat an earlier one
  overlong    [-1, 0]  DAPO's soft overlong punishment (Yu et al. 2025), L = response
                       tokens, L_max = the rollout's max_new_tokens, B = overlong_buffer:
                       0 for L <= L_max - B, ((L_max - B) - L) / B above, -1 at L_max (cut off)

A sample *passes* (the curriculum's difficulty measure) when its accuracy term is > 0: the gold
disease within the top max_rank of a differential, or exactly the final diagnosis.
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


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardConfig:
  """Weights of the reward terms and their knobs.

  Attributes:
    accuracy_weight, format_weight, repetition_weight, overlong_weight: the weighted sum's
      coefficients (see the module docstring for each term).
    overlong_buffer: B, the last tokens before max_new_tokens over which the overlong
      punishment ramps from 0 to -1.
    repetition_ngram: n of the repeated n-grams.
    grader: how answers are judged (rank decay, max rank, ...).
  """
  accuracy_weight: float = 1.0
  format_weight: float = 0.2
  repetition_weight: float = 0.5
  overlong_weight: float = 0.5
  overlong_buffer: int = 64
  repetition_ngram: int = 4
  grader: grader_lib.GraderConfig = grader_lib.GraderConfig()

  def __post_init__(self):
    if self.overlong_buffer < 1 or self.repetition_ngram < 1:
      raise ValueError(f"RewardConfig: overlong_buffer={self.overlong_buffer} and "
                       f"repetition_ngram={self.repetition_ngram} must be >= 1.")

  def weights(self) -> dict[str, float]:
    return {"accuracy": self.accuracy_weight, "format": self.format_weight,
            "repetition": self.repetition_weight, "overlong": self.overlong_weight}


@dataclasses.dataclass(frozen=True)
class Rewards:
  """Rewards of N samples: each term float32 [N], their weighted sum [N], pass flags bool [N]."""
  terms: dict[str, np.ndarray]
  total: np.ndarray
  passed: np.ndarray

  @staticmethod
  def combine(terms: dict[str, np.ndarray], weights: dict[str, float]) -> Rewards:
    """The weighted sum of `terms` (every name in TERMS); pass = accuracy > 0."""
    total = sum(np.float32(weights[name]) * terms[name] for name in TERMS)
    return Rewards(terms=terms, total=np.asarray(total, np.float32),
                   passed=terms["accuracy"] > 0)

  @staticmethod
  def concatenate(parts: Sequence[Rewards]) -> Rewards:
    return Rewards(terms={k: np.concatenate([p.terms[k] for p in parts]) for k in TERMS},
                   total=np.concatenate([p.total for p in parts]),
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
  """The grader's rank reward for a differential, its exact match for a final diagnosis."""
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
      terms["format"][i] = grade.format_reward
      terms["repetition"][i] = repetition_penalty(tokens, config.repetition_ngram)
      terms["overlong"][i] = overlong_penalty(len(tokens), self.max_length,
                                              config.overlong_buffer)
    return Rewards.combine(terms, config.weights())
