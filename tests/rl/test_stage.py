"""Tests for rarejax.rl.stage: short RL stage runs (export, metrics, group filtering, the move to
the final level), the shipped configs, resumption after SIGTERM, and the stage in the tiny
pipeline."""
import functools
import json
import os
import signal

import jax
import numpy as np
import pytest

import gin

from rarejax import export as export_lib
from rarejax import main as main_lib
from rarejax.model import transformer
from rarejax.model.config import preset
from rarejax.rl import curriculum as curriculum_lib
from rarejax.rl import rewards as rewards_lib
from rarejax.rl import rollout as rollout_lib
from rarejax.rl import stage as stage_lib
from rarejax.train import loop as loop_lib
from rarejax.train import optimizer, writers
from rarejax.train import stage as train_stage_lib
from tests.paths import GIN_CONFIGS
from tests.rl.helpers import INDEX, ByteTokenizer, constant_rewards

def _cases():
  tok = ByteTokenizer()
  notes = ["tall, long fingers", "aortic aneurysm", "lens dislocation", "twisted arteries"]
  return [stage_lib.Case(case_id=f"c{i}", gold_ids=("OMIM:154700",) if i % 2 else
                         ("OMIM:609192",),
                         prompt_ids={"differential": tuple([2] + tok.encode(f"D: {note}\n")),
                                     "final": tuple([2] + tok.encode(f"F: {note}\n"))})
          for i, note in enumerate(notes)]


@functools.lru_cache(maxsize=1)
def _tiny_llama():
  config = preset("tiny_llama")
  return config, jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))


def _run(workdir, num_steps, reward_fn=None):
  config, params = _tiny_llama()
  settings = stage_lib.Settings(
      rl=stage_lib.RLConfig(num_steps=num_steps, prompts_per_step=2, max_draws=2,
                            minibatches=2, checkpoint_every=10, async_checkpoints=False,
                            length_multiple=16),
      rollout=rollout_lib.RolloutConfig(group_size=2, max_new_tokens=10),
      curriculum=curriculum_lib.CurriculumConfig(replay_fraction=0.5),
      optimizer=optimizer.OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10))
  reward_fn = reward_fn or rewards_lib.GraderRewards(
      INDEX, rewards_lib.RewardConfig(overlong_buffer=4, repetition_ngram=1), 10)
  return stage_lib.run_rl(workdir=workdir, model_config=config, init_params=params,
                          cases=_cases(), tokenizer=ByteTokenizer(), reward_fn=reward_fn,
                          pad_id=0, settings=settings, eval_fn=lambda p, s: {"top1": 0.5},
                          metadata={"vocabulary": "bytes"}, progress=False)


def test_rl_stage_runs_two_steps_and_writes_an_export_and_metrics(tmp_path):
  result = _run(tmp_path, 2)
  assert result["steps"] == 2 and result["stopped"] == "completed"
  assert (tmp_path / "checkpoints" / "4").is_dir()              # 2 steps x 2 updates each
  assert result["eval"] == {"top1": 0.5} and set(result["curriculum"]["pass_rates"]) == {
      "differential", "final"}
  config = preset("tiny_llama")
  params = export_lib.load_params(tmp_path / "export", config)
  assert transformer.count_params(params) == transformer.count_params(
      transformer.abstract_params(config))
  rows = writers.read_metrics(tmp_path)
  steps = [r for r in rows if "rl/reward" in r]
  assert [r["step"] for r in steps] == [1, 2]
  expected = {"rl/reward_accuracy", "rl/reward_format", "rl/reward_repetition",
              "rl/reward_overlong", "rl/pass_rate", "rl/dropped_group_fraction",
              "rl/response_length", "rl/rollout_tokens_per_s", "rl/seconds_per_step",
              "curriculum/task", "curriculum/tier", "train/updated"}
  assert all(expected <= set(r) for r in steps)
  assert any("curriculum/differential/tier2_cases" in r for r in rows)
  assert any(r.get("eval/top1") == 0.5 for r in rows)


def _shaped_rewards(texts, responses, golds, tasks):
  """Per 2 prompts x G = 2: group 0 all right, only its shaping differs (must be dropped); group 1
  a right answer (rank 2) with heavy penalties and a wrong, clean one (the right one must win)."""
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][:] = [1.0, 1.0, 0.5, 0.0]
  terms["repetition"][:] = [0.0, -0.5, -1.0, 0.0]
  terms["overlong"][:] = [0.0, 0.0, -1.0, 0.0]
  return rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())


def test_rl_stage_keeps_groups_by_accuracy_and_shaping_keeps_its_sign(tmp_path, monkeypatch):
  batches = []
  build = rollout_lib.learner_batch
  monkeypatch.setattr(rollout_lib, "learner_batch",
                      lambda *a, **k: batches.append(build(*a, **k)) or batches[-1])
  _run(tmp_path, 1, reward_fn=_shaped_rewards)
  step = next(r for r in writers.read_metrics(tmp_path) if "rl/reward" in r)
  advantages = batches[0]["advantages"][batches[0]["loss_weights"].any(axis=1)]
  # two draws, each keeps group 1 only: (right, wrong) rows, the right one ahead despite shaping
  assert (step["rl/dropped_group_fraction"], step["rl/kept_groups"],
          np.sign(advantages).tolist()) == (0.5, 2, [1, -1, 1, -1])
  assert {"train/clip_fraction_low", "train/clip_fraction_high"} <= set(step)
  assert step["train/ratio_mean"] != 1.0                         # the second minibatch is off-policy


def test_rl_stage_stops_on_a_non_finite_loss_without_saving(tmp_path, monkeypatch):
  """The shared loop's guard (train.loop.StepLoop) holds for RL: the update's loss turns NaN at
  the first step, the run stops there, and no checkpoint holds the bad parameters."""
  update = rollout_lib.Learner.update
  monkeypatch.setattr(rollout_lib.Learner, "update",
                      lambda self, *a, **k: {**update(self, *a, **k), "loss": float("nan")})
  with pytest.raises(loop_lib.NonFiniteLossError, match="loss is nan at step 1.*Last good "
                     "checkpoint: none"):
    _run(tmp_path, 2, reward_fn=_shaped_rewards)  # keeps a group: the step updates
  assert not list((tmp_path / "checkpoints").glob("[0-9]*"))


def _differential_passed(texts, responses, golds, tasks):
  """Every differential sample right; final samples alternate right / wrong."""
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][:] = [1.0 if t == "differential" or i % 2 == 0 else 0.0
                          for i, t in enumerate(tasks)]
  return rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())


def test_rl_stage_moves_to_the_final_level_once_the_differential_is_passed(tmp_path):
  result = _run(tmp_path, 2, reward_fn=_differential_passed)
  rows = writers.read_metrics(tmp_path)
  assert {"step": 0, "curriculum/differential/ended_at": 0.0} in rows
  assert [r["curriculum/task"] for r in rows if "rl/reward" in r] == [1.0, 1.0]  # both final
  assert result["curriculum"]["ended_at"] == {"differential": 0}


def _rl_experiments():
  """Experiment gin files whose pipeline runs the rl stage."""
  root = GIN_CONFIGS / "experiments"
  return sorted(p.stem for p in root.glob("*.gin")
                if any(line.startswith("run_pipeline.stages") and "'rl'" in line
                       for line in p.read_text().splitlines()))


@pytest.mark.parametrize("name", _rl_experiments())
def test_shipped_rl_configs_reuse_rollouts_and_grade_a_single_final_diagnosis(name):
  bindings = ["CHECKPOINT = '/nonexistent'"] if name == "paper_gpu" else []
  gin.clear_config()
  try:
    main_lib.parse_config([f"experiments/{name}.gin"], bindings)
    with gin.config_scope("rl"):
      config, reward = stage_lib.RLConfig(), rewards_lib.RewardConfig()
      curriculum = curriculum_lib.CurriculumConfig()
  finally:
    gin.clear_config()
  assert config.minibatches * config.epochs > 1                 # updates after the first clip
  assert config.max_draws > 1                                    # dropped groups are refilled
  assert reward.grader.final_single_entry
  assert curriculum.advance_pass_rate is not None and curriculum.refresh_every > 0


@pytest.mark.slow
def test_rl_resumes_after_sigterm_exactly_like_an_uninterrupted_run(tmp_path):
  straight = _run(tmp_path / "straight", 3, reward_fn=constant_rewards)

  calls = []
  def sigterm_in_step_two(*args):
    calls.append(1)
    if len(calls) == 4:  # differential measured in 2 chunks, one draw a step: step 2's draw
      os.kill(os.getpid(), signal.SIGTERM)
    return constant_rewards(*args)
  with pytest.raises(train_stage_lib.StagePreempted, match="step 2"):
    _run(tmp_path / "killed", 3, reward_fn=sigterm_in_step_two)
  resumed = _run(tmp_path / "killed", 3, reward_fn=constant_rewards)
  assert resumed["steps"] == 3
  assert resumed["train"]["train/loss"] == straight["train"]["train/loss"]
  assert resumed["train"]["rl/reward"] == straight["train"]["rl/reward"]
  logged = [r["step"] for r in writers.read_metrics(tmp_path / "killed") if "rl/reward" in r]
  assert logged == [1, 2, 3]  # one row per step across the kill


@pytest.mark.slow
@pytest.mark.integration
def test_rl_stage_runs_in_the_tiny_pipeline_from_gin(tmp_path):
  from rarejax import main as main_lib  # pylint: disable=g-import-not-at-top
  bindings = ["run_pipeline.stages = ['data', 'cpt', 'sft', 'rl', 'eval']",
              "rl/RLConfig.num_steps = 2", "rl/RLConfig.prompts_per_step = 2",
              "rl/RLConfig.pool_size = 4", "rl/RolloutConfig.max_new_tokens = 16",
              "rl/RewardConfig.overlong_buffer = 8", "rl/OptimizerConfig.warmup_steps = 0"]
  argv = ["--workdir", str(tmp_path), "--gin_file", "experiments/tiny.gin"]
  assert main_lib.main(argv + [a for b in bindings for a in ("--gin_bindings", b)]) == 0
  result = json.loads((tmp_path / "rl" / "result.json").read_text())
  metadata = json.loads((tmp_path / "rl" / "export" / "metadata.json").read_text())
  assert result["steps"] == 2 and metadata["prompt_instruction"] == "full"  # the DataSpec's
  assert len(result["curriculum"]["pass_rates"]["differential"]) == 4 and "top1" in result["eval"]
  assert "rl/RLConfig.num_steps = 2" in (tmp_path / "operative_config.gin").read_text()
  assert "model.rl" in json.loads((tmp_path / "eval" / "result.json").read_text())
