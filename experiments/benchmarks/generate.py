"""Benchmark: rarejax.sample decode throughput vs Hugging Face `generate` (torch, CPU).

Both sides run greedy decoding of a fixed number of new tokens (no stop ids / EOS ignored) for
the same random prompts on identically shaped Llama models (weights differ; only shapes
matter). Reported tokens/s = batch * new_tokens / wall time of one full generate call (prefill
included, best of --repeats, the two interleaved so both see the same machine load). JAX
compile time (first call minus the best warm call) is reported separately. Writes
experiments/benchmarks/results/generate.json. Reproduce:

  .venv/bin/python experiments/benchmarks/generate.py                    # small_7m + small_30m
  .venv/bin/python experiments/benchmarks/generate.py --presets small_7m  # the quickstart size
  .venv/bin/python experiments/benchmarks/generate.py --all-threads       # default thread pools

By default both frameworks run on one thread (stable per-core numbers on a shared machine).

Profile of one generate call (jax.profiler, share of XLA op time): small_7m batch 64, 62%
matmuls (YNNPACK fusions, lm_head included) and 21% the attention dots, which read the whole
[B, K, S, hd] cache every step; small_30m batch 16, 88% matmuls and 6% slicing the stacked
layer params into per-layer trees (once per prefill and decode call). The sampler's own work
(sampling, bookkeeping) is a few percent. Before the unrolled cache path, ~47% went to moving
the scan-stacked cache (slices in and out of the layer stack, transposes of the old
[B, S, K, hd] layout); see README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable

import jax
import numpy as np
import torch
import transformers

from rarejax.model import config as model_config
from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.sample import Sampler


def _jax_runner(config: ModelConfig, prompts: np.ndarray, new_tokens: int) -> Callable[[], None]:
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  sampler = Sampler(config, cache_length=prompts.shape[1] + new_tokens + 1,
                    max_batch_size=max(64, len(prompts)))

  def run():
    out = sampler.generate(params, prompts.tolist(), max_new_tokens=new_tokens)
    assert out.mask.all(), "every row must produce exactly new_tokens tokens"
  return run


def _hf_model(config: ModelConfig, max_positions: int) -> torch.nn.Module:
  hf_config = transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.d_model,
      intermediate_size=config.mlp_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, rope_theta=config.rope_theta, rms_norm_eps=config.norm_eps,
      max_position_embeddings=max_positions, tie_word_embeddings=config.tie_embeddings)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(hf_config).eval()
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  return model


def _hf_runner(config: ModelConfig, prompts: np.ndarray, new_tokens: int) -> Callable[[], None]:
  model = _hf_model(config, prompts.shape[1] + new_tokens)
  input_ids = torch.tensor(prompts)
  kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

  def run():
    with torch.inference_mode():
      out = model.generate(**kwargs)
    assert out.shape[1] == prompts.shape[1] + new_tokens
  return run


def _seconds(fn: Callable[[], None]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _bench(preset: str, batch: int, prompt_length: int, new_tokens: int,
           repeats: int) -> dict[str, float]:
  """Best-of-`repeats` wall times, JAX and HF interleaved so both see the same machine load."""
  config = model_config.preset(preset)
  prompts = np.random.default_rng(0).integers(1, config.vocab_size, (batch, prompt_length))
  jax_run = _jax_runner(config, prompts, new_tokens)
  hf_run = _hf_runner(config, prompts, new_tokens)
  jax_first = _seconds(jax_run)  # compiles
  hf_run()  # warm-up
  jax_times, hf_times = [], []
  for _ in range(repeats):
    jax_times.append(_seconds(jax_run))
    hf_times.append(_seconds(hf_run))
  jax_s, hf_s = min(jax_times), min(hf_times)
  tokens = batch * new_tokens
  return {"preset": preset,
          "params": transformer.count_params(transformer.abstract_params(config)),
          "batch": batch, "jax_tok_s": tokens / jax_s, "hf_tok_s": tokens / hf_s,
          "ratio_jax_over_hf": hf_s / jax_s, "jax_seconds": jax_s, "hf_seconds": hf_s,
          "jax_compile_seconds": max(jax_first - jax_s, 0.0)}


def _single_thread() -> None:
  """One compute thread for both frameworks (before JAX creates its CPU client).

  On a shared machine, oversubscribed thread pools make timings erratic (torch's spinning
  OpenMP threads especially); one thread each compares the frameworks per core, stably.
  """
  flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
  torch.set_num_threads(1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", nargs="+", default=["small_7m", "small_30m"])
  parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
  parser.add_argument("--prompt-length", type=int, default=32)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--all-threads", action="store_true",
                      help="use each framework's default thread pools instead of one thread")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
  args = parser.parse_args()
  if not args.all_threads:
    _single_thread()
  load_before = os.getloadavg()
  rows = []
  print(f"{'preset':<10}{'params':>10}{'batch':>6}{'jax tok/s':>11}{'hf tok/s':>10}"
        f"{'jax/hf':>8}{'compile s':>11}")
  for preset in args.presets:
    for batch in args.batches:
      r = _bench(preset, batch, args.prompt_length, args.new_tokens, args.repeats)
      rows.append(r)
      print(f"{preset:<10}{r['params']:>10}{batch:>6}{r['jax_tok_s']:>11.0f}{r['hf_tok_s']:>10.0f}"
            f"{r['ratio_jax_over_hf']:>8.2f}{r['jax_compile_seconds']:>11.1f}", flush=True)
  result = {"rows": rows, "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
            "repeats": args.repeats, "decoding": "greedy, fixed new tokens, fp32",
            "threads": "framework defaults" if args.all_threads else "one per framework",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "jax": jax.__version__, "jax_backend": jax.default_backend(),
                        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                        "transformers": transformers.__version__,
                        "load_average_before": load_before,
                        "load_average_after": os.getloadavg()}}
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "generate.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
