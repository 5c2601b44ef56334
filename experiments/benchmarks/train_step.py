"""Benchmark: rarejax train-step throughput and model FLOP utilization (MFU) per preset.

FLOPs per step are counted analytically (PaLM, appendix B), forward + backward:
  6 * N * tokens                         matmul FLOPs, N = parameters that take part in matmuls
                                         (all but a non-tied embedding table, which is a lookup)
  + 12 * layers * seq * d_attn * tokens  attention scores and weighted sum (d_attn = heads *
                                         head_dim; the full seq x seq square, causality not
                                         discounted)
Remat recomputation is not counted (MFU, not hardware utilization). The peak is a large matmul
in the run's compute dtype, measured in the same process before and after the presets (the max
of the two: other jobs sharing the cores only lower a measurement); on GPU the vendor's dense
peak is reported beside it. XLA's own count (compiled.cost_analysis) is recorded too; it
counts a scanned layer once.

Batches are synthetic (random tokens), so neither TensorFlow nor data files are needed.

Usage (CPU, fp32; ~2 minutes on an idle 2-core machine, the small_7m preset alone ~20 s):
  .venv/bin/python experiments/benchmarks/train_step.py
  .venv/bin/python experiments/benchmarks/train_step.py --presets small_7m --profile /tmp/prof
  .venv/bin/python experiments/benchmarks/train_step.py --malloc default   # glibc as it comes
GPU (not run here; ~1B Llama-3.2 shapes, bf16 compute, full remat):
  python experiments/benchmarks/train_step.py --presets llama_1b --dtype bfloat16 \
      --remat_policy full --batch_size 8 --seq_len 2048 --out results/train_step_gpu.json
Writes experiments/benchmarks/results/train_step.json (or --out) and prints a table.
"""
import argparse
import collections
import json
import os
import pathlib
import platform
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rarejax.model import transformer
from rarejax.model.config import ModelConfig, preset
from rarejax.parallel import mesh as mesh_lib
from rarejax.train import losses, optimizer, state as state_lib, step as step_lib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CPU_PRESETS = ("small_7m", "small_30m", "small_100m")
# Vendor dense (no sparsity) peaks in FLOP/s, by a substring of jax's device_kind.
VENDOR_PEAKS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},  # SXM; fp32 without tensor cores
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
}
# Optimizer hyper-parameters of every benchmark run (rarejax and the torch baseline).
OPTIMIZER = optimizer.OptimizerConfig(learning_rate=3e-4, warmup_steps=10, total_steps=1000,
                                      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                                      grad_clip_norm=1.0)


def measure_matmul_peak(dtype: str = "float32", repeats: int = 10) -> float:
  """FLOP/s of a jitted square matmul in `dtype` (best of `repeats`); 2048^3 on CPU, 8192^3 else."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(jnp.dot)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def vendor_peak(dtype: str) -> float | None:
  """The vendor's dense peak FLOP/s of device 0 in `dtype`, when it is in VENDOR_PEAKS."""
  kind = jax.devices()[0].device_kind
  for name, peaks in VENDOR_PEAKS.items():
    if name in kind:
      return peaks.get(dtype)
  return None


def matmul_params(config: ModelConfig) -> int:
  """Parameters used in matmuls: all but the embedding table unless it is the tied output."""
  params = transformer.abstract_params(config)
  total = transformer.count_params(params)
  return total if config.tie_embeddings else total - params["embedding"].size


def analytic_flops_per_token(config: ModelConfig, seq_len: int) -> float:
  """6 N + 12 * layers * seq * d_attn (forward + backward), see the module docstring."""
  return transformer.train_step_flops(config, 1, seq_len) / seq_len


def synthetic_tokens(vocab_size: int, batch_size: int, seq_len: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Random (inputs, targets) int32 [batch_size, seq_len], targets shifted by one."""
  tokens = np.random.default_rng(seed).integers(1, vocab_size, (batch_size, seq_len + 1))
  return tokens[:, :-1].astype(np.int32), tokens[:, 1:].astype(np.int32)


def rarejax_step(config: ModelConfig, batch_size: int,
                 seq_len: int) -> tuple[Callable[[], dict[str, float]], dict[str, Any]]:
  """Compiles the train step (LM loss, AdamW + clipping) on a synthetic batch.

  Returns:
    run: runs one step and returns its metrics as floats (waits for the device).
    info: compile_s, XLA's flop count and memory sizes of the compiled step.
  """
  tx = optimizer.make_optimizer(OPTIMIZER)
  mesh = mesh_lib.make_mesh()
  shardings = state_lib.train_state_shardings(config, tx, mesh)
  inputs, targets = synthetic_tokens(config.vocab_size, batch_size, seq_len)
  batch = {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(targets)}
  start = time.perf_counter()
  compiled = step_lib.compile_train_step(
      step_lib.make_train_step(config, tx, losses.get_loss("lm")), shardings,
      state_lib.abstract_train_state(config, tx), batch, mesh)
  info = {"compile_s": time.perf_counter() - start,
          "xla_cost_analysis_flops_per_step": compiled.stats["flops"],
          "memory_bytes": {k: v for k, v in compiled.stats.items() if k != "flops"}}
  holder = {"state": state_lib.init_train_state(config, tx, shardings)}

  def run() -> dict[str, float]:
    holder["state"], metrics = compiled(holder["state"], batch)
    return {k: float(v) for k, v in jax.device_get(metrics).items()}
  return run, info


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


def cpu_seconds() -> float:
  """User + system CPU time of this process (all threads)."""
  usage = os.times()
  return usage.user + usage.system


def benchmark(config: ModelConfig, batch_size: int, seq_len: int, steps: int, warmup: int,
              profile_dir: str | None) -> dict[str, Any]:
  """Times `steps` steps after `warmup` untimed ones (median wall time; CPU time beside it)."""
  run, info = rarejax_step(config, batch_size, seq_len)
  for _ in range(warmup):  # glibc settles its heap over the first steps
    run()
  times, cpu_times = [], []
  for i in range(steps):
    if profile_dir and i == steps - 1:
      jax.profiler.start_trace(profile_dir)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    metrics = run()
    times.append(time.perf_counter() - start)
    cpu_times.append(cpu_seconds() - start_cpu)
    if profile_dir and i == steps - 1:
      jax.profiler.stop_trace()
  step_s = float(np.median(times))
  tokens_per_step = batch_size * seq_len
  flops_per_step = analytic_flops_per_token(config, seq_len) * tokens_per_step
  return {"params": transformer.count_params(transformer.abstract_params(config)),
          "matmul_params": matmul_params(config), "config": config.to_dict(),
          "batch_size": batch_size, "seq_len": seq_len, "warmup_steps": warmup,
          "steps_timed": steps, **info,
          "step_s_median": step_s, "step_s_all": times, "cpu_s_all": cpu_times,
          "tokens_per_s": tokens_per_step / step_s, "analytic_flops_per_step": flops_per_step,
          "achieved_flops_per_s": flops_per_step / step_s, "final_loss": metrics["loss"],
          "profile_top_ops_ms": top_ops(profile_dir) if profile_dir else None}


def environment(malloc: str) -> dict[str, Any]:
  """Machine, versions and load: what a reader needs to compare two result files."""
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": str(device),
          "device_kind": device.device_kind, "cpu_count": os.cpu_count(),
          "platform": platform.platform(), "jax": jax.__version__, "malloc": malloc,
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "xla_flags":
          os.environ.get("XLA_FLAGS")}


def add_malloc_flag(parser: argparse.ArgumentParser) -> None:
  """Adds --malloc (see README.md: the allocator setting)."""
  parser.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                      help="'reuse': step.keep_freed_host_memory() before JAX starts (keeps "
                      "XLA:CPU's per-step temporary buffer mapped); 'default': glibc as is")


def apply_malloc_flag(malloc: str) -> None:
  """Applies --malloc; call before the first JAX computation."""
  if malloc == "reuse" and not step_lib.keep_freed_host_memory():
    raise SystemExit("--malloc reuse needs glibc (mallopt failed); pass --malloc default.")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", nargs="+", default=list(CPU_PRESETS))
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--dtype", default="float32", help="compute dtype (params stay fp32)")
  parser.add_argument("--remat_policy", default=None, help="override the presets' remat policy")
  parser.add_argument("--profile", default=None, help="write a jax.profiler trace of the last "
                      "step of each preset under this folder")
  parser.add_argument("--out", default=str(RESULTS / "train_step.json"))
  add_malloc_flag(parser)
  args = parser.parse_args()
  apply_malloc_flag(args.malloc)

  overrides = {"dtype": args.dtype}
  if args.remat_policy:
    overrides["remat_policy"] = args.remat_policy
  load_before = os.getloadavg()[0]
  peaks = [measure_matmul_peak(args.dtype)]
  runs = {}
  for name in args.presets:
    profile_dir = os.path.join(args.profile, name) if args.profile else None
    runs[name] = benchmark(preset(name, **overrides), args.batch_size, args.seq_len, args.steps,
                           args.warmup, profile_dir)
    print(f"{name}: {runs[name]['tokens_per_s']:.0f} tok/s", flush=True)
  peaks.append(measure_matmul_peak(args.dtype))
  peak = max(peaks)  # contention from other jobs only lowers a measurement
  vendor = vendor_peak(args.dtype)
  for run in runs.values():
    run["mfu_vs_measured_matmul_peak"] = run["achieved_flops_per_s"] / peak
    run["mfu_vs_vendor_peak"] = run["achieved_flops_per_s"] / vendor if vendor else None
  result = {**environment(args.malloc), "dtype": args.dtype,
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
            "measured_matmul_peak_flops_per_s": peak,
            "matmul_peak_before_after_flops_per_s": peaks, "vendor_peak_flops_per_s": vendor,
            "runs": runs}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))

  print(f"{args.dtype} matmul peak: {peak / 1e9:.1f} GFLOP/s measured"
        + (f", {vendor / 1e12:.0f} TFLOP/s vendor" if vendor else "")
        + f"; 1-min load average before/after {result['load_average_1min_before_after']}")
  print(f"{'preset':<12} {'params':>13} {'tok/s':>9} {'step s':>7} {'GFLOP/s':>9} {'MFU':>6} "
        f"{'compile s':>9}")
  for name, r in runs.items():
    print(f"{name:<12} {r['params']:>13,} {r['tokens_per_s']:>9.0f} {r['step_s_median']:>7.2f} "
          f"{r['achieved_flops_per_s'] / 1e9:>9.1f} {r['mfu_vs_measured_matmul_peak']:>6.1%} "
          f"{r['compile_s']:>9.1f}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
