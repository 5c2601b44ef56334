"""Loss functions for the train step, returning sums so gradient accumulation divides once.

A loss function has the signature

  loss_fn(logits: float32 [B, L, V], batch: dict[str, Array], rng: PRNG key) -> LossOutput

and returns the *sum* of per-token losses, the *sum* of token weights and metric sums; the step
adds these over microbatches and divides once by the total weight. New losses (the DAPO loss)
are added with `@register_loss("name")` and looked up by name with `get_loss`.

Batch keys used here: "targets" int32 [B, L]; "segment_ids" int32 [B, L] (0 = padding,
optional); "loss_weights" float [B, L] (SFT: 1 on response tokens, 0 on the prompt); optional
soft targets "soft_ids" int32 [B, L, K] and "soft_probs" float [B, L, K] (rarejax.data.
soft_targets: weighted probabilities, 0 where a position has none).
"""
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Batch = dict[str, Array]


class LossOutput(NamedTuple):
  """Sums over the tokens of one (micro)batch."""
  loss_sum: Array  # float32 scalar
  weight_sum: Array  # float32 scalar: number (or total weight) of scored tokens
  metric_sums: dict[str, Array]  # float32 scalars, each divided by the total weight in the step


LossFn = Callable[[Array, Batch, Array], LossOutput]
_LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
  """Decorator adding a loss function to the registry under `name`."""
  def register(fn: LossFn) -> LossFn:
    if name in _LOSSES:
      raise ValueError(f"loss {name!r} is already registered ({_LOSSES[name].__name__}).")
    _LOSSES[name] = fn
    return fn
  return register


def get_loss(name: str) -> LossFn:
  """The registered loss function called `name`."""
  if name not in _LOSSES:
    raise ValueError(f"unknown loss {name!r}; registered: {sorted(_LOSSES)}.")
  return _LOSSES[name]


def _target_logits(logits: Array, targets: Array) -> Array:
  return jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def token_log_probs(logits: Array, targets: Array, log_normalizer: Array | None = None) -> Array:
  """log p(target) per token: float32 [B, L] from logits [B, L, V] and targets [B, L];
  `log_normalizer` is logsumexp(logits) over V when the caller has it already."""
  if log_normalizer is None:
    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
  return _target_logits(logits, targets) - log_normalizer


def weighted_cross_entropy(logits: Array, targets: Array, weights: Array,
                           log_normalizer: Array | None = None) -> LossOutput:
  """Sum of weighted next-token NLL, total weight and weighted accuracy sum.

  A token counts as correct when its target logit is the maximum (ties count as correct); a
  max-reduce is much cheaper than argmax over a large vocabulary on CPU.
  """
  weights = weights.astype(jnp.float32)
  nll = -token_log_probs(logits, targets, log_normalizer)
  correct = (_target_logits(logits, targets) >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  return LossOutput(loss_sum=jnp.sum(nll * weights), weight_sum=jnp.sum(weights),
                    metric_sums={"accuracy": jnp.sum(correct * weights)})


@register_loss("lm")
def lm_loss(logits: Array, batch: Batch, rng: Array) -> LossOutput:
  """Language-model loss on every non-padding token (segment_ids != 0)."""
  del rng  # deterministic
  targets = batch["targets"]
  weights = batch["segment_ids"] != 0 if "segment_ids" in batch else jnp.ones(targets.shape)
  return weighted_cross_entropy(logits, targets, weights)


def soft_cross_entropy(logits: Array, soft_ids: Array, soft_probs: Array,
                       log_normalizer: Array | None = None) -> Array:
  """Sum over positions of -sum_k soft_probs[k] * log q(soft_ids[k]), q = softmax(logits) over
  the whole vocabulary: logits [B, L, V], soft_ids / soft_probs [B, L, K]; `log_normalizer` as
  in token_log_probs."""
  if log_normalizer is None:
    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
  log_q = jnp.take_along_axis(logits, soft_ids, axis=-1) - log_normalizer[..., None]
  return -jnp.sum(soft_probs.astype(jnp.float32) * log_q)


@register_loss("sft")
def sft_loss(logits: Array, batch: Batch, rng: Array) -> LossOutput:
  """Response-masked SFT loss: tokens weighted by batch["loss_weights"] (0 on the prompt), plus
  the soft targets' cross-entropy where the batch has them (metric "soft_ce", per token)."""
  del rng  # deterministic
  if "loss_weights" not in batch:
    raise ValueError(f"sft loss needs batch['loss_weights'] (1 on response tokens); "
                     f"batch has {sorted(batch)}.")
  if "soft_probs" not in batch:
    return weighted_cross_entropy(logits, batch["targets"], batch["loss_weights"])
  log_normalizer = jax.nn.logsumexp(logits, axis=-1)  # once for both terms (the [B, L, V] pass)
  out = weighted_cross_entropy(logits, batch["targets"], batch["loss_weights"], log_normalizer)
  soft = soft_cross_entropy(logits, batch["soft_ids"], batch["soft_probs"], log_normalizer)
  return LossOutput(out.loss_sum + soft, out.weight_sum, {**out.metric_sums, "soft_ce": soft})
