"""The model as a diagnostician: prompts → sampled answers (shared sampler) → grades (shared grader).

Used by the training loop's periodic evaluation, the evaluation stage, the model method of the
evaluation suite and the diagnose command. A prompt is tokenized exactly as the training tasks
tokenize it: BOS, then the prompt text (rarejax.data.format.build_prompt), and the model writes
the response; decoding stops at EOS or at the `</answer>` tag, which is kept in the text so the
parser sees a closed answer.

Thinking budget (`GenerationConfig.think_tokens` > 0): the reasoning may use at most that many
tokens. A row that has not closed `</think>` (nor opened `<answer>`) by then gets the closing tag
and the answer opening appended from its kept cache (`Sampler.resume`) and writes its answer
with the rest of `max_new_tokens`; so every row ends with an answer section.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rarejax import tokenizer as tokenizer_lib
from rarejax.data import format as format_lib
from rarejax.evaluate import grader as grader_lib
from rarejax.evaluate import metrics as metrics_lib
from rarejax.knowledge import grounding
from rarejax.sample import SampleOutput, Sampler, StopReason

FORCED_ANSWER = f"\n{format_lib.THINK_CLOSE}\n{format_lib.ANSWER_OPEN}\n"


class Tokenizer:
  """What generation needs of a vocabulary (rarejax.tokenizer's tokenizers and seqio
  Vocabularies satisfy it)."""
  eos_id: int
  bos_id: int | None

  def encode(self, text: str) -> Sequence[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """Decoding settings of a diagnosis (greedy by default: the reported numbers are greedy).

  Attributes:
    max_new_tokens: tokens a response may have (forced answer tags not counted).
    temperature, top_k, top_p: sampling knobs (temperature 0 = greedy).
    seed: sampling seed.
    think_tokens: reasoning budget; 0 = none. With a budget the answer gets the remaining
      `max_new_tokens - think_tokens` tokens after the reasoning ends (see module docstring).
  """
  max_new_tokens: int = 256
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  think_tokens: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1 or not 0 <= self.think_tokens < self.max_new_tokens:
      raise ValueError(f"GenerationConfig needs max_new_tokens >= 1 and 0 <= think_tokens < "
                       f"max_new_tokens (the answer needs tokens too), got max_new_tokens="
                       f"{self.max_new_tokens}, think_tokens={self.think_tokens}")

  @property
  def answer_tokens(self) -> int:
    """Tokens left for the answer once a thinking budget ran out."""
    return self.max_new_tokens - self.think_tokens


@dataclasses.dataclass(frozen=True)
class Response:
  """One generated response.

  Attributes:
    text: the response text (EOS dropped, `</answer>` kept).
    tokens: its token ids, forced tokens included, EOS dropped.
    logprobs: log-probability of each token under the model; 0.0 for forced tokens.
    forced_answer: the thinking budget ran out and the answer tags were appended.
  """
  text: str
  tokens: tuple[int, ...]
  logprobs: tuple[float, ...]
  forced_answer: bool = False


def stop_ids(vocabulary: Tokenizer) -> tuple[int, ...]:
  """EOS, plus the id of `</answer>` when the tokenizer has it as a single piece."""
  return (vocabulary.eos_id, *single_piece(vocabulary, format_lib.ANSWER_CLOSE))


def single_piece(vocabulary: Tokenizer, text: str) -> tuple[int, ...]:
  """(id,) when `text` is one token of the vocabulary, else ()."""
  ids = list(vocabulary.encode(text))
  return (ids[0],) if len(ids) == 1 else ()


def prompt_ids(vocabulary: Tokenizer, prompt: str) -> list[int]:
  """BOS (EOS when the vocabulary has none) + the tokenized prompt."""
  return [tokenizer_lib.bos_id(vocabulary), *vocabulary.encode(prompt)]


def tokens_after_prompt(vocabulary: Tokenizer, config: GenerationConfig) -> int:
  """Cache slots a row needs beyond its prompt: the response, forced tags and the scratch slot."""
  forced = len(vocabulary.encode(FORCED_ANSWER)) if config.think_tokens else 0
  return config.max_new_tokens + forced + 2


def fit_prompt(vocabulary: Tokenizer, note: str, max_tokens: int, max_candidates: int = 10,
               instruction: str = "full") -> tuple[str, bool]:
  """The differential prompt of `note` in the `instruction` style (format.build_prompt; the
  style the model was trained with), with the note's end cut until the prompt (BOS included)
  has at most `max_tokens` tokens; returns (prompt, whether the note was cut).

  Raises:
    ValueError: the note is empty, or the prompt template alone does not fit.
  """
  prompt = format_lib.build_prompt(note, "differential", max_candidates, instruction)
  length = len(prompt_ids(vocabulary, prompt))
  if length <= max_tokens:
    return prompt, False
  note_ids = list(vocabulary.encode(note.strip()))
  keep = max_tokens - (length - len(note_ids))
  while keep > 0:
    cut = vocabulary.decode(note_ids[:keep])
    if cut.strip():
      prompt = format_lib.build_prompt(cut, "differential", max_candidates, instruction)
      length = len(prompt_ids(vocabulary, prompt))
      if length <= max_tokens:
        return prompt, True
    keep -= max(1, length - max_tokens)
  raise ValueError(f"the prompt template alone needs more than {max_tokens} tokens: use a "
                   "larger cache length")


def _rows(out: SampleOutput, eos_id: int) -> list[tuple[list[int], list[float]]]:
  """(tokens, logprobs) of each row, EOS dropped."""
  rows = []
  for tokens, logprobs, n in zip(out.tokens, out.logprobs, out.lengths):
    keep = tokens[:n] != eos_id
    rows.append((tokens[:n][keep].tolist(), logprobs[:n][keep].astype(float).tolist()))
  return rows


def _finished(out: SampleOutput, stops: Sequence[int]) -> np.ndarray:
  """bool [N]: the row ended its response (a final stop id) or has no cache slot left."""
  last = out.tokens[np.arange(len(out.lengths)), out.lengths - 1]
  return (out.stop_reason == StopReason.CACHE_FULL) | (
      (out.stop_reason == StopReason.STOP_ID) & np.isin(last, stops))


def _continuation(vocabulary: Tokenizer, reasoning: Sequence[int]) -> list[int]:
  """Tokens appended when the thinking budget runs out: none once the reasoning is closed (or
  the answer opened), else the closing tag and the answer opening."""
  text = vocabulary.decode(list(reasoning))
  if format_lib.THINK_CLOSE in text or format_lib.ANSWER_OPEN in text:
    return []
  return list(vocabulary.encode(FORCED_ANSWER[1:] if text.endswith("\n") else FORCED_ANSWER))


def generate_responses(sampler: Sampler, params: Any, vocabulary: Tokenizer,
                       prompts: Sequence[str], config: GenerationConfig = GenerationConfig()
                       ) -> list[Response]:
  """The model's response to each prompt, with token log-probs (see module docstring).

  The sampler's cache must hold the longest prompt plus `tokens_after_prompt(...)` tokens.
  """
  ids = [prompt_ids(vocabulary, p) for p in prompts]
  stops = stop_ids(vocabulary)
  rng = jax.random.key(config.seed)
  knobs = dict(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
  if not config.think_tokens:
    out = sampler.generate(params, ids, max_new_tokens=config.max_new_tokens, rng=rng,
                           stop_ids=stops, **knobs)
    return [_response(vocabulary, t, lp) for t, lp in _rows(out, vocabulary.eos_id)]
  out = sampler.generate(params, ids, max_new_tokens=config.think_tokens, rng=rng,
                         stop_ids=stops + single_piece(vocabulary, format_lib.THINK_CLOSE),
                         keep_state=True, **knobs)
  rows = _rows(out, vocabulary.eos_id)
  todo = np.flatnonzero(~_finished(out, stops)).tolist()
  follow = {i: _continuation(vocabulary, rows[i][0]) for i in todo}
  forced = {i for i in todo if follow[i]}
  if todo:
    more = sampler.resume(params, out.state.take(todo), [follow[i] for i in todo],
                          max_new_tokens=config.answer_tokens, rng=jax.random.fold_in(rng, 1),
                          stop_ids=stops, **knobs)
    for i, (tokens, logprobs) in zip(todo, _rows(more, vocabulary.eos_id)):
      rows[i] = (rows[i][0] + follow[i] + tokens,
                 rows[i][1] + [0.0] * len(follow[i]) + logprobs)
  return [_response(vocabulary, t, lp, i in forced) for i, (t, lp) in enumerate(rows)]


def _response(vocabulary: Tokenizer, tokens: list[int], logprobs: list[float],
              forced: bool = False) -> Response:
  return Response(vocabulary.decode(tokens), tuple(tokens), tuple(logprobs), forced)


def generate_answers(sampler: Sampler, params: Any, vocabulary: Tokenizer,
                     prompts: Sequence[str], config: GenerationConfig = GenerationConfig()
                     ) -> list[str]:
  """The model's response text to each prompt (EOS dropped, `</answer>` kept)."""
  return [r.text for r in generate_responses(sampler, params, vocabulary, prompts, config)]


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
