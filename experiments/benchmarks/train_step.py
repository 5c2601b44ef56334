"""Benchmark: train-step throughput and MFU of the ~7M and ~30M presets on this machine (fp32).

FLOPs per step are counted analytically (PaLM, appendix B):
  6 * N * tokens                       matmul FLOPs of forward + backward, N = parameters that
                                       take part in matmuls (all but a non-tied embedding table)
  + 12 * layers * seq * d_attn * tokens  attention scores and weighted sum (d_attn = heads *
                                       head_dim; full seq x seq, causality not discounted)
Peak is a 2048^3 fp32 matmul measured in the same process before and after the runs (the max
of the two), so MFU = achieved / measured peak. Other jobs sharing the cores lower both.
XLA's own count (compiled.cost_analysis) is recorded too; it counts a scanned layer once.

Usage:
  .venv/bin/python experiments/benchmarks/train_step.py                 # both presets
  .venv/bin/python experiments/benchmarks/train_step.py --presets small_7m --profile /tmp/prof
Writes experiments/benchmarks/results/train_step.json and prints a table.
"""
import argparse
import collections
import json
import os
import pathlib
import platform
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from rarejax.model import transformer
from rarejax.model.config import ModelConfig, preset
from rarejax.parallel import mesh as mesh_lib
from rarejax.train import losses, optimizer, state as state_lib, step as step_lib

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "train_step.json"


def measure_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a jitted fp32 [n, n] @ [n, n] matmul (best of `repeats`)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.dot)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def matmul_params(config: ModelConfig) -> int:
  """Parameters used in matmuls: all but the embedding table unless it is the tied output."""
  params = transformer.abstract_params(config)
  total = transformer.count_params(params)
  return total if config.tie_embeddings else total - params["embedding"].size


def analytic_flops_per_token(config: ModelConfig, seq_len: int) -> float:
  """6 N + 12 * layers * seq * d_attn (forward + backward)."""
  d_attn = config.num_heads * config.head_dim
  return 6 * matmul_params(config) + 12 * config.num_layers * seq_len * d_attn


def top_ops(profile_dir: str, count: int = 12) -> list[tuple[str, float]]:
  """(XLA op kind, total ms) of a jax.profiler trace, largest first (".N" suffixes merged)."""
  trace = sorted(pathlib.Path(profile_dir).rglob("*.xplane.pb"))[-1]
  totals = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(str(trace)).planes:
    for line in plane.lines:
      for event in line.events:
        if line.name.startswith("tf_XLA") and not event.name.startswith("ThunkExecutor"):
          totals[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns / 1e6
  return totals.most_common(count)


def benchmark(config: ModelConfig, batch_size: int, seq_len: int, steps: int,
              profile_dir: str | None) -> dict:
  """Compiles the train step once, times `steps` steps after one warm-up step."""
  tx = optimizer.make_optimizer(optimizer.OptimizerConfig(warmup_steps=10, total_steps=1000))
  mesh = mesh_lib.make_mesh()
  shardings = state_lib.train_state_shardings(config, tx, mesh)
  state = state_lib.init_train_state(config, tx, shardings)
  tokens = np.random.default_rng(0).integers(1, config.vocab_size, (batch_size, seq_len + 1))
  batch = {"inputs": jnp.asarray(tokens[:, :-1], jnp.int32),
           "targets": jnp.asarray(tokens[:, 1:], jnp.int32)}
  start = time.perf_counter()
  compiled = step_lib.compile_train_step(
      step_lib.make_train_step(config, tx, losses.get_loss("lm")), shardings,
      state_lib.abstract_train_state(config, tx), batch, mesh)
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for i in range(steps):
    if profile_dir and i == steps - 1:
      jax.profiler.start_trace(profile_dir)
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
    if profile_dir and i == steps - 1:
      jax.profiler.stop_trace()
  step_s = float(np.median(times))
  tokens_per_step = batch_size * seq_len
  flops_per_step = analytic_flops_per_token(config, seq_len) * tokens_per_step
  return {"params": transformer.count_params(state.params), "matmul_params": matmul_params(config),
          "batch_size": batch_size, "seq_len": seq_len, "steps_timed": steps,
          "compile_s": compile_s, "step_s_median": step_s, "step_s_all": times,
          "tokens_per_s": tokens_per_step / step_s, "analytic_flops_per_step": flops_per_step,
          "achieved_flops_per_s": flops_per_step / step_s,
          "xla_cost_analysis_flops_per_step": compiled.stats["flops"],
          "memory_bytes": {k: v for k, v in compiled.stats.items() if k != "flops"},
          "final_loss": float(metrics["loss"]),
          "profile_top_ops_ms": top_ops(profile_dir) if profile_dir else None}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", nargs="+", default=["small_7m", "small_30m"])
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--profile", default=None, help="write a jax.profiler trace of the last "
                      "step of each preset under this folder")
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args()

  load_before = os.getloadavg()[0]
  peak_before = measure_matmul_peak()
  runs = {}
  for name in args.presets:
    profile_dir = os.path.join(args.profile, name) if args.profile else None
    runs[name] = benchmark(preset(name), args.batch_size, args.seq_len, args.steps, profile_dir)
  peaks = [peak_before, measure_matmul_peak()]
  peak = max(peaks)  # contention from other jobs only lowers a measurement
  for run in runs.values():
    run["mfu_vs_measured_matmul_peak"] = run["achieved_flops_per_s"] / peak
  result = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "jax": jax.__version__, "dtype": "float32",
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
            "measured_matmul_peak_flops_per_s": peak,
            "matmul_peak_before_after_flops_per_s": peaks, "runs": runs}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))

  print(f"fp32 matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s; 1-min load average before/after "
        f"{result['load_average_1min_before_after']} (other jobs share the cores)")
  print(f"{'preset':<10} {'params':>11} {'tok/s':>8} {'step s':>7} {'GFLOP/s':>8} {'MFU':>6} "
        f"{'compile s':>9}")
  for name, r in runs.items():
    print(f"{name:<10} {r['params']:>11,} {r['tokens_per_s']:>8.0f} {r['step_s_median']:>7.2f} "
          f"{r['achieved_flops_per_s'] / 1e9:>8.1f} {r['mfu_vs_measured_matmul_peak']:>6.1%} "
          f"{r['compile_s']:>9.1f}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
