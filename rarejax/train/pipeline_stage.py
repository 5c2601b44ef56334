"""The training stages of the pipeline, registered here: cpt, sft and trajectory_sft on the experiment's tasks.

Each reads its task roles mixed at their rates (`train_stage.tasks`) from the token cache (or the
live seqio pipeline), optionally with soft targets and ranker hints for the diagnosis tasks
(`train_batches`), trains through rarejax.train.stage and exports; an sft stage of a model that
answers first with id pieces also writes the answers' prior. Not imported by the accelerator's
train half (rarejax.carry), which needs no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import gin

from rarejax import experiment
from rarejax import knowledge
from rarejax import pipeline
from rarejax.data import batches as batches_lib
from rarejax.data import builders
from rarejax.data import cached_batches
from rarejax.data import ranker_hints as ranker_hints_lib
from rarejax.data import soft_targets as soft_targets_lib
from rarejax.data import stage as data_stage
from rarejax.data import tasks as tasks_lib
from rarejax.data import token_cache
from rarejax.phenotypes.phenotype_index import PhenotypeIndex
from rarejax.sample import answer_prior
from rarejax.train import stage as train_stage_lib


# Task roles that exist only when an earlier stage produced their data; a training stage that
# lists one next to other roles trains on the others (with a warning) when it is absent.
OPTIONAL_ROLES = ("trajectories",)


def training_provider(names: dict[str, str], rates: Mapping[str, float]) -> str:
  """The registered Task or Mixture a training stage reads: its task roles (`names`: role → task)
  mixed at their rates; an optional role no earlier stage produced is left out, with a warning."""
  missing_optional = [r for r in rates if r in OPTIONAL_ROLES and r not in names]
  if missing_optional and len(missing_optional) < len(rates):
    logging.warning("train_stage.tasks: no %s data (no earlier stage produced any, e.g. a rers "
                    "stage that kept no trajectory); training on %s only", missing_optional,
                    [r for r in rates if r not in missing_optional])
    rates = {r: rate for r, rate in rates.items() if r not in missing_optional}
  unknown = [r for r in rates if r not in names]
  if unknown:
    raise ValueError(f"train_stage.tasks: unknown task role(s) {unknown}; known: {sorted(names)}")
  if len(rates) == 1:
    return names[next(iter(rates))]
  return tasks_lib.register_mixture({names[r]: rate for r, rate in rates.items()})


@dataclasses.dataclass(frozen=True)
class TrainInput:
  """How a training stage reads its batches (train_input)."""
  pipeline: str = "cached"
  soft_targets: soft_targets_lib.SoftTargets | None = None
  ranker_hints: ranker_hints_lib.RankerHints | None = None


@gin.configurable("train_batches")
def train_input(input_pipeline: str = "cached",
                soft_targets: soft_targets_lib.SoftTargets | None = None,
                ranker_hints: ranker_hints_lib.RankerHints | None = None) -> TrainInput:
  """The input settings of the training stage whose gin scope is active.

  input_pipeline (gin `train_batches.input_pipeline`): 'cached' tokenizes each task once into
  <data_dir>/token_cache (rarejax.data.token_cache) and streams memory-mapped arrays, so the
  step loop runs no TensorFlow; 'seqio' runs the live seqio pipeline (batches.get_batches).
  soft_targets (gin, e.g. `sft/train_batches.soft_targets = @SoftTargets()`): the diagnosis
  tasks of the mixture get soft first-answer targets from the knowledge's Resnik ranker
  (rarejax.data.soft_targets; cached input pipeline only).
  ranker_hints (gin, e.g. `sft/train_batches.ranker_hints = @RankerHints()`): the prompts of the
  diagnosis tasks end with the knowledge's Resnik ranker's best diseases for the note
  (rarejax.data.ranker_hints; cached input pipeline only); the export records them so that
  inference adds the same.
  """
  if input_pipeline not in ("cached", "seqio"):
    raise ValueError(f"train_batches.input_pipeline must be 'cached' or 'seqio', got "
                     f"{input_pipeline!r}")
  for name, value in (("soft_targets", soft_targets), ("ranker_hints", ranker_hints)):
    if value is not None and input_pipeline != "cached":
      raise ValueError(f"train_batches.{name} needs train_batches.input_pipeline = 'cached'")
  return TrainInput(input_pipeline, soft_targets, ranker_hints)


def _batches_for(names: dict[str, str], data_dir: pathlib.Path, rates: Mapping[str, float],
                 sequence_length: int, batch_size: int, seed: int,
                 soft_sources: Callable[[], SoftSources] | None = None):
  """batches_from(start_step) of a training stage: its task roles mixed at their rates, read as
  train_input() says; soft targets and ranker hints are built from `soft_sources` (the
  experiment's knowledge and diagnosis datasets) when the stage asks for them."""
  settings = train_input()
  provider = training_provider(names, rates)
  if settings.pipeline == "cached":
    provider = token_cache.build_cache(provider, data_dir)
  for name, value in (("soft_targets", settings.soft_targets),
                      ("ranker_hints", settings.ranker_hints)):
    if value is not None and soft_sources is None:
      raise ValueError(f"train_batches.{name}: this stage does not know its diagnosis datasets "
                       "(soft targets and ranker hints are for the cpt/sft/trajectory_sft "
                       "stages)")
  if settings.soft_targets is not None:
    build_soft_targets(data_dir, provider, settings.soft_targets, soft_sources())
  if settings.ranker_hints is not None:
    build_ranker_hints(data_dir, provider, settings.ranker_hints, soft_sources())

  def batches_from(start: int):
    if settings.pipeline == "cached":
      stream = cached_batches.cached_batches(data_dir, provider, sequence_length, batch_size,
                                             seed=seed, soft=settings.soft_targets,
                                             hints=settings.ranker_hints)
    else:
      stream = batches_lib.get_batches(provider, sequence_length, batch_size, seed=seed)
    return itertools.islice(stream, start, None)
  return batches_from


@dataclasses.dataclass(frozen=True)
class SoftSources:
  """What soft targets and ranker hints are built from: the experiment's knowledge, phenotype
  index and tokenizer, and the builder config of each diagnosis task (task name → config)."""
  kb: knowledge.KnowledgeBase
  index: PhenotypeIndex
  vocabulary: Any
  configs: dict[str, builders.RarejaxConfig]


def experiment_soft_sources(kb: knowledge.KnowledgeBase, data,
                            names: Mapping[str, str]) -> SoftSources:
  """The SoftSources of an experiment's prepared data and task names."""
  configs = {names["diagnosis"]: data.simulated}
  if data.real is not None:
    configs[names["real_diagnosis"]] = data.real
  return SoftSources(kb, PhenotypeIndex(kb), data.vocabulary(), configs)


def _diagnosis_tasks(data_dir: pathlib.Path, provider: str, sources: SoftSources,
                     setting: str) -> list[str]:
  """The diagnosis tasks the cached `provider` mixes; refuses a mixture without one, naming the
  `train_batches` setting that asked for them."""
  tasks = [t for t in cached_batches.read_rates(data_dir, provider) if t in sources.configs]
  if not tasks:
    raise ValueError(f"train_batches.{setting}: the stage's mixture {provider} has no "
                     "diagnosis task to build them for")
  return tasks


def build_soft_targets(data_dir: pathlib.Path, provider: str,
                        config: soft_targets_lib.SoftTargets, sources: SoftSources) -> None:
  """Soft targets for every diagnosis task the cached `provider` mixes (others get none)."""
  for task in _diagnosis_tasks(data_dir, provider, sources, "soft_targets"):
    folder = cached_batches.split_dir(data_dir, task, "train")
    split = cached_batches.open_split(folder)
    builder = builders.builder_for(sources.configs[task], data_dir)
    soft_targets_lib.build(folder, builders.examples(builder, "train"), sources.index,
                           sources.vocabulary, config,
                           (split.tokens["targets"], split.offsets["targets"]))


def build_ranker_hints(data_dir: pathlib.Path, provider: str,
                       config: ranker_hints_lib.RankerHints, sources: SoftSources) -> None:
  """Ranker hints for every diagnosis task the cached `provider` mixes (others get none)."""
  tasks = _diagnosis_tasks(data_dir, provider, sources, "ranker_hints")
  hints = ranker_hints_lib.HintRanker(sources.kb, sources.vocabulary, config)
  for task in tasks:
    folder = cached_batches.split_dir(data_dir, task, "train")
    builder = builders.builder_for(sources.configs[task], data_dir)
    ranker_hints_lib.build(folder, builders.examples(builder, "train"), hints,
                           len(cached_batches.open_split(folder)))


def _previous_trajectories(ctx: pipeline.StageContext,
                           kb: knowledge.KnowledgeBase) -> builders.TrajectoryConfig | None:
  """The trajectory dataset of the nearest earlier stage that wrote one (a 'rers' stage)."""
  for result in reversed(list(ctx.results.values())):
    if result.get("trajectories"):
      return builders.TrajectoryConfig.create(kb, path=result["trajectories"])
  return None


def hints_metadata() -> dict:
  """The export metadata of the active training stage's ranker hints (none without them)."""
  hints = train_input().ranker_hints
  return {ranker_hints_lib.METADATA_KEY: hints.metadata()} if hints is not None else {}


def _train(ctx: pipeline.StageContext) -> dict:
  kb, data, names = experiment.experiment_data(ctx.workdir)
  trajectories = _previous_trajectories(ctx, kb)
  if trajectories is not None:  # the 'trajectories' role: knowledge QA + trajectories SFT
    names = data_stage.register_tasks(data, trajectories=trajectories)
  vocabulary = data.vocabulary()
  result = train_stage_lib.train_stage(
      batches_for=functools.partial(_batches_for, names, data.data_dir,
                                    soft_sources=lambda: experiment_soft_sources(kb, data, names)),
      workdir=ctx.folder,
      vocab_size=vocabulary.vocab_size, init_export=ctx.previous_export(),
      eval_fn=experiment.make_eval_fn(data, vocabulary),
      metadata={**experiment.export_metadata(kb, data), **hints_metadata()})
  if data.spec.first_entry_ranking:  # the answers' prior, for logit adjustment at ranking time
    rates = train_stage_lib.stage_settings(vocabulary.vocab_size).rates
    provider = token_cache.build_cache(training_provider(names, rates), data.data_dir)
    answer_prior.write_for_export(result["export"], data.data_dir, provider, vocabulary)
  return result



pipeline.register_stage("cpt", _train)
pipeline.register_stage("sft", _train)
pipeline.register_stage("trajectory_sft", _train)
