"""Ranks diseases by the model's probability of naming each one first: one forward pass per note.

For a model whose answers name diseases by id pieces (DataSpec.id_pieces with the 'id' answer
style), the answer's first entry is one token, so the distribution of that token over the
vocabulary's disease-id pieces is the model's whole posterior over first diagnoses. Its top k is
the differential: no decoding loop, and the list is the model's own ranking rather than a
continuation it imitated from the reference lists.

  ranker = FirstEntryRanker(config, vocabulary, response_for, batch_size=64)
  ranked = ranker.rank(params, prompts, top_k=10)   # [[(disease id, probability), ...], ...]

With `prior` ({disease id: probability}, rarejax.sample.answer_prior) and `prior_weight` w > 0
the order is that of log p(d) - w * log prior(d) (logit adjustment); the probabilities returned
stay the model's p(d).

`response_for(disease_id)` writes a response naming that disease first, as training wrote them;
a row is BOS + prompt + the answer prefix (that response's tokens before the id, e.g.
'<think>\\n\\n</think>\\n<answer>\\n1. '), left-padded to a multiple of `length_step` tokens so
that few shapes compile. Probabilities are the full softmax's (they need not sum to 1 over ids).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rarejax.data import format as format_lib
from rarejax.model import transformer
from rarejax.model.config import ModelConfig

# A whole disease id, as the knowledge writes them (OMIM:154700, ORPHA:558, MONDO:0007947).
DISEASE_ID = re.compile(r"(?:OMIM|ORPHA|MONDO|DECIPHER):\d+")


def id_pieces(vocabulary: Any) -> dict[int, str]:
  """{token id: disease id} for every vocabulary piece that is exactly one disease id."""
  out = {}
  for token in range(vocabulary.vocab_size):
    text = vocabulary.decode([token])
    if DISEASE_ID.fullmatch(text):
      out[token] = text
  return out


def id_answer(disease_id: str) -> str:
  """The response naming `disease_id` first with no reasoning, as an id-piece model was trained to
  answer ('<think>\n\n</think>\n<answer>\n1. OMIM:154700\n</answer>')."""
  return format_lib.format_response("", [("", disease_id)])


def log_prior_vector(prior: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
  """log prior(d) for each id in `names`; an id the prior lacks (never a first answer) gets the
  smallest prior there is, so that no adjustment ranks it above everything for its absence."""
  floor = min(prior.values())
  return np.log(np.array([prior.get(name, floor) for name in names], np.float64))


def answer_prefix_ids(vocabulary: Any, response: str, disease_id: str) -> list[int]:
  """The tokens of `response` (a formatted answer naming `disease_id` first) before that id's
  piece: tokenized as a whole, as training tokenized its targets."""
  tokens = list(vocabulary.encode(response))
  for i, token in enumerate(tokens):
    if vocabulary.decode([token]) == disease_id:
      return tokens[:i]
  raise ValueError(f"{disease_id!r} is not one vocabulary piece in {response!r}: the model was "
                   "not trained with disease-id pieces (DataSpec.id_pieces)")


def id_answer_prefix(vocabulary: Any) -> list[int]:
  """The tokens an id-piece model's trained answer (id_answer) has before its first id piece:
  where that piece sits in every such target."""
  example = next(iter(id_pieces(vocabulary).values()), None)
  if example is None:
    raise ValueError("the vocabulary has no disease-id pieces (DataSpec.id_pieces)")
  return answer_prefix_ids(vocabulary, id_answer(example), example)


class FirstEntryRanker:
  """Top-k disease ids by the probability of the first answer entry (module docstring)."""

  def __init__(self, config: ModelConfig, vocabulary: Any,
               response_for: Callable[[str], str], *, batch_size: int = 64,
               length_step: int = 128,
               prior: Mapping[str, float] | None = None, prior_weight: float = 0.0):
    if prior_weight < 0 or (prior_weight and not prior):
      raise ValueError(f"prior_weight must be >= 0 and needs a prior, got {prior_weight} "
                       f"({'no' if not prior else 'a'} prior)")
    self.vocabulary = vocabulary
    self.batch_size = batch_size
    self.length_step = length_step
    pieces = id_pieces(vocabulary)
    if not pieces:
      raise ValueError("the vocabulary has no disease-id pieces: first-entry ranking needs a "
                       "model trained with DataSpec.id_pieces = True")
    self.id_tokens = np.array(sorted(pieces), np.int32)
    self.id_names = [pieces[t] for t in self.id_tokens]
    example = self.id_names[0]
    self.answer_prefix = answer_prefix_ids(vocabulary, response_for(example), example)
    self.prior_weight = float(prior_weight)
    self._adjustment = None
    if prior_weight:  # [1, ids]: w * log prior, subtracted from each row's log-probs
      self._adjustment = (prior_weight * log_prior_vector(prior, self.id_names)
                          ).astype(np.float32)[None]
    model = transformer.Decoder(config)

    def log_probs(params, tokens, positions, segment_ids):
      logits, _ = model.apply({"params": params}, tokens, positions, segment_ids, last_only=True)
      return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32))[:, self.id_tokens]
    self._log_probs = jax.jit(log_probs)

  def rows(self, prompt_ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Left-padded tokens, positions and segment ids of prompts + the answer prefix."""
    rows = [list(p) + self.answer_prefix for p in prompt_ids]
    length = -(-max(map(len, rows)) // self.length_step) * self.length_step
    tokens = np.zeros((len(rows), length), np.int32)
    segment_ids = np.zeros((len(rows), length), np.int32)
    positions = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
      tokens[i, length - len(row):] = row
      segment_ids[i, length - len(row):] = 1
      positions[i, length - len(row):] = np.arange(len(row))
    return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids}

  def rank(self, params: Any, prompt_ids: Sequence[Sequence[int]],
           top_k: int = 10) -> list[list[tuple[str, float]]]:
    """[(disease id, probability)] * top_k for each prompt (token ids, BOS included)."""
    out = []
    for start in range(0, len(prompt_ids), self.batch_size):
      chunk = list(prompt_ids[start:start + self.batch_size])
      n = len(chunk)
      chunk += [chunk[-1]] * (self.batch_size - n)  # one batch shape
      batch = self.rows(chunk)
      scores = np.asarray(self._log_probs(params, batch["tokens"], batch["positions"],
                                          batch["segment_ids"]))[:n]
      adjusted = scores if self._adjustment is None else scores - self._adjustment
      order = np.argsort(-adjusted, axis=1, kind="stable")[:, :top_k]
      out += [[(self.id_names[j], float(np.exp(row[j]))) for j in best]
              for row, best in zip(scores, order)]
    return out
