"""The training loop shared by every stage: resume, compiled steps, metrics, eval, checkpoints, guards.

  result = loop.train(model_config=..., optimizer_config=..., loop_config=...,
                      batches_from=lambda start_step: iterator_of_batches, workdir=...)

* Resume: the newest readable checkpoint in <workdir>/checkpoints is restored onto the current
  mesh; `batches_from(step)` must yield the batches of steps step, step+1, ... so a resumed run
  sees exactly the data an uninterrupted run would (deterministic given the seed).
* Stage hand-off: `init_params` (e.g. from checkpoint.load_params of the previous stage) replaces
  the freshly initialized parameters of a new run.
* Observability: <workdir>/metrics.jsonl + TensorBoard events (train.writers), a progress line
  with step, loss, tokens/s and ETA, compile statistics (flops, memory) as step-0 metrics.
* Guards: a non-finite loss stops the run before anything is saved, so the last good checkpoint
  stays the newest; SIGTERM (preemption) saves a checkpoint at the current step and returns
  (on several hosts: at a step all hosts agree on, whichever host got the signal); so does a
  wall-clock limit (`LoopConfig.max_seconds`, one process only), e.g. a lent accelerator's time.
* Multi-host: every process runs `train` with the same arguments; `batches_from` yields that
  process's rows of each global batch (process_count x its rows); only process 0 writes metrics.
* Metrics are read back one step late, so the host never waits on the step it just launched.

The bookkeeping is StepLoop's, which drives any Program (a stage's state and step): `train`
runs the compiled supervised step in it (lm, sft); the RL stage runs its rollout and learner in
the same loop (rarejax.rl.stage), with the same progress, metrics, checkpoints and guards.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pathlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import gin
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from rarejax.model.config import ModelConfig
from rarejax.parallel import mesh as mesh_lib
from rarejax.train import checkpoint as checkpoint_lib
from rarejax.train import losses, optimizer, state as state_lib, step as step_lib, writers

Batch = Mapping[str, np.ndarray]
EvalFn = Callable[[Any, int], Mapping[str, float]]


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the message names the step and the last good checkpoint."""


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
  """How long and how observably a stage trains.

  Attributes:
    num_steps: total optimizer steps of the stage (a resumed run continues up to this).
    loss: registered loss name (train.losses): 'lm', 'sft', later 'dapo'.
    num_microbatches: gradient accumulation factor (batch rows are split, summed, divided once).
    log_every: steps between metric lines (and progress-bar updates).
    eval_every: steps between calls of the eval function (0: only at the end).
    checkpoint_every: steps between checkpoints (plus one at the end and on SIGTERM).
    keep_checkpoints: how many checkpoints to keep.
    async_checkpoints: write checkpoints in the background.
    seed: parameter init and step rng seed.
    mesh_shape: (data, fsdp, tensor); one entry may be -1 (all remaining devices).
    loss_positions: K > 0 computes logits only at the K most-weighted positions of each row
      (response-masked losses; step.make_train_step), 0 at every position.
    max_seconds: > 0 stops the run (checkpoint saved, stopped = 'time_limit') at the first step
      that ends this many seconds after `train` was called, compilation included; 0: no limit.
      One process only (hosts would not agree on the step).
    tensorboard: write TensorBoard events beside metrics.jsonl (needs tensorboardX).
  """
  num_steps: int = 100
  loss: str = "lm"
  num_microbatches: int = 1
  log_every: int = 10
  eval_every: int = 0
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  async_checkpoints: bool = True
  seed: int = 0
  mesh_shape: tuple[int, int, int] = (-1, 1, 1)
  loss_positions: int = 0
  max_seconds: float = 0.0
  tensorboard: bool = True


@dataclasses.dataclass
class TrainResult:
  """What a finished (or stopped) stage hands back."""
  state: state_lib.TrainState
  step: int
  stopped: str  # 'completed' | 'preempted' | 'time_limit'
  last_metrics: dict[str, float]
  eval_metrics: dict[str, float]
  start_step: int  # the step this call started (or resumed) from
  loop_seconds: float  # wall time of the step loop of this call (after compilation)


@contextlib.contextmanager
def preemption_notice() -> Iterator[Callable[[int], bool]]:
  """Yields preempted(step) -> bool, True from the step at which the run must save and stop.

  One process: a SIGTERM handler sets a flag (main thread only; elsewhere never preempted).
  Several processes: JAX's coordination service hears SIGTERM on any host and the hosts agree
  on one step (multihost_utils.reached_preemption_sync_point, called at every step), so all of
  them save the same checkpoint together instead of waiting on each other forever.
  """
  if jax.process_count() > 1:
    yield multihost_utils.reached_preemption_sync_point
    return
  flag = {"set": False}
  try:
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.update(set=True))
  except ValueError:  # not the main thread: no handler, never preempted by signal
    yield lambda _: False
    return
  try:
    yield lambda _: flag["set"]
  finally:
    signal.signal(signal.SIGTERM, previous)


def _global_abstract_batch(batch: Batch) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch the step is compiled for: every process feeds its own rows (per-host
  input sharding), so the global batch has process_count x the rows of `batch`."""
  rows = lambda v: (np.shape(v)[0] * jax.process_count(), *np.shape(v)[1:])
  return {k: jax.ShapeDtypeStruct(rows(v), np.asarray(v).dtype) for k, v in batch.items()}


def _initial_state(model_config, tx, shardings, checkpointer, loop_config, init_params):
  """Restores the newest readable checkpoint, else initializes (with `init_params` if given)."""
  if checkpointer.all_steps():
    abstract = checkpoint_lib.abstract_with_shardings(
        state_lib.abstract_train_state(model_config, tx), shardings)
    state, _ = checkpointer.restore(abstract)
    logging.info("resumed from step %d in %s", int(state.step), checkpointer.directory)
    return state
  state = state_lib.init_train_state(model_config, tx, shardings, loop_config.seed)
  if init_params is not None:
    state = state.replace(params=jax.device_put(init_params, shardings.params))
  return state


def train(*, model_config: ModelConfig, optimizer_config: optimizer.OptimizerConfig,
          loop_config: LoopConfig, batches_from: Callable[[int], Iterator[Batch]],
          workdir: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
          init_params: Any = None, eval_fn: EvalFn | None = None,
          progress: bool = True) -> TrainResult:
  """Trains (or resumes) one stage in `workdir`; see the module docstring."""
  called = time.perf_counter()
  if loop_config.max_seconds and jax.process_count() > 1:
    raise ValueError("LoopConfig.max_seconds works in one process only: the hosts would not stop "
                     "at the same step")
  workdir = pathlib.Path(workdir)
  metadata = {"model_config": model_config.to_dict(), **(metadata or {})}
  mesh = mesh_lib.make_mesh(*loop_config.mesh_shape)
  tx = optimizer.make_optimizer(optimizer_config)
  shardings = state_lib.train_state_shardings(model_config, tx, mesh)
  checkpointer = checkpoint_lib.Checkpointer(workdir / "checkpoints",
                                             max_to_keep=loop_config.keep_checkpoints,
                                             async_save=loop_config.async_checkpoints)
  with (checkpointer, writers.MetricWriter(workdir, loop_config.tensorboard) as writer,
        preemption_notice() as preempted):
    state = _initial_state(model_config, tx, shardings, checkpointer, loop_config, init_params)
    start = int(jax.device_get(state.step))
    writer.rewind(start)
    batches = batches_from(start)
    step_fn = step_lib.make_train_step(
        model_config, tx, losses.get_loss(loop_config.loss), loop_config.num_microbatches,
        optimizer.learning_rate_schedule(optimizer_config), loop_config.loss_positions)
    schedule = Schedule(loop_config.num_steps, loop_config.log_every, loop_config.eval_every,
                        loop_config.checkpoint_every, loop_config.max_seconds)
    driver = StepLoop(schedule, checkpointer, writer, eval_fn, progress=progress, called=called)
    compiled, first = None, None
    if start < loop_config.num_steps:
      first = next(batches)
      compiled = step_lib.compile_train_step(
          step_fn, shardings, checkpoint_lib.abstract_with_shardings(
              state_lib.abstract_train_state(model_config, tx), shardings),
          _global_abstract_batch(first), mesh)
      writer.write(start, {f"compile/{k}": v for k, v in compiled.stats.items()})
    program = _SupervisedProgram(state, compiled, first, batches, checkpointer, metadata)
    stopped = driver.run(program, preempted)
    return TrainResult(state=program.state, step=program.step, stopped=stopped,
                       last_metrics=driver.last_metrics, eval_metrics=driver.eval_metrics,
                       start_step=start, loop_seconds=driver.loop_seconds)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When the step loop records, evaluates, checkpoints and stops (a stage's loop settings)."""
  num_steps: int
  log_every: int
  eval_every: int  # 0: only at the end
  checkpoint_every: int
  max_seconds: float = 0.0  # > 0: stop (saved) at the first step ending this long after `called`


class Program(Protocol):
  """One stage's state and step, driven by StepLoop: SFT's compiled step (_SupervisedProgram),
  RL's rollout and learner (rarejax.rl.stage)."""
  prefix: str  # written before each metric name ('train/'; '' when the names carry their own)
  read_late: bool  # read a step's metrics after the next step is launched (device values)

  @property
  def step(self) -> int:
    """Steps completed."""

  def run_step(self) -> Mapping[str, Any]:
    """Runs one step; its metrics (device values allowed: they are read one step late)."""

  def prepare_next(self) -> None:
    """Readies the next step while the device may still run this one (after its bookkeeping)."""

  def params(self) -> Any:
    """The parameters an evaluation reads."""

  def save(self) -> None:
    """Checkpoints the current step."""

  def loss(self, metrics: Mapping[str, float]) -> float | None:
    """The loss the non-finite guard checks in a step's metrics (None: nothing to check)."""

  def postfix(self, metrics: Mapping[str, float]) -> dict[str, str]:
    """What the progress line shows of a step's metrics."""


class StepLoop:
  """The loop every training stage runs its Program in: progress line with ETA, metrics written
  every `log_every` steps (read back one step late), evaluation, checkpoints, SIGTERM and the
  time limit, and the non-finite-loss guard (nothing saved for a bad step)."""

  def __init__(self, schedule: Schedule, checkpointer, writer, eval_fn: EvalFn | None, *,
               progress: bool, called: float):
    self.schedule, self.checkpointer, self.writer, self.eval_fn = (schedule, checkpointer,
                                                                   writer, eval_fn)
    self.progress = progress
    self.deadline = called + schedule.max_seconds if schedule.max_seconds > 0 else math.inf
    self.last_good = checkpointer.all_steps()[-1] if checkpointer.all_steps() else None
    self.last_metrics: dict[str, float] = {}
    self.eval_metrics: dict[str, float] = {}
    self.eval_step: int | None = None
    self.loop_seconds = 0.0
    self.tokens, self.clock = 0.0, time.perf_counter()
    self.bar = None

  def run(self, program: Program, preempted: Callable[[int], bool]) -> str:
    """Runs the program's remaining steps; returns 'completed', 'preempted' or 'time_limit'
    (checkpoint saved at the step it stopped)."""
    schedule = self.schedule
    step = program.step
    self.bar = tqdm.tqdm(total=schedule.num_steps, initial=step, unit="step", dynamic_ncols=True,
                         disable=not self.progress or jax.process_index() != 0, mininterval=2)
    started, pending, stopped = time.perf_counter(), None, "completed"
    while step < schedule.num_steps:
      metrics = program.run_step()
      if pending is not None:
        self._record(program, *pending)
      step += 1
      pending = (step, metrics)
      if not program.read_late:
        self._record(program, *pending)
        pending = None
      out_of_time = time.perf_counter() >= self.deadline and step < schedule.num_steps
      stop = preempted(step) or out_of_time
      must_save = step % schedule.checkpoint_every == 0 or stop
      must_eval = schedule.eval_every and step % schedule.eval_every == 0
      if pending is not None and (must_save or must_eval or step == schedule.num_steps):
        self._record(program, *pending)  # the state about to be saved/evaluated must be finite
        pending = None
      if must_eval:
        self._evaluate(program, step)
      if must_save:
        self._save(program)
      if out_of_time:
        logging.warning("LoopConfig.max_seconds = %s reached: checkpoint saved at step %d; "
                        "stopping.", schedule.max_seconds, step)
        stopped = "time_limit"
        break
      if stop:
        logging.warning("preempted (SIGTERM): checkpoint saved at step %d; stopping.", step)
        stopped = "preempted"
        break
      if step < schedule.num_steps:
        program.prepare_next()
    if pending is not None:
      self._record(program, *pending)
    self.loop_seconds = time.perf_counter() - started
    if stopped == "completed":
      if program.step not in self.checkpointer.all_steps():
        self._save(program)
      if self.eval_step != program.step:
        self._evaluate(program, program.step)
    self.checkpointer.wait()
    self.bar.close()
    return stopped

  def _record(self, program: Program, step: int, metrics: Mapping[str, Any]) -> None:
    values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
    loss = program.loss(values)
    if loss is not None and not math.isfinite(loss):
      where = (f"step {self.last_good} in {self.checkpointer.directory}" if self.last_good
               is not None else "none (no checkpoint was written yet)")
      raise NonFiniteLossError(f"loss is {loss} at step {step}; stopped without saving. Last "
                               f"good checkpoint: {where}. Lower the learning rate or check the "
                               "data of that step.")
    self.tokens += values.get("tokens", 0.0)
    self.last_metrics = values
    self.bar.update(step - self.bar.n)
    if step % self.schedule.log_every == 0 or step == self.schedule.num_steps:
      if "tokens" in values:
        elapsed = time.perf_counter() - self.clock
        values["tokens_per_second"] = self.tokens / max(elapsed, 1e-9)
        self.tokens, self.clock = 0.0, time.perf_counter()
      self.writer.write(step, {f"{program.prefix}{k}": v for k, v in values.items()})
      self.bar.set_postfix(program.postfix(values), refresh=False)

  def _evaluate(self, program: Program, step: int) -> None:
    if self.eval_fn is None:
      return
    self.eval_metrics = {k: float(v) for k, v in self.eval_fn(program.params(), step).items()}
    self.eval_step = step
    self.writer.write(step, {f"eval/{k}": v for k, v in self.eval_metrics.items()})
    logging.info("eval at step %d: %s", step, self.eval_metrics)

  def _save(self, program: Program) -> None:
    program.save()
    self.last_good = program.step


class _SupervisedProgram:
  """The compiled step over a stream of batches (the loss is the step's: lm, sft)."""
  prefix = "train/"
  read_late = True  # the host never waits on the step it just launched

  def __init__(self, state, compiled, first: Batch, batches: Iterator[Batch], checkpointer,
               metadata: Mapping[str, Any]):
    self.state, self.compiled, self.batch, self.batches = state, compiled, first, batches
    self.checkpointer, self.metadata = checkpointer, dict(metadata)
    self._step = int(jax.device_get(state.step))

  @property
  def step(self) -> int:
    return self._step

  def run_step(self) -> Mapping[str, Any]:
    self.state, metrics = self.compiled(self.state, self.batch)
    self._step += 1
    return metrics

  def prepare_next(self) -> None:
    self.batch = next(self.batches)  # packed on the host while the device runs the step

  def params(self) -> Any:
    return self.state.params

  def save(self) -> None:
    self.checkpointer.save(self.state, self.metadata, force=True)

  def loss(self, metrics: Mapping[str, float]) -> float:
    return metrics["loss"]

  def postfix(self, metrics: Mapping[str, float]) -> dict[str, str]:
    return {"loss": f"{metrics['loss']:.4f}", "tok_s": f"{metrics['tokens_per_second']:.0f}"}
