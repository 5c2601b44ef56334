"""Training stages (knowledge internalization, trajectory SFT): registered tasks → loop → params export.

One gin-configurable settings function (`stage_settings`, bound as `train_stage.*`) serves every
training stage; its gin scope is the stage name, so
`cpt/train_stage.tasks = ['knowledge_lm']` and `sft/train_stage.tasks = ['sft_mixture']` give
two stages that differ only in data, loss and schedule. Task roles are the names returned by
rarejax.data.stage.register_tasks; several roles are mixed with equal rates, or with the rates
of a {role: rate} mapping.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gin
import jax

from rarejax.model.config import ModelConfig
from rarejax.train import checkpoint, loop, optimizer

EvalFn = Callable[[Any, int], Mapping[str, float]]


class StagePreempted(RuntimeError):
  """The stage stopped early (SIGTERM) after saving a checkpoint; rerunning resumes it."""


def resolve_model_config(model_config: ModelConfig, vocab_size: int) -> ModelConfig:
  """The model config with a vocabulary that covers the tokenizer's (grown to it if smaller)."""
  if model_config.vocab_size < vocab_size:
    return dataclasses.replace(model_config, vocab_size=vocab_size)
  return model_config


def task_rates(tasks: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
  """{role: sampling rate} of `train_stage.tasks`: a list samples its roles equally."""
  if isinstance(tasks, str) or not tasks:
    raise ValueError(f"train_stage.tasks must be a non-empty list of roles or {{role: rate}}, "
                     f"got {tasks!r}")
  rates = dict(tasks) if isinstance(tasks, Mapping) else {role: 1.0 for role in tasks}
  if any(rate <= 0 for rate in rates.values()):
    raise ValueError(f"train_stage.tasks: sampling rates must be > 0, got {rates}")
  return rates


@dataclasses.dataclass(frozen=True)
class StageSettings:
  """What a training stage trains with: its gin settings, the model grown to the tokenizer."""
  rates: dict[str, float]  # {task role: sampling rate}
  sequence_length: int
  batch_size: int
  model_config: ModelConfig
  optimizer_config: optimizer.OptimizerConfig
  loop_config: loop.LoopConfig


@gin.configurable("train_stage")
def stage_settings(vocab_size: int, tasks: Sequence[str] | Mapping[str, float] = gin.REQUIRED,
                   sequence_length: int = 256, batch_size: int = 16,
                   model_config: ModelConfig | None = None,
                   optimizer_config: optimizer.OptimizerConfig | None = None,
                   loop_config: loop.LoopConfig | None = None) -> StageSettings:
  """The settings of the training stage whose gin scope is active (`sft/train_stage.tasks`, ...).

  Args:
    vocab_size: the tokenizer's vocabulary size.
    tasks: task roles to train on (gin): a list (equal rates) or {role: sampling rate}.
    sequence_length, batch_size: packed rows per step (gin).
    model_config, optimizer_config, loop_config: gin-provided (defaults: ModelConfig(), ...).
  """
  return StageSettings(
      rates=task_rates(tasks), sequence_length=sequence_length, batch_size=batch_size,
      model_config=resolve_model_config(model_config or ModelConfig(), vocab_size),
      optimizer_config=optimizer_config or optimizer.OptimizerConfig(),
      loop_config=loop_config or loop.LoopConfig())


def train_stage(*, batches_for: Callable[[Mapping[str, float], int, int, int],
                                         Callable[[int], Any]],
                workdir: pathlib.Path, vocab_size: int,
                init_export: pathlib.Path | None = None, eval_fn: EvalFn | None = None,
                metadata: Mapping[str, Any] | None = None) -> dict:
  """Trains one stage (settings: `stage_settings` in the active gin scope) and exports its
  params; returns the stage result (metrics, export path).

  Args:
    batches_for: ({task role: sampling rate}, sequence_length, batch_size, seed) →
      batches_from(start_step).
    workdir: the stage folder.
    vocab_size: the tokenizer's vocabulary size.
    init_export: params of the previous stage (None: train from scratch).
    eval_fn: (params, step) → metrics on held-out cases (sampler + grader).
    metadata: recorded with every checkpoint and the export (vocabulary, knowledge version,
      prompt style: rarejax.experiment.export_metadata).
  """
  settings = stage_settings(vocab_size)
  model_config, loop_config = settings.model_config, settings.loop_config
  init_params = None
  if init_export:
    # Here, not at module level: rarejax.export reads prompt formats and knowledge stamps (the
    # ontology's libraries), which the accelerator image that rarejax.carry trains on lacks.
    from rarejax import export  # pylint: disable=g-import-not-at-top
    init_params = export.load_params(init_export, model_config)
  result = loop.train(
      model_config=model_config, optimizer_config=settings.optimizer_config,
      loop_config=loop_config,
      batches_from=batches_for(settings.rates, settings.sequence_length, settings.batch_size,
                               loop_config.seed),
      workdir=workdir, metadata=metadata, init_params=init_params, eval_fn=eval_fn)
  if result.stopped != "completed":
    raise StagePreempted(f"stage in {workdir} stopped at step {result.step} ({result.stopped}); "
                         "its checkpoint is saved: run the same command again to resume.")
  export_dir = workdir / "export"
  checkpoint.export_params(export_dir, jax.device_get(result.state.params),
                           {"model_config": model_config.to_dict(), **(metadata or {})})
  return {"export": str(export_dir), "steps": result.step, "stopped": result.stopped,
          "train": result.last_metrics, "eval": result.eval_metrics,
          "model_config": model_config.to_dict(),
          "summary": f"loss {result.last_metrics.get('loss', float('nan')):.3f}"
                     + "".join(f", {k} {v:.3f}" for k, v in result.eval_metrics.items()
                               if k in ("top1", "top10"))}

