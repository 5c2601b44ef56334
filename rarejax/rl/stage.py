"""The RL stage ('rl'): DAPO under the dual-level curriculum, from the previous export to a new one.

One step: the curriculum draws prompts_per_step prompts; the rollout samples G responses each
(shared sampler) and scores them (shared grader); dynamic sampling drops groups whose accuracy
outcomes are all equal and draws again (at most max_draws rounds); the kept groups'
group-relative advantages (accuracy sets their signs, shaping their sizes: rl.dapo) feed
epochs x minibatches DAPO updates on that one rollout (the shared train step; the updates after
the first are off-policy, so the clip acts). When a task level starts (the first before step 0)
the curriculum measures every case's rank-aware pass rate at it (G samples), re-measures it every
refresh_every steps, and moves to the next level early when the measured mean reaches
advance_pass_rate (rl.curriculum).

The step runs in the training stages' loop (train.loop.StepLoop, this stage's _Run its Program):
progress, metrics, evaluation, checkpoints, SIGTERM and the non-finite-loss guard are theirs.
Checkpoints every checkpoint_every steps hold the TrainState and, in their metadata, the
curriculum's pass rates; rollouts and draws are seeded by (seed, step), so a resumed run repeats
an uninterrupted one. SIGTERM saves and raises StagePreempted (run again to resume); a
non-finite loss stops before saving. The end writes <folder>/export.

Metrics (<folder>/metrics.jsonl and TensorBoard), every log_every steps:
  rl/reward, rl/reward_<term>          means over every sample drawn in the step (rewards.TERMS;
                                       rl/reward is accuracy + shaping)
  rl/pass_rate, rl/pass_rate_tier<k>   share of passing samples, overall and per difficulty tier
  rl/dropped_group_fraction            drawn groups dropped for all-equal accuracy outcomes
  rl/kept_groups, rl/draws             groups trained on, rollout rounds used
  rl/response_length, rl/truncated_fraction
  rl/rollout_tokens_per_s              sampled tokens / sampler wall time
  rl/{rollout,grade,update}_seconds, rl/seconds_per_step
  train/{loss,pg_loss,entropy,ratio_mean,kl,grad_norm,learning_rate,updated}
  train/clip_fraction_{low,high}       tokens clipped at 1 - eps_low (A < 0) / 1 + eps_high (A > 0)
  curriculum/task, curriculum/tier     the phase (task index in task_order; -1 when shuffled)
and at each measurement curriculum/<task>/pass_rate and curriculum/<task>/tier<k>_cases, and
curriculum/<task>/ended_at (the step) when a level ends early.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import jax
import numpy as np
import seqio

from rarejax import experiment
from rarejax import export as export_lib
from rarejax import knowledge
from rarejax import pipeline
from rarejax.data import batches as batches_lib
from rarejax.evaluate import generation
from rarejax.model.config import ModelConfig
from rarejax.parallel import mesh as mesh_lib
from rarejax.rl import curriculum as curriculum_lib
from rarejax.rl import dapo
from rarejax.rl import rewards as rewards_lib
from rarejax.rl import rollout as rollout_lib
from rarejax.sample import Sampler
from rarejax.train import checkpoint as checkpoint_lib
from rarejax.train import loop as loop_lib
from rarejax.train import optimizer, writers
from rarejax.train import stage as train_stage_lib

PROMPT_ROLES = {"differential": "prompts", "final": "prompts_final"}  # data.stage task roles


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig:
  """How long and how observably the RL stage runs.

  Attributes:
    num_steps: RL steps (one rollout batch each); a resumed run continues up to this.
    prompts_per_step: groups per batch (each of RolloutConfig.group_size samples).
    max_draws: rollout rounds per step at most (dynamic sampling's refill bound).
    minibatches: optimizer updates per pass over a step's batch (equal minibatches of its rows,
      kept samples first); prompts_per_step * group_size must divide by it.
    epochs: passes over the same batch (old log-probs frozen at rollout). With minibatches *
      epochs > 1 the updates after the first are off-policy and clip-higher acts; 1 x 1 would
      be on-policy REINFORCE with a ratio of exactly 1.
    num_microbatches: gradient accumulation within an update.
    pool_size: training cases the curriculum draws from (seeded subset; 0 = all).
    length_multiple: training rows are padded to a multiple of this (one compile).
    log_every, eval_every, checkpoint_every: steps between metric rows, evaluations (0: only
      at the end) and checkpoints (plus one at the end and on SIGTERM).
    keep_checkpoints, async_checkpoints: checkpoint retention and background writing.
    seed: rollout, draw and shuffle seed.
    mesh_shape: (data, fsdp, tensor); one entry may be -1.
  """
  num_steps: int = 20
  prompts_per_step: int = 8
  max_draws: int = 3
  minibatches: int = 4
  epochs: int = 1
  num_microbatches: int = 1
  pool_size: int = 64
  length_multiple: int = 64
  log_every: int = 1
  eval_every: int = 0
  checkpoint_every: int = 10
  keep_checkpoints: int = 2
  async_checkpoints: bool = True
  seed: int = 0
  mesh_shape: tuple[int, int, int] = (-1, 1, 1)


@dataclasses.dataclass(frozen=True)
class Case:
  """A training case: its id, gold disease ids and prompt token ids per task level."""
  case_id: str
  gold_ids: tuple[str, ...]
  prompt_ids: Mapping[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """Every configuration of a run (the defaults are the classes' own, not gin's)."""
  rl: RLConfig = RLConfig()
  rollout: rollout_lib.RolloutConfig = rollout_lib.RolloutConfig()
  dapo: dapo.DapoConfig = dapo.DapoConfig()
  curriculum: curriculum_lib.CurriculumConfig = curriculum_lib.CurriculumConfig()
  optimizer: optimizer.OptimizerConfig = optimizer.OptimizerConfig()


def _key(seed: int, *path: int) -> jax.Array:
  """A PRNG key for (seed, path...): the same path always gives the same key."""
  key = jax.random.key(seed)
  for value in path:
    key = jax.random.fold_in(key, value)
  return key


def run_rl(*, workdir: str | pathlib.Path, model_config: ModelConfig, init_params: Any,
           cases: Sequence[Case], tokenizer: generation.Tokenizer,
           reward_fn: rollout_lib.RewardFn, pad_id: int, settings: Settings = Settings(),
           eval_fn: loop_lib.EvalFn | None = None, metadata: Mapping[str, Any] | None = None,
           progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) RL in `workdir` and exports the policy; returns the stage result.

  Args:
    workdir: the stage folder (checkpoints/, metrics.jsonl, export/).
    model_config, init_params: the policy to start from (the previous stage's export).
    cases: the cases the curriculum draws from (prompts of every task level in
      settings.curriculum.task_order).
    tokenizer: decodes responses; names EOS / `</answer>` as stop ids.
    reward_fn: rewards of the samples (rewards.GraderRewards).
    pad_id: padding token id.
    settings: configurations.
    eval_fn: (params, step) -> held-out metrics, run every eval_every steps and at the end.
    metadata: recorded with checkpoints and the export (vocabulary, knowledge version, prompt
      style: rarejax.experiment.export_metadata).
    progress: show a progress bar with ETA.

  Raises:
    train.stage.StagePreempted: SIGTERM arrived; the checkpoint of the current step is saved.
    train.loop.NonFiniteLossError: the loss turned NaN/Inf; nothing was saved for that step.
  """
  workdir = pathlib.Path(workdir)
  config = settings.rl
  missing = [t for t in settings.curriculum.task_order for c in cases if t not in c.prompt_ids]
  if not cases or missing:
    raise ValueError(f"RL needs cases with prompts for the task levels "
                     f"{settings.curriculum.task_order}; got {len(cases)} cases, missing "
                     f"{sorted(set(missing))}.")
  metadata = {"model_config": model_config.to_dict(), **(metadata or {})}
  checkpointer = checkpoint_lib.Checkpointer(workdir / "checkpoints",
                                             max_to_keep=config.keep_checkpoints,
                                             async_save=config.async_checkpoints)
  called = time.perf_counter()
  with checkpointer, writers.MetricWriter(workdir) as writer, \
      loop_lib.preemption_notice() as preempted:
    run = _Run(model_config, init_params, cases, tokenizer, reward_fn, pad_id, settings,
               checkpointer, writer, metadata)
    driver = loop_lib.StepLoop(
        loop_lib.Schedule(config.num_steps, config.log_every, config.eval_every,
                          config.checkpoint_every), checkpointer, writer, eval_fn,
        progress=progress, called=called)
    stopped = driver.run(run, preempted)
    params = jax.device_get(run.learner.params)
  if stopped != "completed":
    raise train_stage_lib.StagePreempted(
        f"RL in {workdir} stopped at step {run.step} ({stopped}); its checkpoint is saved: run "
        "the same command again to resume.")
  export = workdir / pipeline.EXPORT_DIR
  checkpoint_lib.export_params(export, params, metadata)
  return {"export": str(export), "steps": run.step, "stopped": stopped,
          "train": driver.last_metrics, "eval": driver.eval_metrics,
          "curriculum": run.curriculum.state_dict(), "model_config": model_config.to_dict(),
          "summary": f"reward {driver.last_metrics.get('rl/reward', math.nan):.3f}"
                     + "".join(f", {k} {v:.3f}" for k, v in driver.eval_metrics.items()
                               if k in ("top1", "top10"))}


class _Run:
  """One RL run's state and step: the Program the shared step loop drives (train.loop.StepLoop:
  progress, metrics, evaluation, checkpoints, SIGTERM, the non-finite-loss guard)."""
  prefix = ""  # the metric names carry their own ('rl/', 'train/', 'curriculum/')
  read_late = False  # host values already; a NaN update is caught before the next rollout

  def __init__(self, model_config, init_params, cases, tokenizer, reward_fn, pad_id,
               settings: Settings, checkpointer, writer, metadata):
    config = self.config = settings.rl
    self.settings, self.cases, self.pad_id = settings, list(cases), pad_id
    self.checkpointer, self.writer, self.metadata = checkpointer, writer, metadata
    mesh = mesh_lib.make_mesh(*config.mesh_shape)
    self.learner = rollout_lib.Learner(
        model_config=model_config,  # the schedule is in RL steps: counted here in updates
        optimizer_config=settings.optimizer.per_update(config.minibatches * config.epochs),
        dapo_config=settings.dapo, init_params=init_params, mesh=mesh,
        num_microbatches=config.num_microbatches, minibatches=config.minibatches,
        epochs=config.epochs, seed=config.seed)
    group, new = settings.rollout.group_size, settings.rollout.max_new_tokens
    if config.prompts_per_step * group % config.minibatches:
      raise ValueError(f"a step's {config.prompts_per_step} x {group} rows do not split into "
                       f"RLConfig.minibatches={config.minibatches} equal minibatches.")
    longest = max(len(ids) for case in self.cases for ids in case.prompt_ids.values())
    sampler = Sampler(model_config, cache_length=longest + new + 1,
                      max_batch_size=config.prompts_per_step * group, pad_id=pad_id, mesh=mesh)
    self.rollout = rollout_lib.Rollout(sampler, tokenizer, reward_fn, settings.rollout)
    self.length = -(-(longest + new - 1) // config.length_multiple) * config.length_multiple
    self.curriculum = curriculum_lib.Curriculum(settings.curriculum, len(self.cases),
                                                config.num_steps)
    if checkpointer.all_steps():
      restored = self.learner.restore(checkpointer)
      self.curriculum.load_state_dict(restored["curriculum"])
      writer.rewind(self.step)
      logging.info("RL resumed at step %d from %s", self.step, checkpointer.directory)

  @property
  def step(self) -> int:
    """RL steps completed."""
    return self.learner.step // self.learner.updates_per_step

  def run_step(self) -> dict[str, float]:
    """Measures the curriculum when due, then one RL step: its metrics."""
    step = self.step
    self.measure_when_due(step)
    return self.train_step(step)

  def prepare_next(self) -> None:
    """Nothing: a step's rollout needs the update before it."""

  def params(self) -> Any:
    return self.learner.params

  def loss(self, metrics: Mapping[str, float]) -> float | None:
    """The update's loss; none when dynamic sampling kept no group (nothing was updated)."""
    return metrics["train/loss"] if metrics.get("train/updated") else None

  def postfix(self, metrics: Mapping[str, float]) -> dict[str, str]:
    return {"reward": f"{metrics['rl/reward']:.3f}", "kept": f"{metrics['rl/kept_groups']:.0f}",
            "s_step": f"{metrics['rl/seconds_per_step']:.1f}"}

  def prompts(self, draws: Sequence[curriculum_lib.Draw]) -> list[rollout_lib.Prompt]:
    return [rollout_lib.Prompt(ids=self.cases[d.case].prompt_ids[d.task],
                               gold_ids=self.cases[d.case].gold_ids, task=d.task) for d in draws]

  def measure_when_due(self, step: int) -> None:
    """Measures the current task level when the curriculum asks, ending levels the policy passes
    (each next level is measured at once)."""
    while self.curriculum.measure_due(step):
      task = self.curriculum.task_at(step)
      self.measure(task, step)
      if self.curriculum.advance_if_passed(task, step):
        self.writer.write(step, {f"curriculum/{task}/ended_at": float(step)})
        logging.info("RL step %d: task level %r passed (mean pass rate %.3f >= %s); moving on.",
                     step, task, self.curriculum.pass_rates[task].mean(),
                     self.settings.curriculum.advance_pass_rate)

  def measure(self, task: str, step: int) -> None:
    """Pass rate of every case at `task` over G samples of the current policy -> tiers."""
    n = self.config.prompts_per_step
    rates = []
    for chunk_index, start in enumerate(range(0, len(self.cases), n)):
      cases = list(range(start, min(start + n, len(self.cases))))
      padded = cases + [cases[0]] * (n - len(cases))  # one compiled batch shape
      draws = [curriculum_lib.Draw(task=task, case=c, tier=-1, replay=False) for c in padded]
      samples = self.rollout(self.learner.params, self.prompts(draws),
                             _key(self.config.seed, step, 1, chunk_index))
      rates.append(samples.pass_rates()[:len(cases)])
    self.curriculum.set_pass_rates(task, np.concatenate(rates), step)
    tiers = self.curriculum.tiers(task)
    summary = {f"curriculum/{task}/tier{k}_cases": int((tiers == k).sum())
               for k in range(self.settings.curriculum.num_tiers)}
    summary[f"curriculum/{task}/pass_rate"] = float(self.curriculum.pass_rates[task].mean())
    self.writer.write(step, summary)
    logging.info("RL step %d: %s pass rates measured: %s", step, task, summary)

  def train_step(self, step: int) -> dict[str, float]:
    """Draws, rolls out, refills, updates; returns the step's metrics."""
    start = time.perf_counter()
    group = self.settings.rollout.group_size
    n = self.config.prompts_per_step

    def draw(round_index: int):
      draws = self.curriculum.draw(step, n, np.random.default_rng([self.config.seed, step,
                                                                   round_index]))
      samples = self.rollout(self.learner.params, self.prompts(draws),
                             _key(self.config.seed, step, 0, round_index))
      return draws, samples

    filled = dapo.dynamic_sampling(draw, lambda d: d[1].rewards.accuracy, group, n,
                                   self.config.max_draws)
    rolled = time.perf_counter()
    batch = rollout_lib.learner_batch(self._kept_rows(filled), rows=n * group,
                                      length=self.length, pad_id=self.pad_id,
                                      temperature=self.settings.rollout.temperature)
    train = self.learner.update(batch, np.random.default_rng([self.config.seed, step, 2]))
    end = time.perf_counter()
    metrics = self._rollout_metrics(step, filled)
    metrics.update({f"train/{k}": v for k, v in train.items()})
    metrics.update({"rl/rollout_seconds": rolled - start, "rl/update_seconds": end - rolled,
                    "rl/seconds_per_step": end - start})
    return metrics

  def _kept_rows(self, filled: dapo.Filled) -> list[tuple[rollout_lib.Samples, np.ndarray,
                                                         np.ndarray]]:
    """(samples, rows of the kept groups, their advantages) of each draw that kept a group."""
    group = self.settings.rollout.group_size
    pieces = []
    for index, (_, samples) in enumerate(filled.draws):
      groups = np.array([g for d, g in filled.kept if d == index], np.int64)
      if groups.size:
        rows = (groups[:, None] * group + np.arange(group)).reshape(-1)
        advantages = dapo.shaped_advantages(samples.rewards.accuracy, samples.rewards.shaping,
                                            group, self.settings.dapo.advantage_eps)
        pieces.append((samples, rows, advantages[rows]))
    return pieces

  def _rollout_metrics(self, step: int, filled: dapo.Filled) -> dict[str, float]:
    """Reward terms, pass rates (overall and per tier), lengths, speed and curriculum phase."""
    group = self.settings.rollout.group_size
    all_samples = [s for _, s in filled.draws]
    rewards = rewards_lib.Rewards.concatenate([s.rewards for s in all_samples])
    tiers = np.repeat([d.tier for draws, _ in filled.draws for d in draws], group)
    lengths = np.concatenate([s.lengths for s in all_samples])
    sample_seconds = sum(s.sample_seconds for s in all_samples)
    metrics = {"rl/reward": float(rewards.total.mean()),
               **{f"rl/reward_{k}": float(v.mean()) for k, v in rewards.terms.items()},
               "rl/pass_rate": float(rewards.passed.mean()),
               **{f"rl/pass_rate_tier{k}": float(rewards.passed[tiers == k].mean())
                  for k in sorted(set(tiers.tolist())) if k >= 0},
               "rl/dropped_group_fraction": filled.dropped_fraction,
               "rl/kept_groups": float(len(filled.kept)), "rl/draws": float(len(filled.draws)),
               "rl/response_length": float(lengths.mean()),
               "rl/truncated_fraction": float(np.concatenate(
                   [s.truncated for s in all_samples]).mean()),
               "rl/rollout_tokens_per_s": float(lengths.sum() / max(sample_seconds, 1e-9)),
               "rl/grade_seconds": sum(s.grade_seconds for s in all_samples)}
    task, tier = self.curriculum.phase(step) if self.curriculum.measures_tiers else (None, -1)
    order = self.settings.curriculum.task_order
    metrics["curriculum/task"] = float(order.index(task)) if task else -1.0
    metrics["curriculum/tier"] = float(tier)
    return metrics

  def save(self) -> None:
    if self.learner.step not in self.checkpointer.all_steps():
      self.checkpointer.save(self.learner.state,
                             {**self.metadata, "curriculum": self.curriculum.state_dict()},
                             force=True)


def load_cases(names: Mapping[str, str], vocabulary: generation.Tokenizer,
               tasks: Sequence[str], pool_size: int, seed: int) -> list[Case]:
  """A seeded subset of `pool_size` simulated 'train' cases (0: all), with prompts per level."""
  everything = seqio.ShardInfo(index=0, num_shards=1)  # every host draws from the same pool
  examples = {task: list(batches_lib.get_examples(names[PROMPT_ROLES[task]], "train",
                                                  shard_info=everything))
              for task in tasks}
  first = examples[tasks[0]]
  for task in tasks[1:]:
    if [e["case_id"] for e in examples[task]] != [e["case_id"] for e in first]:
      raise ValueError(f"the {PROMPT_ROLES[task]!r} and {PROMPT_ROLES[tasks[0]]!r} tasks list "
                       "different cases; rebuild the data stage.")
  chosen = range(len(first))
  if 0 < pool_size < len(first):
    chosen = sorted(np.random.default_rng(seed).choice(len(first), pool_size, replace=False))
  return [Case(case_id=first[i]["case_id"], gold_ids=tuple(first[i]["gold_ids"]),
               prompt_ids={t: tuple(generation.prompt_ids(vocabulary,
                                                          examples[t][i]["inputs_pretokenized"]))
                           for t in tasks})
          for i in chosen]


@gin.configurable(denylist=["ctx"])
def rl_stage(ctx: pipeline.StageContext, *, config: RLConfig | None = None,
             rollout_config: rollout_lib.RolloutConfig | None = None,
             dapo_config: dapo.DapoConfig | None = None,
             curriculum_config: curriculum_lib.CurriculumConfig | None = None,
             reward_config: rewards_lib.RewardConfig | None = None,
             optimizer_config: optimizer.OptimizerConfig | None = None) -> dict:
  """The pipeline stage: RL from the previous stage's export on the experiment's train cases.

  Every argument is gin-provided (scope rl/); None builds the class in the rl/ gin scope.
  Held-out evaluation uses experiment.make_eval_fn (`rl/make_eval_fn.num_cases = 0` disables it).
  """
  settings = Settings(rl=config or RLConfig(),  # built here: gin applies its rl/ bindings
                      rollout=rollout_config or rollout_lib.RolloutConfig(),
                      dapo=dapo_config or dapo.DapoConfig(),
                      curriculum=curriculum_config or curriculum_lib.CurriculumConfig(),
                      optimizer=optimizer_config or optimizer.OptimizerConfig())
  export = ctx.previous_export()
  if export is None:
    raise ValueError("the rl stage starts from an earlier stage's export (cpt, sft or "
                     "import_hf); none of the stages before it wrote one.")
  kb, data, names = experiment.experiment_data(ctx.workdir)
  vocabulary = data.vocabulary()
  weights = export_lib.load_weights(export)
  cases = load_cases(names, vocabulary, settings.curriculum.task_order, settings.rl.pool_size,
                     settings.rl.seed)
  reward_fn = rewards_lib.GraderRewards(knowledge.GroundingIndex.from_knowledge(kb),
                                        reward_config or rewards_lib.RewardConfig(),
                                        settings.rollout.max_new_tokens)
  return run_rl(workdir=ctx.folder, model_config=weights.config, init_params=weights.params,
                cases=cases, tokenizer=vocabulary, reward_fn=reward_fn,
                pad_id=vocabulary.pad_id, settings=settings,
                eval_fn=experiment.make_eval_fn(data, vocabulary, model_config=weights.config),
                metadata=experiment.export_metadata(kb, data))


pipeline.register_stage("rl", rl_stage)
