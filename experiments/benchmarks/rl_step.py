"""Benchmark: the RL stage's rollout tokens/s and seconds per RL step (rollout + DAPO update).

Runs the real stage loop (rarejax.rl.stage.run_rl, shuffled curriculum so no tier measurement)
for `--steps` steps after one untimed warm-up step (which compiles the sampler and the train
step), and reports the medians of the stage's own per-step metrics:
  rollout_tokens_per_s   sampled tokens / sampler wall time (prefill once per prompt, G samples)
  rollout_s, update_s    sampling + rewards, and the DAPO update(s) incl. batch building
  seconds_per_step       the whole step
Prompts are random tokens of --prompt_len; the model is a randomly initialised preset whose
samples practically never hit EOS, so every response runs the full --new_tokens (the worst
case, and close to the quickstart model, whose responses outgrow 300 tokens). Rewards are
random (every group varied, so every step updates on the full batch); the grader is not timed
here (the stage logs its share as rl/grade_seconds). Defaults are the quickstart's RL shape:
small_7m with a 4096 vocabulary, 8 prompts x G=4 x 300 new tokens, prompts of 270 tokens.

Usage (CPU; ~2-3 minutes on an idle 2-core machine):
  .venv/bin/python experiments/benchmarks/rl_step.py
  .venv/bin/python experiments/benchmarks/rl_step.py --beta 0.01 --minibatches 2 --epochs 2
GPU (not run yet: no GPU in the session that wrote this; same script, e.g.):
  python experiments/benchmarks/rl_step.py --preset small_100m --prompts 64 --group 8 \
      --out experiments/benchmarks/results/rl_step_gpu.json
Writes experiments/benchmarks/results/rl_step.json (or --out) and prints a table.
"""
import argparse
import json
import os
import pathlib
import tempfile

import jax
import numpy as np

import train_step as common  # this folder: environment(), the --malloc flag
from rarejax.model import transformer
from rarejax.model.config import preset
from rarejax.rl import curriculum, dapo, rewards, rollout
from rarejax.rl import stage as stage_lib
from rarejax.train import optimizer, writers

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TIMED = {"rollout_tokens_per_s": "rl/rollout_tokens_per_s", "rollout_s": "rl/rollout_seconds",
         "update_s": "rl/update_seconds", "seconds_per_step": "rl/seconds_per_step",
         "response_length": "rl/response_length", "updated": "train/updated"}


class RandomTokens:
  """A stand-in vocabulary: ids in, placeholder text out (the rewards ignore it)."""
  pad_id, eos_id, bos_id = 0, 1, 2

  def encode(self, text):
    return [3 + (ord(c) % 100) for c in text]

  def decode(self, ids):
    return " ".join(map(str, ids[:8]))


def random_rewards(texts, responses, golds, tasks):
  """Uniform random accuracy terms (seeded by the responses): every group has varied outcomes."""
  seed = sum(sum(r[:4]) for r in responses) % (2**31)
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards.TERMS}
  terms["accuracy"] = np.random.default_rng(seed).random(len(texts)).astype(np.float32)
  return rewards.Rewards.combine(terms, rewards.RewardConfig().weights())


def cases(count: int, prompt_len: int, vocab_size: int) -> list[stage_lib.Case]:
  rng = np.random.default_rng(0)
  make = lambda: (2, *rng.integers(3, vocab_size, prompt_len - 1).tolist())
  return [stage_lib.Case(case_id=f"c{i}", gold_ids=("OMIM:154700",),
                         prompt_ids={"differential": make(), "final": make()})
          for i in range(count)]


def run(args) -> dict:
  config = preset(args.preset, vocab_size=args.vocab_size)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  settings = stage_lib.Settings(
      rl=stage_lib.RLConfig(num_steps=args.steps + 1, prompts_per_step=args.prompts,
                            max_draws=1, minibatches=args.minibatches, epochs=args.epochs,
                            checkpoint_every=10**6, async_checkpoints=False),
      rollout=rollout.RolloutConfig(group_size=args.group, max_new_tokens=args.new_tokens,
                                    temperature=1.0),
      dapo=dapo.DapoConfig(beta=args.beta),
      curriculum=curriculum.CurriculumConfig(mode="shuffled"),
      optimizer=optimizer.OptimizerConfig(learning_rate=1e-6, warmup_steps=0, total_steps=100))
  with tempfile.TemporaryDirectory() as workdir:
    stage_lib.run_rl(workdir=workdir, model_config=config, init_params=params,
                     cases=cases(4 * args.prompts, args.prompt_len, config.vocab_size),
                     tokenizer=RandomTokens(), reward_fn=random_rewards, pad_id=0,
                     settings=settings, progress=False)
    rows = [r for r in writers.read_metrics(workdir) if "rl/seconds_per_step" in r]
  timed = rows[1:]  # step 1 compiles
  return {"params": transformer.count_params(params), "config": config.to_dict(),
          "prompts": args.prompts, "group": args.group, "new_tokens": args.new_tokens,
          "prompt_len": args.prompt_len, "beta": args.beta,
          "minibatches": args.minibatches, "epochs": args.epochs, "steps_timed": len(timed),
          "first_step_s": rows[0]["rl/seconds_per_step"],
          **{name: float(np.median([r[key] for r in timed])) for name, key in TIMED.items()},
          "all_steps": [{name: r[key] for name, key in TIMED.items()} for r in rows]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="small_7m")
  parser.add_argument("--vocab_size", type=int, default=4096)
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--group", type=int, default=4)
  parser.add_argument("--new_tokens", type=int, default=300)
  parser.add_argument("--prompt_len", type=int, default=270)
  parser.add_argument("--beta", type=float, default=0.0, help="> 0 adds the reference forward")
  parser.add_argument("--minibatches", type=int, default=stage_lib.RLConfig.minibatches)
  parser.add_argument("--epochs", type=int, default=stage_lib.RLConfig.epochs)
  parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
  parser.add_argument("--out", default=str(RESULTS / "rl_step.json"))
  common.add_malloc_flag(parser)
  args = parser.parse_args()
  common.apply_malloc_flag(args.malloc)

  load_before = os.getloadavg()[0]
  result = run(args)
  result = {**common.environment(args.malloc),
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]], **result}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
  print(f"{args.preset} ({result['params']:,} params), {args.prompts} prompts x G={args.group} x "
        f"{args.new_tokens} new tokens, prompts of {args.prompt_len}; backend "
        f"{result['backend']}; 1-min load before/after {result['load_average_1min_before_after']}")
  print(f"{'rollout tok/s':>13} {'rollout s':>9} {'update s':>8} {'s/step':>7} {'resp len':>8} "
        f"{'1st step s':>10}")
  print(f"{result['rollout_tokens_per_s']:>13.0f} {result['rollout_s']:>9.2f} "
        f"{result['update_s']:>8.2f} {result['seconds_per_step']:>7.2f} "
        f"{result['response_length']:>8.0f} {result['first_step_s']:>10.1f}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
