"""The model as a diagnostician: prompts → sampled answers (shared sampler) → grades (shared grader).

Used by the training loop's periodic evaluation, the evaluation stage and the diagnose command.
A prompt is tokenized exactly as the training tasks tokenize it: BOS, then the prompt text
(rarejax.data.format.build_prompt), and the model writes the response; decoding stops at EOS or
at the `</answer>` tag, which is kept in the text so the parser sees a closed answer.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax

from rarejax.data import format as format_lib
from rarejax.evaluate import grader as grader_lib
from rarejax.evaluate import metrics as metrics_lib
from rarejax.knowledge import grounding
from rarejax.sample import Sampler


class Tokenizer:
  """What generation needs of a vocabulary (seqio Vocabulary satisfies it)."""
  eos_id: int
  bos_id: int | None

  def encode(self, text: str) -> Sequence[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """Decoding settings of a diagnosis (greedy by default: the reported numbers are greedy)."""
  max_new_tokens: int = 256
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0


def stop_ids(vocabulary: Tokenizer) -> tuple[int, ...]:
  """EOS, plus the id of `</answer>` when the tokenizer has it as a single piece."""
  ids = [vocabulary.eos_id]
  close = list(vocabulary.encode(format_lib.ANSWER_CLOSE))
  if len(close) == 1:
    ids.append(close[0])
  return tuple(ids)


def prompt_ids(vocabulary: Tokenizer, prompt: str) -> list[int]:
  """BOS (EOS when the vocabulary has none) + the tokenized prompt."""
  bos = vocabulary.bos_id if vocabulary.bos_id is not None and vocabulary.bos_id >= 0 \
      else vocabulary.eos_id
  return [bos, *vocabulary.encode(prompt)]


def generate_answers(sampler: Sampler, params: Any, vocabulary: Tokenizer,
                     prompts: Sequence[str], config: GenerationConfig = GenerationConfig()
                     ) -> list[str]:
  """The model's response text to each prompt (EOS dropped, `</answer>` kept)."""
  out = sampler.generate(params, [prompt_ids(vocabulary, p) for p in prompts],
                         max_new_tokens=config.max_new_tokens, rng=jax.random.key(config.seed),
                         temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                         stop_ids=stop_ids(vocabulary))
  return [vocabulary.decode([t for t in row if t != vocabulary.eos_id]) for row in out.to_lists()]


@dataclasses.dataclass(frozen=True)
class ModelEvaluation:
  """Answers, grades and summary metrics of one evaluation pass."""
  answers: list[str]
  grades: list[grader_lib.GradeResult]
  metrics: dict[str, float]


def evaluate_prompts(sampler: Sampler, params: Any, vocabulary: Tokenizer,
                     prompts: Sequence[str], gold_ids: Sequence[Sequence[str]],
                     index: grounding.GroundingIndex,
                     config: GenerationConfig = GenerationConfig(),
                     grader_config: grader_lib.GraderConfig = grader_lib.GraderConfig(),
                     ) -> ModelEvaluation:
  """Generates, grades with the one grader, and summarizes (top-k, MRR, well-formed rate)."""
  answers = generate_answers(sampler, params, vocabulary, prompts, config)
  grades = [grader_lib.grade(a, g, index, grader_config) for a, g in zip(answers, gold_ids)]
  summary = metrics_lib.summarize_grades(grades, n_bootstrap=1)
  metrics = {name: estimate.value for name, estimate in summary.items()}
  return ModelEvaluation(answers, grades, metrics)

