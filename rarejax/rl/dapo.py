"""DAPO: group-relative advantages, dynamic sampling, and the clip-higher token-level loss ("dapo").

Advantages. Sample i of a group (the G samples of one prompt), with accuracy outcome a_i and
shaping s_i in (-1, 0] (rarejax.rl.rewards: weighted format/repetition/overlong penalties), gets

  A_i = B_i + |B_i| s_i,   B_i = (a_i - mean(a)) / (std(a) + eps),   eps = 1e-6,

with std the *unbiased* sample standard deviation over the group's G outcomes (ddof = 1): the
convention of verl's GRPO advantage (torch.std), which DAPO's reference recipe uses. (ddof = 0
would scale every advantage by sqrt(G / (G - 1)).) The accuracy outcome alone sets the direction
of every update; shaping only sets its size within an outcome: a penalized right answer keeps a
fraction 1 + s_i of its credit (still > 0), a penalized wrong one takes 1 - s_i times the blame.
So shaping cannot create an advantage (B_i = 0 gives A_i = 0) nor flip one's sign, whatever the
group size; a penalty bounded by a reward gap instead (r = a + s) would not guarantee that, since
the group mean moves with G.

Dynamic sampling. A group whose accuracy outcomes are all equal (every sample right, or every
one wrong, or every differential at the same rank) has A = 0 everywhere: it carries no gradient
but would still count in the token mean, so it is dropped and the batch is refilled with freshly
drawn prompts, for at most `max_draws` rollout rounds per step. For the final diagnosis (exact
match in {0, 1}) this keeps exactly the groups with 0 < correct < G.

Loss. For response token t of sample i, with the temperature-T log-probs of the learner
(logits / T) and of the rollout (`old_logprobs`, from the sampler at the same T and frozen for
every update on that rollout), so that the first update has ratio exactly 1 and the later
minibatch updates on the same rollout (rollout.Learner: epochs x minibatches) are off-policy,
where the asymmetric clip acts:

  ratio_t = exp(logp_t - old_logp_t)
  loss_t  = -min(ratio_t A_i, clip(ratio_t, 1 - eps_low, 1 + eps_high) A_i)  +  beta * k3_t
  k3_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1      (KL to a frozen reference; beta > 0)

aggregated at token level: the sum over every response token of the batch divided by the number
of response tokens (the train step divides summed loss by summed weight once, across
microbatches), so a long response weighs by its length, not 1/G of its group.

Batch keys read by the loss (see rollout.learner_batch): targets int32 [B, L], loss_weights
float32 [B, L] (1 on response tokens up to and including the stop token, 0 after it and on the
prompt), advantages float32 [B], old_logprobs float32 [B, L], temperature float32 [B], and
ref_logprobs float32 [B, L] only when beta > 0.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import gin
import jax
import jax.numpy as jnp
import numpy as np

from rarejax.train import losses

Array = jax.Array
DEFAULT_ADVANTAGE_EPS = 1e-6


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class DapoConfig:
  """DAPO objective hyper-parameters (defaults: the DAPO paper's eps_low 0.2, eps_high 0.28).

  Attributes:
    eps_low: the ratio is clipped below at 1 - eps_low (negative advantages).
    eps_high: ... and above at 1 + eps_high (positive advantages: clip-higher).
    beta: weight of the k3 KL to the frozen reference; 0 skips the reference entirely.
    advantage_eps: eps of the advantage normalization.
  """
  eps_low: float = 0.2
  eps_high: float = 0.28
  beta: float = 0.0
  advantage_eps: float = DEFAULT_ADVANTAGE_EPS

  def __post_init__(self):
    if not 0 <= self.eps_low < 1 or self.eps_high < 0 or self.beta < 0:
      raise ValueError(f"DapoConfig needs 0 <= eps_low < 1, eps_high >= 0, beta >= 0; got "
                       f"eps_low={self.eps_low}, eps_high={self.eps_high}, beta={self.beta}.")


def _groups(rewards: np.ndarray, group_size: int) -> np.ndarray:
  """[N * G] -> [N, G], with a clear error when the length is not a multiple of G."""
  rewards = np.asarray(rewards, np.float64)
  if group_size < 2 or rewards.ndim != 1 or rewards.size % group_size:
    raise ValueError(f"need rewards [N * G] with G >= 2; got shape {rewards.shape}, "
                     f"G={group_size}.")
  return rewards.reshape(-1, group_size)


def group_advantages(rewards: np.ndarray, group_size: int,
                     eps: float = DEFAULT_ADVANTAGE_EPS) -> np.ndarray:
  """float32 [N * G]: (r - group mean) / (unbiased group std + eps), rows n*G .. n*G+G-1 a group."""
  groups = _groups(rewards, group_size)
  mean = groups.mean(axis=1, keepdims=True)
  std = groups.std(axis=1, ddof=1, keepdims=True)
  return ((groups - mean) / (std + eps)).reshape(-1).astype(np.float32)


def shaped_advantages(accuracy: np.ndarray, shaping: np.ndarray, group_size: int,
                      eps: float = DEFAULT_ADVANTAGE_EPS) -> np.ndarray:
  """float32 [N * G]: the accuracy advantage B scaled by the shaping, B + |B| * shaping (module
  docstring); shaping [N * G] must lie in (-1, 0]."""
  shaping = np.asarray(shaping, np.float32)
  if shaping.size and (shaping.min() <= -1 or shaping.max() > 0):
    raise ValueError(f"shaping must lie in (-1, 0] so that it never flips an advantage; got "
                     f"[{shaping.min()}, {shaping.max()}].")
  advantages = group_advantages(accuracy, group_size, eps)
  return advantages + np.abs(advantages) * shaping


def varied_groups(outcomes: np.ndarray, group_size: int) -> np.ndarray:
  """bool [N]: groups whose outcomes are not all equal (the ones dynamic sampling keeps)."""
  groups = _groups(outcomes, group_size)
  return groups.max(axis=1) > groups.min(axis=1)


S = TypeVar("S")


@dataclasses.dataclass
class Filled(Generic[S]):
  """What dynamic sampling gathered for one step.

  Attributes:
    draws: every rollout drawn, in order (all of them feed the reward/length statistics).
    kept: (draw index, group index within that draw) of the groups used, at most num_groups.
    groups_drawn: groups sampled over all draws.
    groups_varied: of those, groups whose accuracy outcomes were not all equal.
  """
  draws: list[S]
  kept: list[tuple[int, int]]
  groups_drawn: int
  groups_varied: int

  @property
  def dropped_fraction(self) -> float:
    """Fraction of drawn groups dropped because their accuracy outcomes were all equal."""
    return 1.0 - self.groups_varied / max(self.groups_drawn, 1)


def dynamic_sampling(draw: Callable[[int], S], outcomes_of: Callable[[S], np.ndarray],
                     group_size: int, num_groups: int, max_draws: int) -> Filled[S]:
  """Draws rollouts until `num_groups` groups with varied outcomes are kept or `max_draws` ran.

  Args:
    draw: draw(round) -> a rollout of whole groups (round = 0, 1, ...).
    outcomes_of: its accuracy outcomes [N * G] (never the shaped reward: shaping alone must not
      keep a group).
    group_size: G.
    num_groups: groups a full batch holds.
    max_draws: most rollout rounds (>= 1); a batch may stay short, even empty.
  """
  if max_draws < 1 or num_groups < 1:
    raise ValueError(f"dynamic sampling needs max_draws >= 1 and num_groups >= 1, got "
                     f"{max_draws} and {num_groups}.")
  filled: Filled[S] = Filled(draws=[], kept=[], groups_drawn=0, groups_varied=0)
  for round_index in range(max_draws):
    rollout = draw(round_index)
    varied = varied_groups(outcomes_of(rollout), group_size)
    filled.draws.append(rollout)
    filled.groups_drawn += varied.size
    filled.groups_varied += int(varied.sum())
    room = num_groups - len(filled.kept)
    filled.kept += [(round_index, int(g)) for g in np.flatnonzero(varied)[:room]]
    if len(filled.kept) == num_groups:
      break
  return filled


def scaled_log_probs(logits: Array, targets: Array, temperature: Array) -> Array:
  """float32 [B, L]: log p(target) under softmax(logits / temperature[b]) (temperature [B] > 0)."""
  return losses.token_log_probs(logits / temperature[:, None, None], targets)


def _entropy(scaled: Array) -> Array:
  """float32 [B, L]: entropy of softmax(scaled) over the vocabulary."""
  log_p = jax.nn.log_softmax(scaled, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def make_dapo_loss(config: DapoConfig) -> losses.LossFn:
  """The DAPO loss (module docstring) as a train-step loss function.

  Metric sums (divided by the response-token count in the step): pg_loss, ratio_mean, the
  tokens whose clip is active on each side, clip_fraction_high (A > 0 and ratio > 1 + eps_high)
  and clip_fraction_low (A < 0 and ratio < 1 - eps_low), entropy (of the temperature-T
  distribution), and kl when beta > 0.
  """
  def dapo_loss(logits: Array, batch: losses.Batch, rng: Array) -> losses.LossOutput:
    del rng  # deterministic
    required = ["targets", "loss_weights", "advantages", "old_logprobs", "temperature"]
    required += ["ref_logprobs"] if config.beta > 0 else []
    missing = [k for k in required if k not in batch]
    if missing:
      raise ValueError(f"dapo loss (beta={config.beta}) needs batch keys {missing}; the batch "
                       f"has {sorted(batch)} (build it with rarejax.rl.rollout.learner_batch).")
    weights = batch["loss_weights"].astype(jnp.float32)
    scored = weights > 0
    scaled = logits / batch["temperature"][:, None, None]
    logp = losses.token_log_probs(scaled, batch["targets"])
    log_ratio = jnp.where(scored, logp - batch["old_logprobs"], 0.0)
    ratio = jnp.exp(log_ratio)
    advantages = batch["advantages"][:, None]
    clipped_ratio = jnp.clip(ratio, 1.0 - config.eps_low, 1.0 + config.eps_high)
    pg = -jnp.minimum(ratio * advantages, clipped_ratio * advantages)
    clipped_high = (advantages > 0) & (ratio > 1.0 + config.eps_high)
    clipped_low = (advantages < 0) & (ratio < 1.0 - config.eps_low)
    entropy = _entropy(jax.lax.stop_gradient(scaled))
    total = lambda x: jnp.sum(x * weights)
    metrics = {"pg_loss": total(pg), "ratio_mean": total(jax.lax.stop_gradient(ratio)),
               "clip_fraction_high": total(clipped_high.astype(jnp.float32)),
               "clip_fraction_low": total(clipped_low.astype(jnp.float32)),
               "entropy": total(entropy)}
    per_token = pg
    if config.beta > 0:
      delta = jnp.where(scored, batch["ref_logprobs"] - logp, 0.0)
      kl = jnp.exp(delta) - delta - 1.0
      per_token = pg + config.beta * kl
      metrics["kl"] = total(jax.lax.stop_gradient(kl))
    return losses.LossOutput(loss_sum=total(per_token), weight_sum=jnp.sum(weights),
                             metric_sums=metrics)
  return dapo_loss


losses.register_loss("dapo")(make_dapo_loss(DapoConfig()))


def reference_scorer(model: Any) -> Callable[[Any, dict[str, Any]], Array]:
  """jit(params, batch) -> float32 [B, L] temperature-T log-probs of batch targets (reference KL).

  Args:
    model: the Decoder (flax module) the params belong to.
  """
  @jax.jit
  def score(params, batch):
    logits, _ = model.apply({"params": params}, batch["inputs"], positions=batch["positions"],
                            segment_ids=batch["segment_ids"])
    return scaled_log_probs(logits, batch["targets"], batch["temperature"])
  return score
