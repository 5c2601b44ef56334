"""The 'rers' pipeline stage: a teacher export and the training cases → a trajectory dataset.

  <stage>/chunks/              per-chunk trajectories and statistics (a rerun resumes here)
  <stage>/trajectories.jsonl   every kept trajectory (rarejax.data.trajectory schema)
  <stage>/report.json, .md     cases covered, yield per round, rejection reasons (rers.report)
  data/rarejax_trajectories/   the TFDS trajectory dataset (built when anything was kept)

Gin (scope = the stage name), e.g. for the quickstart:

  rers/rers_stage.num_cases = 200
  rers/SynthesisConfig.samples = 4
  rers/SynthesisConfig.rounds = 2            # SynthesisConfig.mode = 'rejection' for the ablation
  rers/SynthesisConfig.max_new_tokens = 300

The teacher is the previous stage's export unless `teacher_export` names one. The result's
'trajectories' entry is what a later training stage registers as the 'trajectories' task role
(rarejax.train.pipeline_stage); this stage exports no params, so the stage after it starts from
the export the teacher came from. Prompts are in the experiment's style (DataSpec.instruction), like the
SFT data they are trained next to.
"""
from __future__ import annotations

import dataclasses
import itertools
import pathlib
import time

import gin
import numpy as np

from rarejax import atomic_io
from rarejax import cases as cases_lib
from rarejax import experiment
from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import pipeline
from rarejax.data import builders
from rarejax.data import trajectory as trajectory_lib
from rarejax.rers import filters as filters_lib
from rarejax.rers import report as report_lib
from rarejax.rers import synthesize
from rarejax.sample import Sampler

# Built through these when the stage is given none, so that rers/SynthesisConfig.* and
# rers/FilterConfig.* bindings apply (the bare classes know nothing of gin).
SynthesisConfig = gin.external_configurable(synthesize.SynthesisConfig, module="rarejax.rers")
FilterConfig = gin.external_configurable(filters_lib.FilterConfig, module="rarejax.rers")


def training_cases(data, num_cases: int | None, num_real_cases: int | None,
                   seed: int = 0) -> list[cases_lib.Case]:
  """A seeded subset of the simulated 'train' split (None: all) plus the real development
  cases of the 'train' split when the experiment has them, in dataset order."""
  out = _subset(builders.builder_for(data.simulated, data.data_dir), num_cases, seed)
  if data.real is not None:
    out += _subset(builders.builder_for(data.real, data.data_dir), num_real_cases, seed)
  return out


def _subset(builder, n: int | None, seed: int) -> list[cases_lib.Case]:
  examples = list(builders.examples(builder, "train"))
  if n is not None and n < len(examples):
    chosen = sorted(np.random.default_rng(seed).permutation(len(examples))[:n])
    examples = [examples[i] for i in chosen]
  return [builders.case_from_example(e) for e in examples]


def load_teacher(export: pathlib.Path, vocabulary, cache_length: int,
                 max_batch_size: int) -> synthesize.Teacher:
  """The export's (or a release's) params with a sampler for its model config."""
  try:
    weights = export_lib.load_weights(export)
  except FileNotFoundError as err:
    raise FileNotFoundError(f"RERS teacher: {err}; rers_stage.teacher_export names one") from None
  sampler = Sampler(weights.config, cache_length=cache_length, max_batch_size=max_batch_size,
                    pad_id=vocabulary.pad_id)
  return synthesize.Teacher(sampler=sampler, params=weights.params, vocabulary=vocabulary,
                            name=str(export))


@gin.configurable(denylist=["ctx"])
def rers_stage(ctx: pipeline.StageContext, *, num_cases: int | None = 200,
               num_real_cases: int | None = None,
               config: synthesize.SynthesisConfig | None = None,
               filter_config: filters_lib.FilterConfig | None = None,
               teacher_export: str | None = None, cache_length: int = 2048,
               max_batch_size: int = 64) -> dict:
  """Synthesizes trajectories for the training cases and builds their dataset and report.

  Args:
    ctx: the stage context.
    num_cases: simulated training cases (a seeded subset; None = all).
    num_real_cases: real development cases of the 'train' split (None = all there are).
    config: sampling, reflection and masking (default SynthesisConfig()).
    filter_config: keep rules (default FilterConfig()).
    teacher_export: params export of the teacher (default: the previous stage's export).
    cache_length: KV-cache slots per row: prompt + every response and reflection turn.
    max_batch_size: rows decoded at once.
  """
  config = config or SynthesisConfig()
  filter_config = filter_config or FilterConfig()
  export = pathlib.Path(teacher_export) if teacher_export else ctx.previous_export()
  if export is None:
    raise ValueError("the rers stage needs a teacher: run a training stage (or import_hf) "
                     "before it, or set rers_stage.teacher_export")
  kb, data, _ = experiment.experiment_data(ctx.workdir)
  teacher = load_teacher(export, data.vocabulary(), cache_length, max_batch_size)
  cases = training_cases(data, num_cases, num_real_cases, config.seed)
  synthesizer = synthesize.Synthesizer(
      teacher, kb, config, filter_config, index=knowledge.GroundingIndex.from_knowledge(kb),
      instruction=data.spec.instruction)
  start = time.perf_counter()
  chunks = synthesizer.run(cases, ctx.folder / "chunks")
  seconds = time.perf_counter() - start
  trajectories = list(itertools.chain.from_iterable(c.trajectories for c in chunks))
  path = ctx.folder / "trajectories.jsonl"
  dataset = write_dataset(kb, data.data_dir, trajectories, path)
  summary = report_lib.summarize([s for c in chunks for s in c.cases])
  header = {"teacher": str(export), "mode": config.mode, "samples (K)": config.samples,
            "rounds (R)": config.rounds, "reflections per case and round (M)":
            config.reflect_per_case, "budget per case (K + R*M)": config.budget_per_case,
            "temperature": config.temperature, "max_new_tokens": config.max_new_tokens,
            "mask_rate": config.mask_rate, "required_rank": filter_config.required_rank,
            "prompt instruction": data.spec.instruction,
            "seed": config.seed, "knowledge": kb.version.digest,
            "synthesis seconds (this run)": round(seconds, 1)}
  pipeline.write_json_atomically(ctx.folder / "report.json", {
      "header": header, "summary": summary, "config": dataclasses.asdict(config),
      "filter_config": dataclasses.asdict(filter_config), "dataset": dataset,
      "trajectories": str(path)})
  atomic_io.write_atomic(ctx.folder / "report.md", report_lib.markdown(summary, header))
  return {"trajectories": str(path) if trajectories else "", "dataset": dataset,
          "n_trajectories": len(trajectories), "n_cases": summary["n_cases"],
          "coverage": summary["coverage"], "report": str(ctx.folder / "report.json"),
          "summary": f"{config.mode}: {summary['n_covered']}/{summary['n_cases']} cases "
                     f"covered, {len(trajectories)} trajectories"}


def write_dataset(kb: knowledge.KnowledgeBase, data_dir: pathlib.Path,
                  trajectories: list[trajectory_lib.Trajectory], path: pathlib.Path) -> str:
  """Writes the trajectory file and builds its TFDS dataset; returns the dataset's config name
  ('' when nothing was kept: an empty dataset is not built)."""
  trajectory_lib.write_trajectories(trajectories, path)
  if not trajectories:
    return ""
  config = builders.TrajectoryConfig.create(kb, path=str(path))
  builders.prepare(config, data_dir, kb)
  return config.name


pipeline.register_stage("rers", rers_stage)
