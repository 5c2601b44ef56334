"""Matmul throughput by dtype and XLA:CPU backend flag, JAX beside torch, on this processor.

What the processor's bf16 units give each framework (issue #19, item 1): a square matmul in
fp32, in bf16 with fp32 accumulation (`preferred_element_type=float32`, what a bf16 training
step asks for), and bf16 → bf16; JAX once per XLA_FLAGS variant (each in a fresh subprocess: the
flags are read when the backend starts), torch in the same run. A flag the pinned jaxlib refuses
is recorded with its error. Writes experiments/benchmarks/results/matmul_dtypes.json with the
processor's model name and the flags that matter (avx512_bf16, amx_bf16).

  .venv/bin/python experiments/benchmarks/matmul_dtypes.py [--n 2048] [--seconds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "matmul_dtypes.json"
VARIANTS = {  # name -> XLA_FLAGS
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
}
CASES = ("fp32", "bf16_acc_fp32", "bf16")


def processor() -> dict:
  """Model name and the feature flags that decide the bf16 path."""
  info = {"machine": platform.machine(), "model": "unknown", "flags": []}
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return info
  for line in text.splitlines():
    if line.startswith("model name") and info["model"] == "unknown":
      info["model"] = line.split(":", 1)[1].strip()
    if line.startswith("flags"):
      flags = set(line.split(":", 1)[1].split())
      info["flags"] = sorted(flags & {"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                      "amx_tile", "avx2", "fma"})
      break
  info["cores"] = os.cpu_count()
  return info


def timed(fn, seconds: float) -> float:
  """Seconds per call of `fn` (which blocks until done), after a warm-up."""
  fn()
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or calls < 3:
    fn()
    calls += 1
  return (time.perf_counter() - start) / calls


def jax_child(n: int, seconds: float) -> dict:
  """GFLOP/s of the three JAX cases in this process (run under one XLA_FLAGS variant)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a32 = jax.random.normal(key_a, (n, n), jnp.float32)
  b32 = jax.random.normal(key_b, (n, n), jnp.float32)
  a16, b16 = a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)
  fns = {"fp32": (jax.jit(jnp.matmul), a32, b32),
         "bf16_acc_fp32": (jax.jit(lambda x, y: jnp.matmul(
             x, y, preferred_element_type=jnp.float32)), a16, b16),
         "bf16": (jax.jit(jnp.matmul), a16, b16)}
  exact = a32 @ b32
  out = {"jax": jax.__version__}
  for name, (fn, x, y) in fns.items():
    seconds_per = timed(lambda fn=fn, x=x, y=y: fn(x, y).block_until_ready(), seconds)
    error = float(jnp.max(jnp.abs(fn(x, y).astype(jnp.float32) - exact)) / jnp.max(jnp.abs(exact)))
    out[name] = {"gflops": 2 * n ** 3 / seconds_per / 1e9, "max_rel_error_vs_fp32": error}
  return out


def torch_cases(n: int, seconds: float) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  a32, b32 = torch.randn(n, n), torch.randn(n, n)
  out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
  for name, (x, y) in {"fp32": (a32, b32),
                       "bf16": (a32.bfloat16(), b32.bfloat16())}.items():
    with torch.no_grad():
      seconds_per = timed(lambda x=x, y=y: x @ y, seconds)
    out[name] = {"gflops": 2 * n ** 3 / seconds_per / 1e9}
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=2048)
  parser.add_argument("--seconds", type=float, default=2.0, help="timing per case")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(jax_child(args.n, args.seconds)))
    return 0
  result = {"processor": processor(), "n": args.n, "jax": {}}
  for name, flags in VARIANTS.items():
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, __file__, "--child", "--n", str(args.n),
                           "--seconds", str(args.seconds)], env=env, capture_output=True,
                          text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    result["jax"][name] = ({"xla_flags": flags, **json.loads(lines[-1])} if proc.returncode == 0
                           else {"xla_flags": flags, "error": proc.stderr.strip()[-400:]})
    print(name, json.dumps(result["jax"][name])[:300], flush=True)
  result["torch"] = torch_cases(args.n, args.seconds)
  print("torch", json.dumps(result["torch"]), flush=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
