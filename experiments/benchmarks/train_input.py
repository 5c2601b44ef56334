"""Benchmark: an experiment's sft train loop fed by the token cache vs. by seqio vs. the bare step.

Builds (or reuses, with --workdir of a run) the experiment's data and the token cache of its sft
mixture, then runs one child process per variant, round after round, each timing the step loop of
the experiment's model at its sft settings (rarejax.train.stage.stage_settings in the sft scope:
shapes, model, LoopConfig.loss_positions). By default the quickstart
(gin_configs/experiments/quickstart.gin without the held-out phenopacket exclusions, which do not
change the shapes: model vocab 4096, 8 x 768); `--gin_file experiments/full.gin
--workdir RUN` times the full recipe on the data of a run (16 x 512, logits at 256 positions):

  bare    the jitted train step on one fixed cached batch (no input pipeline)
  seqio   the loop fed by rarejax.data.batches.get_batches (TF/seqio tokenizing live)
  cached  the loop fed by rarejax.data.cached_batches (memory-mapped arrays; TF not imported)

The loop is the train loop's order (rarejax.train.loop): dispatch step s, read the metrics of
step s-1, fetch the next batch while step s runs. Each child reports step time, slots/s (B·L per
step), real (non-padding) tokens/s and its peak RSS (VmHWM of /proc/self/status). Children run
with the quickstart's GLIBC_TUNABLES (experiments/quickstart.sh). ratio = variant slots/s /
bare slots/s of the same round; target: cached ≥ 0.8.

Usage (from a worktree that is not the venv's own checkout, prefix PYTHONPATH=.):
  .venv/bin/python experiments/benchmarks/train_input.py                 # 1 round, ~5 min
  .venv/bin/python experiments/benchmarks/train_input.py --rounds 2 --steps 30
  .venv/bin/python experiments/benchmarks/train_input.py --gin_file experiments/full.gin \
      --gin_param= --workdir RUN --out experiments/benchmarks/results/train_input_full.json
Writes experiments/benchmarks/results/train_input.json (or --out) and prints a table.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "train_input.json"
VARIANTS = ("bare", "seqio", "cached")
GLIBC_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                  "glibc.malloc.trim_threshold=100000000000")
GIN_FILES = ["experiments/quickstart.gin"]
GIN_BINDINGS = ["experiment_knowledge.heldout_phenopackets = []"]


def cpu_model() -> str:
  """lscpu's 'Model name'."""
  for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
    if line.startswith("Model name:"):
      return line.split(":", 1)[1].strip()
  return platform.processor()


def peak_rss_gb() -> float:
  """VmHWM of this process, GB."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1e6
  return float("nan")


def experiment_sft(workdir: pathlib.Path, gin_files: list[str], bindings: list[str]) -> dict:
  """Parses the experiment's gin config, builds (or reuses) its data; the sft setup."""
  # TF side only
  from rarejax import experiment, main  # pylint: disable=g-import-not-at-top
  from rarejax.train import pipeline_stage  # pylint: disable=g-import-not-at-top
  from rarejax.train import stage as train_stage  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  main.parse_config(gin_files, bindings)
  _, data, names = experiment.experiment_data(workdir)
  with gin.config_scope("sft"):
    settings = train_stage.stage_settings(data.vocabulary().vocab_size)
  return {"data_dir": str(data.data_dir),
          "task": pipeline_stage.training_provider(names, settings.rates),
          "length": settings.sequence_length, "batch_size": settings.batch_size,
          "loss_positions": settings.loop_config.loss_positions, "gin_files": gin_files,
          "bindings": bindings, "model_config": settings.model_config.to_dict()}


def seqio_stream(setup: dict, workdir: pathlib.Path):
  """The live pipeline (registers the experiment's tasks in this process first)."""
  from rarejax.data import batches  # pylint: disable=g-import-not-at-top
  experiment_sft(workdir, setup["gin_files"], setup["bindings"])
  return batches.get_batches(setup["task"], setup["length"], setup["batch_size"], seed=0)


def cached_stream(setup: dict):
  from rarejax.data import cached_batches  # pylint: disable=g-import-not-at-top
  return cached_batches.cached_batches(setup["data_dir"], setup["provider"], setup["length"],
                                       setup["batch_size"], seed=0)


def time_skip(setup: dict, batches: int) -> float:
  """Seconds to regenerate and skip `batches` cached batches (how batches_from resumes)."""
  import itertools  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  next(itertools.islice(cached_stream(setup), batches, None))
  return time.perf_counter() - start


def time_loop(variant: str, setup: dict, workdir: pathlib.Path, steps: int,
              warmup: int) -> dict:
  """Compiles the sft step, then times `steps` steps fed by the variant's batches."""
  import itertools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from rarejax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from rarejax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top  (the cached and bare children never import TF)
  from rarejax.train import losses, optimizer, state as state_lib, step as step_lib

  start = time.perf_counter()
  if variant == "seqio":
    stream = seqio_stream(setup, workdir)
  else:
    stream = cached_stream(setup)
    if variant == "bare":
      stream = itertools.repeat(next(stream))
  batch = next(stream)
  first_batch_s = time.perf_counter() - start
  config = ModelConfig(**setup["model_config"])
  tx = optimizer.make_optimizer(optimizer.OptimizerConfig(warmup_steps=10, total_steps=1000))
  mesh = mesh_lib.make_mesh()
  shardings = state_lib.train_state_shardings(config, tx, mesh)
  state = state_lib.init_train_state(config, tx, shardings)
  compiled = step_lib.compile_train_step(
      step_lib.make_train_step(config, tx, losses.get_loss("sft"),
                               loss_positions=setup["loss_positions"]), shardings,
      state_lib.abstract_train_state(config, tx), batch, mesh)
  pending, tokens = None, 0
  for step in range(warmup + steps):
    if step == warmup:
      jax.block_until_ready(pending)
      start, tokens = time.perf_counter(), 0
    state, metrics = compiled(state, batch)
    if pending is not None:
      jax.device_get(pending)
    pending = metrics
    tokens += int(np.count_nonzero(batch["segment_ids"]))
    batch = next(stream)
  jax.device_get(pending)
  elapsed = time.perf_counter() - start
  slots = steps * setup["batch_size"] * setup["length"]
  return {"variant": variant, "first_batch_s": first_batch_s, "step_s": elapsed / steps,
          "slots_per_s": slots / elapsed, "tokens_per_s": tokens / elapsed,
          "fill": tokens / slots, "peak_rss_gb": peak_rss_gb(),
          "imported_tensorflow": "tensorflow" in sys.modules,
          "final_loss": float(pending["loss"])}


def run_child(variant: str, setup: dict, args: argparse.Namespace) -> dict:
  env = {**os.environ, "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", GLIBC_TUNABLES)}
  command = [sys.executable, __file__, "--child", variant, "--setup", json.dumps(setup),
             "--workdir", args.workdir, "--steps", str(args.steps), "--warmup", str(args.warmup)]
  out = subprocess.run(command, env=env, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"{variant} child failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/rarejax_bench_train_input")
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--skip", type=int, default=10_000,
                      help="batches a resumed run regenerates and skips (timed once)")
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("--gin_file", action="append",
                      help=f"experiment gin file(s) (default {GIN_FILES})")
  parser.add_argument("--gin_param", action="append",
                      help=f"gin bindings; an empty one clears the default {GIN_BINDINGS}")
  parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument("--setup", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    result = time_loop(args.child, json.loads(args.setup), pathlib.Path(args.workdir),
                       args.steps, args.warmup)
    print(json.dumps(result))
    return

  from rarejax.data import token_cache  # pylint: disable=g-import-not-at-top
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  bindings = [b for b in (args.gin_param or GIN_BINDINGS) if b]
  setup = experiment_sft(pathlib.Path(args.workdir), args.gin_file or GIN_FILES, bindings)
  data_s = time.perf_counter() - start
  start = time.perf_counter()
  setup["provider"] = token_cache.build_cache(setup["task"], setup["data_dir"])
  cache_s = time.perf_counter() - start
  skip_s = time_skip(setup, args.skip)
  rounds = []
  for _ in range(args.rounds):
    runs = {v: run_child(v, setup, args) for v in VARIANTS}
    for run in runs.values():
      run["ratio_to_bare"] = run["slots_per_s"] / runs["bare"]["slots_per_s"]
    rounds.append(runs)
  result = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
            "gin_files": setup["gin_files"], "bindings": setup["bindings"],
            "shape": [setup["batch_size"], setup["length"]],
            "loss_positions": setup["loss_positions"], "task": setup["task"],
            "data_build_or_reuse_s": data_s, "cache_build_or_reuse_s": cache_s,
            "resume_skip": {"batches": args.skip, "seconds": skip_s},
            "steps": args.steps, "rounds": rounds}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1))

  print(f"{result['cpu_model']}; data {data_s:.1f} s, cache build/reuse {cache_s:.1f} s; "
        f"batch {setup['batch_size']} x {setup['length']}, logits at "
        f"{setup['loss_positions'] or 'all'} positions; 1-min load before/after "
        f"{result['load_average_1min_before_after']} (other jobs share the cores)")
  print(f"resume: regenerating and skipping {args.skip} cached batches takes {skip_s:.1f} s")
  print(f"{'round':>5} {'variant':<7} {'step s':>7} {'slots/s':>8} {'tok/s':>7} {'fill':>5} "
        f"{'ratio':>6} {'peak GB':>8} {'1st batch s':>11}")
  for number, runs in enumerate(rounds, 1):
    for v, r in runs.items():
      print(f"{number:>5} {v:<7} {r['step_s']:>7.3f} {r['slots_per_s']:>8.0f} "
            f"{r['tokens_per_s']:>7.0f} {r['fill']:>5.2f} {r['ratio_to_bare']:>6.2f} "
            f"{r['peak_rss_gb']:>8.2f} {r['first_batch_s']:>11.1f}")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
