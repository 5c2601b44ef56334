"""The one train step (any loss, gradient accumulation) and its ahead-of-time sharded compile.

Batch: a dict of [B, ...] arrays sharded along B: "inputs" int32 [B, L] (model input tokens),
"targets" int32 [B, L], optional "positions" and "segment_ids" int32 [B, L] (packing /
padding, see model.transformer), plus whatever the loss reads ("loss_weights" for SFT,
advantages etc. for RL).

Gradient accumulation splits B into `num_microbatches` strided microbatches (row r goes to
microbatch r % n, so no row moves between devices), scans over them summing gradient, loss and
token weight, and divides once: the update equals that of one big batch.
"""
import ctypes
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import optax

from rarejax.model.config import ModelConfig
from rarejax.model.layers import constrain
from rarejax.model.transformer import Decoder
from rarejax.parallel import rules as rules_lib
from rarejax.parallel.mesh import sharding_context
from rarejax.train.losses import Batch, LossFn, LossOutput
from rarejax.train.state import TrainState

StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_host_memory() -> bool:
  """Makes glibc malloc reuse freed memory instead of returning it to the kernel (CPU training).

  XLA:CPU allocates each step's temporary buffer (about 1 GB for small_7m at 16 x 256 tokens)
  with posix_memalign on a worker thread; glibc serves that from a fresh mmap and unmaps it on
  free, so every step page-faults the whole buffer in again (measured on 2 cores: 20-25% of
  the step in the kernel). One malloc arena, no mmap and no trimming keep it mapped; the cost
  is that the process keeps its peak heap. Call it before the first JAX computation (threads
  pick their arena at their first allocation); later calls do not help those threads.

  Returns:
    False where the C library is not glibc (nothing changed).
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never trim
  return all(libc.mallopt(param, value) == 1 for param, value in settings)


def _split_microbatches(batch: Batch, num_microbatches: int) -> Batch:
  """[B, ...] -> [n, B/n, ...], microbatch i holding rows i, i+n, i+2n, ..."""
  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by "
                       f"num_microbatches={num_microbatches}.")
    x = x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x, (None, "activation_batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, batch)


def loss_positions_batch(batch: Batch, num_positions: int) -> tuple[jax.Array, Batch, jax.Array]:
  """(positions [B, K], the [B, L, ...] arrays of `batch` gathered at them, the loss weight left
  out).

  The K positions of each row with the largest "loss_weights" (ties: the earliest); a row with
  more than K weighted tokens loses the rest, which the third value counts (logged as
  "dropped_loss_weight": raise K when it is not 0).
  """
  if "loss_weights" not in batch:
    raise ValueError("loss_positions needs batch['loss_weights'] (a response-masked loss such as "
                     "'sft'); set LoopConfig.loss_positions = 0 for other losses")
  weights = batch["loss_weights"]
  length = weights.shape[1]
  num_positions = min(num_positions, length)
  _, positions = jax.lax.top_k(weights.astype(jnp.float32), num_positions)
  def gather(v):
    index = positions.reshape(positions.shape + (1,) * (v.ndim - 2))
    return jnp.take_along_axis(v, index, axis=1)
  gathered = {k: (gather(v) if v.ndim >= 2 and v.shape[1] == length and k != "inputs" else v)
              for k, v in batch.items()}
  dropped = jnp.sum(weights.astype(jnp.float32)) - jnp.sum(gathered["loss_weights"])
  return positions, gathered, dropped


def make_train_step(config: ModelConfig, tx: optax.GradientTransformation, loss_fn: LossFn,
                    num_microbatches: int = 1,
                    learning_rate_fn: optax.Schedule | None = None,
                    loss_positions: int = 0) -> StepFn:
  """Returns step(state, batch) -> (new_state, metrics) for `loss_fn` (see train.losses).

  Metrics: "loss" and every loss metric divided by the total token weight, "tokens" (total
  weight), "grad_norm" (before clipping) and "learning_rate" when `learning_rate_fn` is given.

  `loss_positions` K > 0: the model computes logits only at the K positions of each row with
  the largest loss weight (loss_positions_batch) and the loss reads those; for a response-masked
  loss whose responses are short (answer-first SFT: ~6% of the tokens) this skips most of the
  output projection, the largest matmul of a small model with a large vocabulary. The result is
  the same as K = 0 while no row has more than K weighted tokens ("dropped_loss_weight" = 0).
  """
  model = Decoder(config)

  def micro_loss(params, micro: Batch, rng) -> tuple[jax.Array, LossOutput]:
    positions, dropped = None, None
    if loss_positions:
      positions, read, dropped = loss_positions_batch(micro, loss_positions)
    logits, _ = model.apply({"params": params}, micro["inputs"],
                            positions=micro.get("positions"),
                            segment_ids=micro.get("segment_ids"), logit_positions=positions)
    out = loss_fn(logits, read if loss_positions else micro, rng)
    if loss_positions:
      out = LossOutput(out.loss_sum, out.weight_sum,
                       {**out.metric_sums, "dropped_loss_weight": dropped})
    return out.loss_sum, out

  grad_fn = jax.grad(micro_loss, has_aux=True)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    rng, step_rng = jax.random.split(state.rng)

    def accumulate(carry, xs):
      micro, index = xs
      grads, out = grad_fn(state.params, micro, jax.random.fold_in(step_rng, index))
      return jax.tree.map(jnp.add, carry, (grads, out)), None

    micro_batches = _split_microbatches(batch, num_microbatches)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32),  # float32 accumulators
                         jax.eval_shape(grad_fn, state.params, first, step_rng))
    (grad_sum, total), _ = jax.lax.scan(accumulate, zeros,
                                        (micro_batches, jnp.arange(num_microbatches)))
    weight = jnp.maximum(total.weight_sum, 1e-8)
    grads = jax.tree.map(lambda g, p: (g / weight).astype(p.dtype), grad_sum, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           opt_state=opt_state, rng=rng)
    metrics = {"loss": total.loss_sum / weight, "tokens": total.weight_sum,
               "grad_norm": optax.global_norm(grads),
               **{k: v / weight for k, v in total.metric_sums.items()}}
    if learning_rate_fn is not None:
      metrics["learning_rate"] = learning_rate_fn(state.step)
    return new_state, metrics

  return step


def batch_shardings(batch: Batch, mesh: Mesh,
                    rules: rules_lib.LogicalRules = rules_lib.TRAIN_RULES) -> Batch:
  """NamedShardings splitting every batch leaf along its first (batch) axis."""
  logical = jax.tree.map(
      lambda x: PartitionSpec("activation_batch", *(None,) * (len(x.shape) - 1)), batch)
  return rules_lib.logical_to_shardings(logical, batch, mesh, rules)


def compile_stats(compiled: jax.stages.Compiled) -> dict[str, float]:
  """XLA's flop count and memory sizes (bytes) of a compiled computation."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  stats = {"flops": float((cost or {}).get("flops", -1.0))}
  memory = compiled.memory_analysis()
  for field in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                "temp_size_in_bytes", "generated_code_size_in_bytes"):
    stats[field] = float(getattr(memory, field, -1))
  return stats


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """An AOT-compiled train step: `state, metrics = compiled(state, batch)`.

  The state argument is donated (its buffers are reused for the new state).
  """
  executable: jax.stages.Compiled
  batch_shardings: Batch
  batch_shapes: dict[str, tuple[int, ...]]  # global shapes the step was compiled for
  stats: dict[str, float]

  def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Any]]:
    """`batch` holds this process's rows (all rows when there is one process)."""
    batch = jax.make_array_from_process_local_data(
        self.batch_shardings, batch, {k: self.batch_shapes[k] for k in batch})
    return self.executable(state, batch)


def compile_train_step(step_fn: StepFn, state_shardings: TrainState, abstract_state: TrainState,
                       abstract_batch: Batch, mesh: Mesh,
                       rules: rules_lib.LogicalRules = rules_lib.TRAIN_RULES) -> CompiledStep:
  """jit with explicit in/out shardings and donated state, lower, compile, log memory and flops.

  Args:
    step_fn: from make_train_step.
    state_shardings: from state.train_state_shardings.
    abstract_state: state.abstract_train_state (or the real state).
    abstract_batch: the global batch as ShapeDtypeStructs (or arrays) with the run's shapes.
    mesh: the device mesh.
    rules: logical-axis rules for the activations inside the model.
  """
  shardings = batch_shardings(abstract_batch, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(step_fn, in_shardings=(state_shardings, shardings),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)
  with sharding_context(mesh, rules):
    lowered = jitted.lower(abstract_state, abstract_batch)
  executable = lowered.compile()
  stats = compile_stats(executable)
  logging.info("train step compiled: %.3g flops/step; memory (bytes) args %.3g out %.3g temp %.3g "
               "alias %.3g", stats["flops"], stats["argument_size_in_bytes"],
               stats["output_size_in_bytes"], stats["temp_size_in_bytes"],
               stats["alias_size_in_bytes"])
  return CompiledStep(executable=executable, batch_shardings=shardings,
                      batch_shapes={k: tuple(v.shape) for k, v in abstract_batch.items()},
                      stats=stats)
