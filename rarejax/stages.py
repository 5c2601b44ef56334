"""Pipeline stages, each gin-scoped: data → cpt → sft → rers → trajectory_sft → rl → eval.

Registers with rarejax.pipeline:
  data  builds the knowledge base (with the configured publication exclusions), the simulated
        and real case datasets, the knowledge corpus and the tokenizer (rarejax.data.stage)
  cpt   knowledge internalization: LM loss on the knowledge corpus   (scope cpt/train_stage)
  sft   diagnosis SFT on reference responses: response-masked loss  (scope sft/train_stage)
  rers  reflection-enhanced reasoning sampling → trajectories        (rarejax.rers.stage)
  trajectory_sft  SFT that may train on the trajectories of an earlier rers stage
  rl    dual-level curriculum RL with DAPO                           (rarejax.rl.stage)
  eval  every earlier stage's export and the classical baselines on the held-out simulated notes
Training stages evaluate periodically through the shared sampler and grader on a held-out
slice of the simulated validation cases. The experiment-level helpers every stage shares (the
knowledge base, the prepared data, the held-out cases, the periodic evaluation, the export
metadata) live in rarejax.experiment, which imports no stage module.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gin

from rarejax import cases
from rarejax import experiment
from rarejax import export as export_lib
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
from rarejax.evaluate import benchmarks as benchmarks_lib
from rarejax.evaluate import generation, model_method
from rarejax.evaluate import methods as methods_lib
from rarejax.evaluate import report as report_lib
from rarejax.evaluate import run as run_lib
from rarejax.model import hf_import
from rarejax.phenotypes import concepts
from rarejax.phenotypes.phenotype_index import PhenotypeIndex
from rarejax.rers import stage as _rers_stage  # registers 'rers'  # pylint: disable=unused-import
from rarejax.rl import stage as _rl_stage  # registers 'rl'  # pylint: disable=unused-import
from rarejax.sample import answer_prior
from rarejax.train import checkpoint
from rarejax.train import stage as train_stage_lib

# Task roles that exist only when an earlier stage produced their data; a training stage that
# lists one next to other roles trains on the others (with a warning) when it is absent.
OPTIONAL_ROLES = ("trajectories",)


def _data_stage(ctx: pipeline.StageContext) -> dict:
  kb, data, names = experiment.experiment_data(ctx.workdir)
  vocabulary = data.vocabulary()
  return {"knowledge": kb.version.as_dict(), "tasks": names,
          "vocabulary": str(data.vocabulary_path), "vocab_size": vocabulary.vocab_size,
          "summary": f"{len(names)} tasks, vocab {vocabulary.vocab_size}"}


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


def build_soft_targets(data_dir: pathlib.Path, provider: str,
                        config: soft_targets_lib.SoftTargets, sources: SoftSources) -> None:
  """Soft targets for every diagnosis task the cached `provider` mixes (others get none)."""
  tasks = [t for t in cached_batches.read_rates(data_dir, provider) if t in sources.configs]
  if not tasks:
    raise ValueError(f"train_batches.soft_targets: the stage's mixture {provider} has no "
                     "diagnosis task to give soft targets to")
  for task in tasks:
    folder = cached_batches.split_dir(data_dir, task, "train")
    split = cached_batches.open_split(folder)
    builder = builders.builder_for(sources.configs[task], data_dir)
    soft_targets_lib.build(folder, builders.examples(builder, "train"), sources.index,
                           sources.vocabulary, config,
                           (split.tokens["targets"], split.offsets["targets"]))


def build_ranker_hints(data_dir: pathlib.Path, provider: str,
                       config: ranker_hints_lib.RankerHints, sources: SoftSources) -> None:
  """Ranker hints for every diagnosis task the cached `provider` mixes (others get none)."""
  tasks = [t for t in cached_batches.read_rates(data_dir, provider) if t in sources.configs]
  if not tasks:
    raise ValueError(f"train_batches.ranker_hints: the stage's mixture {provider} has no "
                     "diagnosis task to give hints to")
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


@gin.configurable(denylist=["ctx"])
def eval_stage(ctx: pipeline.StageContext, num_cases: int = 100,
               rankers: Sequence[str] = methods_lib.DEFAULT_CLASSICAL,
               modes: Sequence[str] = methods_lib.MODES, max_new_tokens: int = 512,
               batch_size: int = 100, n_bootstrap: int = 1000,
               model_stages: Sequence[str] = ()) -> dict:
  """Held-out simulated notes (the 'test' split, which nothing before this stage reads): the
  export of every earlier stage (greedy) next to classical rankers over the experiment's
  diseases — reading the structured phenotypes ('oracle') and the HPO concepts recognized in the
  note ('text') — plus, when the experiment has a subset of the diseases, oracle Resnik over every
  disease ('resnik.oracle.all_omim'), all through the one report path. The case-based rankers
  search the simulated training cases (what the model learned from); the fusions' weights are
  chosen on the validation split. `rankers` default to methods.DEFAULT_CLASSICAL
  (methods.CLASSICAL adds the older kNN and fusion).

  `model_stages` limits the models to those stages' exports (default: every export).
  Writes the evaluation report to <stage>/report/ (metrics.json with bootstrap intervals,
  report.md with plots, cases.tsv, PhEval files, responses) and a summary to metrics.json.
  """
  kb, data, _ = experiment.experiment_data(ctx.workdir)
  rows = experiment.held_out_cases(data, num_cases, "test")
  cases = tuple(builders.case_from_example(r, "test") for r in rows)
  diseases = data.simulated.diseases or None
  bench = benchmarks_lib.Benchmark(
      "simulated_heldout", cases, from_publications=False,
      source=f"{len(cases)} held-out simulated notes ({data.simulated.name})",
      config={"n_diseases": len(diseases) if diseases else "all OMIM"})
  index = experiment.grounding_index(kb)
  generation_config = generation.GenerationConfig(max_new_tokens=max_new_tokens)
  methods: list[methods_lib.Method] = [
      model_method.ModelMethod(export_lib.load_model(result["export"]), index,
                               generation_config, batch_size=batch_size,
                               instruction=data.spec.instruction, name=f"model.{stage}",
                               hint_knowledge=kb)
      for stage, result in ctx.results.items()
      if result.get("export") and (not model_stages or stage in model_stages)]
  recognizer = concepts.ConceptRecognizer.from_knowledge(kb)
  train_cases, tuning = (), None
  if set(rankers) & set(methods_lib.NEEDS_TRAINING_CASES):
    train_cases = _simulated_cases(data, "train")
    tuning = methods_lib.FusionTuning(kb, train_cases, _simulated_cases(data, "validation"))
  methods += methods_lib.classical_methods(kb, rankers, modes, train_cases, tuning,
                                           recognizer=recognizer, disease_ids=diseases)
  if diseases:  # the model's world vs every disease (without a subset, resnik.oracle is that)
    methods += [dataclasses.replace(method, suffix=".all_omim")
                for method in methods_lib.classical_methods(kb, ["resnik"], ["oracle"])]
  equivalence = knowledge.IdEquivalence({d.id: d.xrefs for d in kb.diseases.values()})
  results = run_lib.evaluate([bench], methods, equivalence, recognizer)
  config = {"num_cases": len(cases), "rankers_over": bench.config["n_diseases"],
            "max_new_tokens": max_new_tokens, "n_bootstrap": n_bootstrap}
  paths = report_lib.write_report(
      ctx.folder / "report", results, report_lib.provenance(
          {"evaluation": kb.version.as_dict()}, config), n_bootstrap=n_bootstrap)
  reported = json.loads(paths["metrics"].read_text())["benchmarks"][bench.name]["methods"]
  result = {"n_cases": len(cases), "report": str(paths["report"]),
            **{name: {k: m["metrics"]["all"][k]["value"] for k in ("top1", "top3", "top10", "mrr")}
               for name, m in reported.items()}}
  result["summary"] = ", ".join(f"{k} top1 {v['top1']:.3f} top10 {v['top10']:.3f}"
                                for k, v in result.items() if isinstance(v, dict))
  pipeline.write_json_atomically(ctx.folder / "metrics.json", result)
  return result


def _simulated_cases(data, split: str) -> tuple[cases.Case, ...]:
  return tuple(builders.case_from_example(r, split)
               for r in experiment.simulated_rows(data, split))


@gin.configurable(denylist=["ctx"])
def import_hf_stage(ctx: pipeline.StageContext, checkpoint_dir: str = gin.REQUIRED) -> dict:
  """Imports a Hugging Face checkpoint (config.json + safetensors) as the export later stages
  start from (e.g. DeepSeek-R1-Distill-Qwen); pair it with DataSpec.tokenizer = its tokenizer."""
  model_config, params = hf_import.load_hf_checkpoint(checkpoint_dir)
  export = ctx.folder / pipeline.EXPORT_DIR
  checkpoint.export_params(export, params, {"model_config": model_config.to_dict(),
                                            "source": str(checkpoint_dir)})
  return {"export": str(export), "model_config": model_config.to_dict(),
          "summary": f"imported {checkpoint_dir}"}


pipeline.register_stage("import_hf", import_hf_stage)
pipeline.register_stage("data", _data_stage)
pipeline.register_stage("cpt", _train)
pipeline.register_stage("sft", _train)
pipeline.register_stage("trajectory_sft", _train)
pipeline.register_stage("eval", eval_stage)
