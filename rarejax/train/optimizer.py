"""Optimizer from config: AdamW with warmup + cosine decay, global-norm clipping, decay mask."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gin
import jax
import optax

# Parameter leaf names that are never weight-decayed: norm scales and biases.
_NO_DECAY_SUFFIXES = ("scale", "_bias")
_EMBEDDING_NAMES = ("embedding",)


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
  """AdamW hyper-parameters.

  Attributes:
    learning_rate: peak learning rate reached after warmup.
    warmup_steps: linear warmup from 0.
    total_steps: end of the cosine decay (the schedule stays at its final value after it).
    final_lr_fraction: final learning rate as a fraction of the peak.
    b1, b2, eps: Adam moments and epsilon.
    weight_decay: decoupled weight decay on matrices (never on norm scales and biases).
    decay_embeddings: whether the embedding table is weight-decayed too.
    grad_clip_norm: clip gradients to this global norm; None disables clipping.
  """
  learning_rate: float = 3e-4
  warmup_steps: int = 100
  total_steps: int = 10_000
  final_lr_fraction: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  decay_embeddings: bool = False
  grad_clip_norm: float | None = 1.0

  def __post_init__(self):
    if self.total_steps <= self.warmup_steps:
      raise ValueError(f"OptimizerConfig: total_steps={self.total_steps} must exceed "
                       f"warmup_steps={self.warmup_steps}.")

  def per_update(self, updates_per_step: int) -> OptimizerConfig:
    """The same schedule for a loop that makes `updates_per_step` optimizer updates per step (RL:
    minibatches x epochs per rollout): warmup and total steps counted in updates."""
    if updates_per_step < 1:
      raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
    return dataclasses.replace(self, warmup_steps=self.warmup_steps * updates_per_step,
                               total_steps=self.total_steps * updates_per_step)


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """Linear warmup to the peak, then cosine decay to final_lr_fraction * peak."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=config.total_steps, end_value=config.learning_rate * config.final_lr_fraction)


def weight_decay_mask(params: Any, decay_embeddings: bool) -> Any:
  """Pytree of bools: True for leaves that get weight decay."""
  def decays(path, _):
    name = path[-1].key
    if name in _EMBEDDING_NAMES:
      return decay_embeddings
    return not name.endswith(_NO_DECAY_SUFFIXES)
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """Clip by global norm (optional), then AdamW on the schedule with the decay mask."""
  adamw = optax.adamw(
      learning_rate_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
      weight_decay=config.weight_decay,
      mask=functools.partial(weight_decay_mask, decay_embeddings=config.decay_embeddings))
  if config.grad_clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
