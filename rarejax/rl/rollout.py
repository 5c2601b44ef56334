"""The two halves of an RL step behind small interfaces: rollout (sample, reward), learner (update).

  rollout = Rollout(sampler, tokenizer, reward_fn, RolloutConfig(group_size=4, ...))
  samples = rollout(learner.params, prompts, rng)    # G samples per prompt, old log-probs, rewards
  batch = learner_batch(pieces, rows=..., length=..., temperature=..., pad_id=...)
  metrics = learner.update(batch, rng)                # epochs x minibatches of the shared train
                                                      # step with the 'dapo' loss

On one mesh the rollout samples straight from the learner's params (no weight sync); split
across meshes, `Learner.params` is where a transfer would go. The learner also owns the frozen
reference (a copy of the initial params) and scores it only when beta > 0.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import numpy as np
from jax.sharding import Mesh

from rarejax.evaluate import generation
from rarejax.model.config import ModelConfig
from rarejax.model.transformer import Decoder
from rarejax.parallel import mesh as mesh_lib
from rarejax.parallel import rules as rules_lib
from rarejax.rl import dapo
from rarejax.rl import rewards as rewards_lib
from rarejax.sample import Sampler, StopReason
from rarejax.train import checkpoint as checkpoint_lib
from rarejax.train import optimizer, state as state_lib, step as step_lib

Params = Any
RewardFn = Callable[[Sequence[str], Sequence[Sequence[int]], Sequence[Sequence[str]],
                     Sequence[str]], rewards_lib.Rewards]


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
  """How the policy is sampled: G samples per prompt, at most max_new_tokens each."""
  group_size: int = 4
  max_new_tokens: int = 300
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.group_size < 2 or self.max_new_tokens < 1 or self.temperature <= 0:
      raise ValueError(f"RolloutConfig needs group_size >= 2, max_new_tokens >= 1 and "
                       f"temperature > 0 (RL samples), got {self}.")


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One RL prompt: token ids (BOS first), the gold disease ids, the task level."""
  ids: tuple[int, ...]
  gold_ids: tuple[str, ...]
  task: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Samples:
  """G samples of each of N prompts (row n*G + g is sample g of prompt n); host arrays.

  Attributes:
    prompts: the N prompts.
    tokens, mask, logprobs: [N*G, T] as in rarejax.sample.SampleOutput (log-probs at the
      rollout temperature; mask False after the stop token).
    lengths: int32 [N*G] emitted tokens.
    truncated: bool [N*G], rows that ran out of tokens without a stop id.
    rewards: the reward terms, totals and pass flags of the N*G samples.
    sample_seconds: wall time of the sampler; grade_seconds: of the rewards.
  """
  prompts: list[Prompt]
  group_size: int
  tokens: np.ndarray
  mask: np.ndarray
  logprobs: np.ndarray
  lengths: np.ndarray
  truncated: np.ndarray
  rewards: rewards_lib.Rewards
  sample_seconds: float
  grade_seconds: float

  def pass_rates(self) -> np.ndarray:
    """float [N]: each prompt's rank-aware pass rate, the mean accuracy outcome of its G samples."""
    return self.rewards.accuracy.reshape(-1, self.group_size).mean(axis=1)


class Rollout:
  """Samples G continuations per prompt with the shared sampler and scores them.

  Args:
    sampler: the shared Sampler (its cache holds the longest prompt + max_new_tokens).
    tokenizer: decodes responses and names the stop ids (generation.stop_ids).
    reward_fn: (texts, response token ids, gold ids, task levels) -> Rewards, e.g.
      rewards.GraderRewards.
    config: sampling settings.
  """

  def __init__(self, sampler: Sampler, tokenizer: generation.Tokenizer, reward_fn: RewardFn,
               config: RolloutConfig):
    self.sampler, self.tokenizer, self.config = sampler, tokenizer, config
    self.reward_fn = reward_fn
    self.stop_ids = generation.stop_ids(tokenizer)

  def __call__(self, params: Params, prompts: Sequence[Prompt], rng: jax.Array) -> Samples:
    config, group = self.config, self.config.group_size
    start = time.perf_counter()
    out = self.sampler.generate(params, [p.ids for p in prompts],
                                max_new_tokens=config.max_new_tokens, rng=rng,
                                num_samples=group, temperature=config.temperature,
                                top_k=config.top_k, top_p=config.top_p, stop_ids=self.stop_ids)
    sampled = time.perf_counter()
    responses = out.to_lists()
    eos = self.tokenizer.eos_id
    texts = [self.tokenizer.decode([t for t in row if t != eos]) for row in responses]
    rows = [p for p in prompts for _ in range(group)]
    rewards = self.reward_fn(texts, responses, [p.gold_ids for p in rows], [p.task for p in rows])
    return Samples(prompts=list(prompts), group_size=group, tokens=out.tokens, mask=out.mask,
                   logprobs=out.logprobs, lengths=out.lengths,
                   truncated=out.stop_reason != StopReason.STOP_ID,
                   rewards=rewards, sample_seconds=sampled - start,
                   grade_seconds=time.perf_counter() - sampled)


def learner_batch(pieces: Sequence[tuple[Samples, np.ndarray, np.ndarray]], *, rows: int,
                  length: int, temperature: float, pad_id: int) -> dict[str, np.ndarray]:
  """Right-padded [rows, length] training rows: prompt + response, loss on the response only.

  Args:
    pieces: (samples, row indices into them, advantages of those rows float32 [k]).
    rows: batch rows; rows beyond the given samples are padding (weight 0).
    length: L; every prompt + response must fit in L + 1 tokens.
    temperature: the rollout temperature (the loss scales logits by it).
    pad_id: token id of padding.

  Returns:
    inputs, targets, positions, segment_ids, loss_weights, old_logprobs [rows, L]; advantages,
    temperature [rows] (see rarejax.rl.dapo for how the loss reads them).
  """
  batch = {"inputs": np.full((rows, length), pad_id, np.int32),
           "targets": np.full((rows, length), pad_id, np.int32),
           "positions": np.zeros((rows, length), np.int32),
           "segment_ids": np.zeros((rows, length), np.int32),
           "loss_weights": np.zeros((rows, length), np.float32),
           "old_logprobs": np.zeros((rows, length), np.float32),
           "advantages": np.zeros((rows,), np.float32),
           "temperature": np.full((rows,), temperature, np.float32)}
  r = 0
  for samples, indices, advantages in pieces:
    for index, advantage in zip(indices, advantages):
      if r == rows:
        raise ValueError(f"more sample rows than the batch holds ({rows}).")
      prompt = samples.prompts[index // samples.group_size].ids
      n = int(samples.lengths[index])
      sequence = np.concatenate([prompt, samples.tokens[index, :n]])
      if len(sequence) - 1 > length:
        raise ValueError(f"prompt + response of {len(sequence)} tokens does not fit a training "
                         f"row of {length} (+1) tokens; raise the row length.")
      used = len(sequence) - 1
      batch["inputs"][r, :used] = sequence[:-1]
      batch["targets"][r, :used] = sequence[1:]
      batch["positions"][r, :used] = np.arange(used)
      batch["segment_ids"][r, :used] = 1
      response = slice(len(prompt) - 1, used)  # targets that are response tokens
      batch["loss_weights"][r, response] = 1.0
      batch["old_logprobs"][r, response] = samples.logprobs[index, :n]
      batch["advantages"][r] = advantage
      r += 1
  return batch


class Learner:
  """The policy's TrainState, its compiled DAPO step, and the frozen reference.

  Args:
    model_config, optimizer_config, dapo_config: the model and objective.
    init_params: params a fresh run starts from (the previous stage's export).
    mesh: the device mesh (training rules).
    num_microbatches: gradient accumulation within one update.
    minibatches: optimizer updates per pass over a rollout batch (its rows split into equal
      minibatches).
    epochs: passes over the same rollout batch, each reshuffled. Every update after a batch's
      first (later minibatches and epochs) sees params that moved since the rollout while the
      old log-probs stay the rollout's: off-policy, where the clip acts.
    seed: rng of the state (minibatch shuffles come from `update`'s rng).
  """

  def __init__(self, *, model_config: ModelConfig, optimizer_config: optimizer.OptimizerConfig,
               dapo_config: dapo.DapoConfig, init_params: Params, mesh: Mesh,
               num_microbatches: int = 1, minibatches: int = 1, epochs: int = 1, seed: int = 0):
    if minibatches < 1 or epochs < 1:
      raise ValueError(f"Learner needs minibatches >= 1 and epochs >= 1, got {minibatches} and "
                       f"{epochs}.")
    self.model_config, self.dapo_config, self.mesh = model_config, dapo_config, mesh
    self.minibatches, self.epochs = minibatches, epochs
    self.tx = optimizer.make_optimizer(optimizer_config)
    self.shardings = state_lib.train_state_shardings(model_config, self.tx, mesh)
    self.abstract_state = checkpoint_lib.abstract_with_shardings(
        state_lib.abstract_train_state(model_config, self.tx), self.shardings)
    self.state = _state_from_params(init_params, self.tx, self.shardings, seed)
    self.reference = None
    if dapo_config.beta > 0:
      self.reference = jax.device_put(init_params, self.shardings.params, may_alias=False)
      self._score_reference = dapo.reference_scorer(Decoder(model_config))
    self._step_fn = step_lib.make_train_step(
        model_config, self.tx, dapo.make_dapo_loss(dapo_config), num_microbatches,
        optimizer.learning_rate_schedule(optimizer_config))
    self._compiled: dict[tuple, step_lib.CompiledStep] = {}

  @property
  def params(self) -> Params:
    """The current policy params (what the rollout samples from)."""
    return self.state.params

  @property
  def updates_per_step(self) -> int:
    """Update slots per rollout batch: epochs x minibatches."""
    return self.epochs * self.minibatches

  @property
  def step(self) -> int:
    """Update slots used so far (updates_per_step per RL step, skipped updates included)."""
    return int(jax.device_get(self.state.step))

  def restore(self, checkpointer: checkpoint_lib.Checkpointer) -> dict[str, Any]:
    """Restores the newest readable checkpoint; returns its metadata."""
    self.state, metadata = checkpointer.restore(self.abstract_state)
    return metadata

  def with_reference(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch plus ref_logprobs [B, L] when beta > 0; unchanged (no forward) when beta == 0."""
    if self.reference is None:
      return batch
    with mesh_lib.sharding_context(self.mesh, rules_lib.TRAIN_RULES):
      ref = self._score_reference(self.reference, batch)
    return {**batch, "ref_logprobs": np.asarray(jax.device_get(ref))}

  def update(self, batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, float]:
    """`epochs` passes of `minibatches` optimizer updates each over the batch's rows.

    Each pass shuffles the scored rows and places them first, padding rows last, then splits the
    rows into equal minibatches, so a short batch (dynamic sampling ran out of draws) fills whole
    minibatches rather than thinning every one. Each minibatch is its own token-level mean. A
    minibatch without scored tokens applies no update; only the step counter advances. Returns
    the token-weighted mean of the applied updates' metrics, 'tokens' summed, and 'updated', the
    fraction of updates applied.
    """
    rows = batch["loss_weights"].shape[0]
    if rows % self.minibatches:
      raise ValueError(f"{rows} batch rows do not split into minibatches={self.minibatches} "
                       "equal minibatches.")
    scored = batch["loss_weights"].any(axis=1)
    if scored.any():
      batch = self.with_reference(batch)
    results = []
    for indices in self._minibatch_rows(scored, rng):
      minibatch = {k: v[indices] for k, v in batch.items()}
      if not minibatch["loss_weights"].any():
        step = jax.device_put(self.state.step + 1, self.shardings.step)
        self.state = self.state.replace(step=step)
        continue
      self.state, metrics = self._compile(minibatch)(self.state, minibatch)
      results.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    if not results:
      return {"updated": 0.0}
    return {**_token_weighted(results), "updated": len(results) / self.updates_per_step}

  def _minibatch_rows(self, scored: np.ndarray,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of every update: per epoch, shuffled scored rows then padding, split."""
    padding = np.flatnonzero(~scored)
    passes = [np.concatenate([rng.permutation(np.flatnonzero(scored)), padding])
              for _ in range(self.epochs)]
    return [part for order in passes for part in np.split(order, self.minibatches)]

  def _compile(self, batch: dict[str, np.ndarray]) -> step_lib.CompiledStep:
    key = tuple(sorted((k, v.shape) for k, v in batch.items()))
    if key not in self._compiled:
      abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
      self._compiled[key] = step_lib.compile_train_step(self._step_fn, self.shardings,
                                                        self.abstract_state, abstract, self.mesh)
    return self._compiled[key]


def _state_from_params(params: Params, tx, shardings: state_lib.TrainState,
                       seed: int) -> state_lib.TrainState:
  """A fresh TrainState holding a copy of `params` (updates donate the state's buffers, never the
  caller's), without compiling the model's random init."""
  params = jax.device_put(params, shardings.params, may_alias=False)
  return state_lib.TrainState(
      step=jax.device_put(np.zeros((), np.int32), shardings.step), params=params,
      opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(params),
      rng=jax.device_put(jax.random.PRNGKey(seed), shardings.rng))


def _token_weighted(results: list[dict[str, float]]) -> dict[str, float]:
  """Token-weighted means of per-update metrics, 'tokens' summed."""
  tokens = sum(r["tokens"] for r in results)
  out = {k: sum(r[k] * r["tokens"] for r in results) / tokens for k in results[0]}
  return {**out, "tokens": tokens}
