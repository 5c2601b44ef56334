"""Benchmark: rarejax train step side by side with Hugging Face transformers + torch (CPU).

The same Llama config on both sides (vocab, d_model, layers, heads, kv heads, mlp, RoPE theta,
norm eps, via model.hf_import.hf_config_dict; parameter counts are checked equal), the same
synthetic batch (B x L random tokens, next-token targets), mean next-token cross-entropy
over all tokens, AdamW with the same hyper-parameters (train_step.OPTIMIZER: warmup-cosine
learning rate, b1 0.9, b2 0.95, eps 1e-8, decoupled weight decay 0.1 on matrices but not on
norms or the embedding table, global-norm clipping at 1.0). torch runs what a user gets by
default: `LlamaForCausalLM` in train mode, eager PyTorch (no torch.compile), the default
AdamW implementation, with attn_implementation "sdpa" (the default) and "eager".

Dtypes (--dtypes, each side by side in the same interleaved rounds): float32; bfloat16 is each
library's mixed precision with float32 parameters, optimizer and loss: rarejax's compute dtype
(ModelConfig.dtype: bf16 matmuls with float32 accumulation, rarejax.model.layers.dense) and
torch's CPU autocast (`torch.autocast("cpu", torch.bfloat16)` around the forward, the user's way
to reach the bf16 units). Every ratio compares runners of one dtype.

Both run in one process with the same thread count (torch.set_num_threads = the cores JAX
uses), interleaved step by step (rarejax, torch sdpa, torch eager, rarejax, ...) after warm-up,
so all see the same machine load; reported: median wall seconds per step, tokens/s, and the
ratio rarejax tokens/s / torch tokens/s. Load averages before/after are recorded (the machine
is shared). FLOPs and MFU use train_step's analytic count and a matmul peak measured here.

Usage (~2 minutes for both presets on an idle 2-core machine; small_7m alone ~30 s):
  .venv/bin/python experiments/benchmarks/train_vs_torch.py
  .venv/bin/python experiments/benchmarks/train_vs_torch.py --presets small_7m --rounds 3
  .venv/bin/python experiments/benchmarks/train_vs_torch.py --malloc default \
      --out experiments/benchmarks/results/train_vs_torch_malloc_default.json
Writes experiments/benchmarks/results/train_vs_torch.json (or --out) and prints a table.
"""
import argparse
import dataclasses
import json
import math
import os
import pathlib
import time
from collections.abc import Callable

import numpy as np
import torch
import transformers

import train_step as common  # this folder: FLOP accounting, rarejax step, optimizer settings
from rarejax.model import hf_import, transformer
from rarejax.model.config import ModelConfig, preset
from rarejax.train import optimizer

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def torch_learning_rate(step: int, config: optimizer.OptimizerConfig) -> float:
  """optax.warmup_cosine_decay_schedule as rarejax's optimizer uses it (init 0, end fraction)."""
  if step < config.warmup_steps:
    return config.learning_rate * step / config.warmup_steps
  progress = min(1.0, (step - config.warmup_steps) / (config.total_steps - config.warmup_steps))
  end = config.learning_rate * config.final_lr_fraction
  return end + (config.learning_rate - end) * 0.5 * (1 + math.cos(math.pi * progress))


def torch_model(config: ModelConfig, seq_len: int, attn: str) -> torch.nn.Module:
  """LlamaForCausalLM (train mode, fp32) with the architecture of `config`."""
  hf = hf_import.hf_config_dict(config, "llama")
  del hf["model_type"]  # a class attribute of LlamaConfig
  hf_config = transformers.LlamaConfig(**hf, max_position_embeddings=seq_len,
                                       attn_implementation=attn)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(hf_config).train()
  ours = transformer.count_params(transformer.abstract_params(config))
  theirs = sum(p.numel() for p in model.parameters())
  if ours != theirs:
    raise RuntimeError(f"parameter counts differ: rarejax {ours:,} vs transformers {theirs:,}.")
  return model


def torch_step(config: ModelConfig, batch_size: int, seq_len: int, attn: str,
               dtype: str = "float32") -> Callable[[], dict[str, float]]:
  """One HF training step: forward (under bf16 autocast for dtype 'bfloat16'), mean CE, backward,
  clip, AdamW (decay on matrices only)."""
  model = torch_model(config, seq_len, attn)
  opt_config = common.OPTIMIZER
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed_tokens" not in n]
  no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed_tokens" in n]
  adamw = torch.optim.AdamW(
      [{"params": decay, "weight_decay": opt_config.weight_decay},
       {"params": no_decay, "weight_decay": 0.0}],
      lr=opt_config.learning_rate, betas=(opt_config.b1, opt_config.b2), eps=opt_config.eps)
  schedule = torch.optim.lr_scheduler.LambdaLR(
      adamw, lambda step: torch_learning_rate(step, opt_config) / opt_config.learning_rate)
  inputs, targets = (torch.from_numpy(a).long()
                     for a in common.synthetic_tokens(config.vocab_size, batch_size, seq_len))

  def run() -> dict[str, float]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1))
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opt_config.grad_clip_norm)
    adamw.step()
    schedule.step()
    adamw.zero_grad(set_to_none=True)
    return {"loss": float(loss), "grad_norm": float(grad_norm)}
  return run


def timed(run: Callable[[], dict[str, float]]) -> tuple[float, float]:
  """(wall seconds, process CPU seconds) of one call."""
  start, start_cpu = time.perf_counter(), common.cpu_seconds()
  run()
  return time.perf_counter() - start, common.cpu_seconds() - start_cpu


def runner_name(library: str, dtype: str) -> str:
  """'rarejax' / 'torch_sdpa' in float32 (the names of the earlier float32-only results), with a
  dtype suffix otherwise."""
  return library if dtype == "float32" else f"{library}_{dtype}"


def compare(config: ModelConfig, batch_size: int, seq_len: int, rounds: int,
            warmup: int, dtypes: tuple[str, ...] = ("float32",)) -> dict:
  """Interleaved timing of rarejax and each torch attention implementation on one preset, in
  each dtype."""
  load_before = os.getloadavg()[0]
  runners, dtype_of, compile_s = {}, {}, {}
  for dtype in dtypes:
    name = runner_name("rarejax", dtype)
    runners[name], info = common.rarejax_step(dataclasses.replace(config, dtype=dtype),
                                              batch_size, seq_len)
    compile_s[name] = info["compile_s"]
    for attn in ATTN_IMPLEMENTATIONS:
      runners[runner_name(f"torch_{attn}", dtype)] = torch_step(config, batch_size, seq_len,
                                                                attn, dtype)
    dtype_of.update({runner: dtype for runner in runners if runner not in dtype_of})
  first_loss = {name: run()["loss"] for name, run in runners.items()}
  for _ in range(warmup - 1):  # glibc settles its heap over the first steps
    for run in runners.values():
      run()
  wall = {name: [] for name in runners}
  cpu = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      seconds, cpu_seconds = timed(run)
      wall[name].append(seconds)
      cpu[name].append(cpu_seconds)
  tokens = batch_size * seq_len
  flops_per_step = common.analytic_flops_per_token(config, seq_len) * tokens
  result = {"params": transformer.count_params(transformer.abstract_params(config)),
            "config": config.to_dict(), "batch_size": batch_size, "seq_len": seq_len,
            "warmup_steps": warmup, "rounds": rounds, "rarejax_compile_s": compile_s,
            "analytic_flops_per_step": flops_per_step, "first_step_loss": first_loss,
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]], "runs": {}}
  for name, dtype in dtype_of.items():
    jax_s = float(np.median(wall[runner_name("rarejax", dtype)]))
    step_s = float(np.median(wall[name]))
    result["runs"][name] = {"step_s_median": step_s, "step_s_all": wall[name],
                            "cpu_s_all": cpu[name], "tokens_per_s": tokens / step_s,
                            "dtype": dtype, "achieved_flops_per_s": flops_per_step / step_s,
                            "rarejax_speedup": step_s / jax_s}
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", nargs="+", default=["small_7m", "small_30m"])
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=5, help="timed steps per runner")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps per runner")
  parser.add_argument("--dtypes", nargs="+", default=["float32"],
                      choices=("float32", "bfloat16"), help="compute dtypes, side by side")
  parser.add_argument("--out", default=str(common.RESULTS / "train_vs_torch.json"))
  common.add_malloc_flag(parser)
  args = parser.parse_args()
  common.apply_malloc_flag(args.malloc)
  threads = len(os.sched_getaffinity(0))  # XLA:CPU's default intra-op pool size
  torch.set_num_threads(threads)

  peaks = [common.measure_matmul_peak()]
  results = {}
  for name in args.presets:
    results[name] = compare(preset(name), args.batch_size, args.seq_len, args.rounds,
                            args.warmup, tuple(args.dtypes))
    print(f"{name}: rarejax/torch_sdpa "
          f"{results[name]['runs']['torch_sdpa']['rarejax_speedup']:.2f}x", flush=True)
  peaks.append(common.measure_matmul_peak())
  peak = max(peaks)
  for result in results.values():
    for run in result["runs"].values():
      run["mfu_vs_measured_matmul_peak"] = run["achieved_flops_per_s"] / peak
  out = {**common.environment(args.malloc), "torch": torch.__version__,
         "transformers": transformers.__version__, "threads_jax_and_torch": threads,
         "dtypes": args.dtypes, "measured_matmul_peak_flops_per_s": peak,
         "matmul_peak_before_after_flops_per_s": peaks, "presets": results}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(out, indent=1))

  print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; {threads} threads each; malloc {args.malloc}")
  print(f"{'preset':<11} {'runner':<20} {'step s':>7} {'tok/s':>7} {'MFU':>6} "
        f"{'rarejax x':>9} {'load before/after':>18}")
  for name, result in results.items():
    load = "/".join(f"{x:.1f}" for x in result["load_average_1min_before_after"])
    for runner, r in result["runs"].items():
      print(f"{name:<11} {runner:<20} {r['step_s_median']:>7.2f} {r['tokens_per_s']:>7.0f} "
            f"{r['mfu_vs_measured_matmul_peak']:>6.1%} {r['rarejax_speedup']:>9.2f} {load:>18}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
