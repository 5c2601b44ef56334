"""Benchmark: input-pipeline throughput vs. the train step of the quickstart model on this CPU.

Builds the quickstart data (a subset of OMIM diseases, simulated cases, SentencePiece vocab),
then measures for each (task, B, L):
  pipeline   packed batches/s and real (non-padding) tokens/s from get_batches, after the first
             batch (start-up, TF graph building) which is timed separately;
  train      the jitted train step of the `small_7m` preset on those same batches (median step
             time, tokens/s) — when rarejax.train is importable;
  loop       pipeline + step together (next batch, then step), to show the pipeline hides
             behind the step.
The acceptance bar is pipeline tokens/s ≥ 10 × train tokens/s.

Usage:
  .venv/bin/python experiments/benchmarks/input_pipeline.py
  .venv/bin/python experiments/benchmarks/input_pipeline.py --diseases 200 --no_train
Writes experiments/benchmarks/results/input_pipeline.json and prints a table.
"""
import argparse
import json
import os
import pathlib
import platform
import time

import numpy as np

from rarejax import knowledge
from rarejax.data import batches, stage

import seqio  # pylint: disable=g-bad-import-order  (after rarejax.data hid the GPUs from TF)

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "input_pipeline.json"
SHARD = seqio.ShardInfo(index=0, num_shards=1)


def time_pipeline(task: str, batch_size: int, length: int, n_batches: int) -> dict:
  """First-batch latency, then batches/s and real tokens/s over n_batches."""
  start = time.perf_counter()
  iterator = batches.get_batches(task, length, batch_size, shard_info=SHARD, seed=0)
  next(iterator)
  first_s = time.perf_counter() - start
  tokens = 0
  start = time.perf_counter()
  for _ in range(n_batches):
    tokens += int(np.count_nonzero(next(iterator)["segment_ids"]))
  elapsed = time.perf_counter() - start
  return {"first_batch_s": first_s, "batches_per_s": n_batches / elapsed,
          "tokens_per_s": tokens / elapsed,
          "slots_per_s": n_batches * batch_size * length / elapsed,
          "fill": tokens / (n_batches * batch_size * length)}


def time_train(task: str, batch_size: int, length: int, vocab_size: int, steps: int) -> dict:
  """The small_7m train step on pipeline batches: alone, and with the pipeline in the loop."""
  import jax  # pylint: disable=g-import-not-at-top  (optional part of the benchmark)
  from rarejax.model.config import preset
  from rarejax.parallel import mesh as mesh_lib
  from rarejax.train import losses, optimizer, state as state_lib, step as step_lib

  config = preset("small_7m")
  if vocab_size > config.vocab_size:
    raise ValueError(f"vocabulary ({vocab_size}) larger than small_7m's ({config.vocab_size})")
  tx = optimizer.make_optimizer(optimizer.OptimizerConfig(warmup_steps=10, total_steps=1000))
  mesh = mesh_lib.make_mesh()
  shardings = state_lib.train_state_shardings(config, tx, mesh)
  state = state_lib.init_train_state(config, tx, shardings)
  iterator = batches.get_batches(task, length, batch_size, shard_info=SHARD, seed=1)
  batch = next(iterator)
  compiled = step_lib.compile_train_step(
      step_lib.make_train_step(config, tx, losses.get_loss("sft")), shardings,
      state_lib.abstract_train_state(config, tx), batch, mesh)
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  step_times, tokens = [], 0
  for _ in range(steps):  # step alone (batch already on the host)
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    step_times.append(time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(steps):  # the loop a trainer runs: next batch, then step
    batch = next(iterator)
    tokens += int(np.count_nonzero(batch["segment_ids"]))
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  loop_s = time.perf_counter() - start
  step_s = float(np.median(step_times))
  real = int(np.count_nonzero(batch["segment_ids"]))
  return {"preset": "small_7m", "step_s_median": step_s,
          "tokens_per_s": real / step_s, "slots_per_s": batch_size * length / step_s,
          "loop_step_s": loop_s / steps, "loop_tokens_per_s": tokens / loop_s,
          "final_loss": float(metrics["loss"])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/rarejax_bench_input_pipeline")
  parser.add_argument("--diseases", type=int, default=50)
  parser.add_argument("--n_train", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--batches", type=int, default=30, help="pipeline batches timed")
  parser.add_argument("--steps", type=int, default=4, help="train steps timed")
  parser.add_argument("--no_train", action="store_true", help="skip the train-step part")
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args()

  load_before = os.getloadavg()[0]
  kb = knowledge.load_knowledge()
  start = time.perf_counter()
  spec = stage.DataSpec(n_diseases=args.diseases, n_train=args.n_train)
  data = stage.prepare_data(kb, pathlib.Path(args.workdir) / "data", spec)
  names = stage.register_tasks(data)
  build_s = time.perf_counter() - start
  vocab_size = data.vocabulary().vocab_size
  cases = [("knowledge_lm", 256), ("sft_mixture", 1024)]
  runs = {}
  for role, length in cases:
    key = f"{role}@{args.batch_size}x{length}"
    runs[key] = {"task": names[role],
                 "pipeline": time_pipeline(names[role], args.batch_size, length, args.batches)}
    if not args.no_train:
      runs[key]["train"] = time_train(names[role], args.batch_size, length, vocab_size,
                                      args.steps)
      runs[key]["pipeline_over_train"] = (runs[key]["pipeline"]["tokens_per_s"]
                                          / runs[key]["train"]["tokens_per_s"])
  result = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
            "knowledge_digest": kb.version.digest, "diseases": args.diseases,
            "simulated_per_disease": args.n_train, "vocab_size": vocab_size,
            "build_or_reuse_s": build_s, "runs": runs}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1))

  print(f"data build/reuse {build_s:.1f} s; vocab {vocab_size}; 1-min load average before/after "
        f"{result['load_average_1min_before_after']} (other jobs share the 2 cores)")
  print(f"{'task@BxL':<22} {'pipe tok/s':>10} {'fill':>5} {'1st s':>6} {'step tok/s':>10} "
        f"{'loop tok/s':>10} {'ratio':>6}")
  for key, run in runs.items():
    p, t = run["pipeline"], run.get("train", {})
    print(f"{key:<22} {p['tokens_per_s']:>10.0f} {p['fill']:>5.2f} {p['first_batch_s']:>6.1f} "
          f"{t.get('tokens_per_s', float('nan')):>10.0f} "
          f"{t.get('loop_tokens_per_s', float('nan')):>10.0f} "
          f"{run.get('pipeline_over_train', float('nan')):>6.1f}")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
