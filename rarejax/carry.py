"""Carries a training stage to an accelerator machine without TensorFlow: prepare a folder here, train from it there.

  python -m rarejax carry prepare --workdir W --gin_file experiments/full_gpu.gin --out gpu_carry
  python -m rarejax carry train --carry gpu_carry --workdir gpu_work --out OUT

`prepare` (the TensorFlow side: seqio, TFDS) runs the experiment's data stage in W (skipped once
complete), tokenizes the stage's Task or Mixture into W's token cache (rarejax.data.token_cache)
and writes the carry folder, replacing one that is there:

  spec.json        the stage's settings (model, optimizer and loop configs, sequence length,
                   batch size, the cached provider's name) and the export metadata (knowledge
                   stamp with the excluded publications, prompt style, answer ranking)
  token_cache/     the provider's tasks (train split) and rates.json in the layout of
                   rarejax.data.cached_batches; tokens stored as uint16 when every id fits;
                   the soft targets of the stage's `train_batches.soft_targets`, when it has
                   them (rarejax.data.soft_targets: ids uint16, probabilities float16), and
                   its ranker hints of `train_batches.ranker_hints` (rarejax.data.ranker_hints)
  tokenizer.model  the SentencePiece model
  pylib/gin/       gin-config (pure Python), which an accelerator image may lack: put pylib on
                   PYTHONPATH there

`train` imports no TensorFlow, seqio or TFDS (rarejax.train, rarejax.model and
rarejax.data.cached_batches only). It trains the stage from the carry in --workdir, resuming
from that folder's checkpoints when it holds some, stops at the stage's step count or at
`LoopConfig.max_seconds` (checkpoint saved: the same command continues), and writes to --out
what an accelerator run can bring back (at most 8 files of at most 16 MiB):

  params-K-of-N.safetensors  every parameter in bfloat16, in files of at most 15 MiB
  tokenizer.model, metadata.json  with the params, a release folder (rarejax.release) that
                   `rarejax evaluate --checkpoint` and `rarejax diagnose --checkpoint` load
  metrics.jsonl    the loop's metrics (rarejax.train.writers)
  train_report.json  steps, why it stopped, tokens/s, MFU, peak device memory, wall time,
                   device and library versions, whether TensorFlow or seqio was imported
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import itertools
import json
import os
import pathlib
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import gin
import jax
import numpy as np

from rarejax import atomic_io, release
from rarejax.data import cached_batches
from rarejax.data import ranker_hints
from rarejax.data import soft_targets
from rarejax.model import transformer
from rarejax.model.config import ModelConfig
from rarejax.train import loop, optimizer
from rarejax.train import stage as train_stage_lib

SPEC_FILE = "spec.json"
TOKENIZER_FILE = release.TOKENIZER_FILE
PYLIB = "pylib"
REPORT_FILE = "train_report.json"
METRICS_FILE = "metrics.jsonl"
# What an accelerator run brings back (the device tool's limits) and what the params may use.
OUT_MAX_FILES = 8
OUT_MAX_BYTES = 64 * 2**20
SHARD_BYTES = 15 * 2**20  # under the 16 MiB a returned file may have, safetensors header included
OUT_SMALL_FILES = (TOKENIZER_FILE, "metadata.json", METRICS_FILE, REPORT_FILE)
SMALL_FILES_BYTES = 2 * 2**20  # room kept for metadata, metrics and report beside the tokenizer
# Vendor dense bf16 peaks in FLOP/s, by a substring of jax's device_kind (MFU's denominator).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
NO_TF_MODULES = ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text")


def _token_dtype(tokens: np.ndarray) -> np.dtype:
  return np.dtype(np.uint16) if not len(tokens) or int(tokens.max()) < 2**16 else tokens.dtype


def write_token_cache(data_dir: pathlib.Path, provider: str, out: pathlib.Path,
                      soft: soft_targets.SoftTargets | None = None,
                      hints: ranker_hints.RankerHints | None = None) -> None:
  """Copies the train split of the provider's cached tasks and its rates.json into
  out/token_cache (cached_batches layout), token ids as uint16 where they fit, and the splits'
  soft targets of the `soft` settings and ranker hints of the `hints` settings (copy_compact of
  rarejax.data.soft_targets and rarejax.data.ranker_hints)."""
  rates = cached_batches.read_rates(data_dir, provider)
  for task in rates:
    source = cached_batches.split_dir(data_dir, task, "train")
    split = cached_batches.open_split(source)
    folder = cached_batches.split_dir(out, task, "train")
    folder.mkdir(parents=True)
    for f in cached_batches.FEATURES:
      tokens = split.tokens[f]
      np.save(folder / f"{f}.npy", np.asarray(tokens, _token_dtype(tokens)))
      np.save(folder / f"{f}_offsets.npy", split.offsets[f])
    (folder / cached_batches.META).write_text(json.dumps(split.meta, indent=1))
    if soft is not None:
      soft_targets.copy_compact(source, folder, soft)
    if hints is not None:
      ranker_hints.copy_compact(source, folder, hints)
  path = cached_batches.rates_path(out, provider)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(rates, indent=1, sort_keys=True))


def write_carry(out: str | os.PathLike, *, data_dir: pathlib.Path, provider: str, settings,
                metadata: dict[str, Any], vocabulary: pathlib.Path, stage: str,
                source: dict[str, Any], max_bytes: int,
                soft: soft_targets.SoftTargets | None = None,
                hints: ranker_hints.RankerHints | None = None) -> int:
  """Writes the carry folder (module docstring) from a built token cache and a stage's
  settings (rarejax.train.stage.StageSettings); returns its size in bytes. Raises ValueError,
  writing nothing, when it would exceed `max_bytes`."""
  out = pathlib.Path(out).absolute()
  with atomic_io.replaced_folder(out, max_bytes, "the carry",
                                 "train on fewer tasks or shorter data") as staging:
    write_token_cache(data_dir, provider, staging, soft, hints)
    shutil.copyfile(vocabulary, staging / TOKENIZER_FILE)
    shutil.copytree(pathlib.Path(gin.__file__).parent, staging / PYLIB / "gin",
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec = {"stage": stage, "provider": provider,
            "sequence_length": settings.sequence_length, "batch_size": settings.batch_size,
            "model_config": settings.model_config.to_dict(),
            "optimizer_config": dataclasses.asdict(settings.optimizer_config),
            "loop_config": dataclasses.asdict(settings.loop_config),
            "metadata": {**metadata, "vocabulary": TOKENIZER_FILE}, "source": source,
            "soft_targets": dataclasses.asdict(soft) if soft is not None else None,
            "ranker_hints": dataclasses.asdict(hints) if hints is not None else None}
    (staging / SPEC_FILE).write_text(json.dumps(spec, indent=1, ensure_ascii=False))
  return atomic_io.folder_bytes(out)


def prepare(workdir: str | os.PathLike, gin_files: Sequence[str], gin_bindings: Sequence[str],
            out: str | os.PathLike, stage: str = "sft", max_mib: float = 60.0) -> dict[str, Any]:
  """The TensorFlow half: data stage, token cache, carry folder (module docstring)."""
  # TensorFlow and seqio come in with these; the train half never imports them.
  from rarejax import main as main_lib  # pylint: disable=import-outside-toplevel
  from rarejax import experiment, pipeline  # pylint: disable=import-outside-toplevel
  from rarejax.train import pipeline_stage as train_stages  # pylint: disable=g-import-not-at-top
  from rarejax.data import token_cache  # pylint: disable=import-outside-toplevel
  main_lib.parse_config(gin_files, gin_bindings)
  workdir = pathlib.Path(workdir).absolute()
  pipeline.run_pipeline(workdir, stages=["data"])
  kb, data, names = experiment.experiment_data(workdir)
  vocabulary = data.vocabulary()
  with gin.config_scope(stage):
    settings = train_stage_lib.stage_settings(vocabulary.vocab_size)
    train_input = train_stages.train_input()
    soft, hints = train_input.soft_targets, train_input.ranker_hints
    metadata = {**experiment.export_metadata(kb, data), **train_stages.hints_metadata()}
  provider = token_cache.build_cache(train_stages.training_provider(names, settings.rates),
                                     data.data_dir)
  if soft is not None:
    train_stages.build_soft_targets(data.data_dir, provider, soft,
                                    train_stages.experiment_soft_sources(kb, data, names))
  if hints is not None:
    train_stages.build_ranker_hints(data.data_dir, provider, hints,
                                    train_stages.experiment_soft_sources(kb, data, names))
  size = write_carry(out, data_dir=data.data_dir, provider=provider, settings=settings,
                     metadata=metadata, vocabulary=data.vocabulary_path,
                     stage=stage, source={"workdir": str(workdir), "gin_files": list(gin_files),
                                          "gin_bindings": list(gin_bindings)},
                     max_bytes=int(max_mib * 2**20), soft=soft, hints=hints)
  params = transformer.count_params(transformer.abstract_params(settings.model_config))
  return {"carry": str(pathlib.Path(out).absolute()), "carry_mib": size / 2**20,
          "provider": provider, "params": params, "export_mb": 2 * params / 1e6,
          "steps": settings.loop_config.num_steps,
          "batch": [settings.batch_size, settings.sequence_length]}


def read_spec(carry: pathlib.Path) -> dict[str, Any]:
  """The carry's spec.json; a folder without one is not a carry (FileNotFoundError)."""
  path = carry / SPEC_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{carry} is not a carry folder ({SPEC_FILE} missing): build it "
                            "with `python -m rarejax carry prepare`")
  return json.loads(path.read_text())


def configs(spec: dict[str, Any]
            ) -> tuple[ModelConfig, optimizer.OptimizerConfig, loop.LoopConfig]:
  """The stage's model, optimizer and loop configs; the loop writes no TensorBoard events
  (metrics.jsonl is what comes back, and tensorboardX may be missing)."""
  loop_fields = {**spec["loop_config"], "mesh_shape": tuple(spec["loop_config"]["mesh_shape"]),
                 "tensorboard": False}
  return (ModelConfig(**spec["model_config"]),
          optimizer.OptimizerConfig(**spec["optimizer_config"]), loop.LoopConfig(**loop_fields))


def check_return_limits(model_config: ModelConfig, carry: pathlib.Path) -> int:
  """Number of params files the export will have; ValueError, before any training, when the
  export could not come back (more than OUT_MAX_FILES files or OUT_MAX_BYTES in all)."""
  leaves = jax.tree_util.tree_flatten_with_path(transformer.abstract_params(model_config))[0]
  sizes = {release.tensor_name(path): int(np.prod(leaf.shape)) * 2  # bfloat16
           for path, leaf in leaves}
  shards = len(release.shard_groups(sizes, SHARD_BYTES))
  files = shards + len(OUT_SMALL_FILES)
  total = sum(sizes.values()) + (carry / TOKENIZER_FILE).stat().st_size + SMALL_FILES_BYTES
  if files > OUT_MAX_FILES or total > OUT_MAX_BYTES:
    raise ValueError(f"the export of this model would be {files} files and {total / 2**20:.1f} "
                     f"MiB; at most {OUT_MAX_FILES} files and {OUT_MAX_BYTES / 2**20:.0f} MiB come "
                     "back from an accelerator run: shrink the model (ModelConfig)")
  return shards


def prefetched(batches: Iterator[Any], depth: int = 16) -> Iterator[Any]:
  """`batches` in order, produced ahead by a background thread, so packing the next batches
  on the host overlaps the device's step; an error in the producer is raised here."""
  buffer: queue.Queue = queue.Queue(depth)
  done = object()

  def produce() -> None:
    try:
      for batch in batches:
        buffer.put((batch, None))
      buffer.put((done, None))
    except Exception as error:  # pylint: disable=broad-except  (handed to the consumer)
      buffer.put((None, error))

  threading.Thread(target=produce, daemon=True, name="prefetch").start()
  while True:
    batch, error = buffer.get()
    if error is not None:
      raise error
    if batch is done:
      return
    yield batch


def _peak_flops() -> float | None:
  kind = jax.devices()[0].device_kind
  return next((peak for name, peak in PEAK_FLOPS.items() if name in kind), None)


def _peak_memory() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _versions() -> dict[str, str]:
  out = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "absent"
  return out


def train(carry: str | os.PathLike, workdir: str | os.PathLike, out: str | os.PathLike,
          progress: bool = True) -> dict[str, Any]:
  """The TensorFlow-free half: trains the carried stage in `workdir` (resuming) and writes the
  export, metrics and report to `out` (module docstring); returns the report."""
  called = time.perf_counter()
  carry, workdir, out = (pathlib.Path(p).absolute() for p in (carry, workdir, out))
  spec = read_spec(carry)
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out} is not empty: give train an empty or new --out folder")
  model_config, optimizer_config, loop_config = configs(spec)
  shards = check_return_limits(model_config, carry)
  length, batch_size = spec["sequence_length"], spec["batch_size"]

  soft = spec.get("soft_targets")
  soft = soft_targets.SoftTargets(**soft) if soft else None
  hints = spec.get("ranker_hints")
  hints = ranker_hints.RankerHints(**hints) if hints else None

  def batches_from(start: int) -> Iterator[dict[str, np.ndarray]]:
    stream = cached_batches.cached_batches(carry, spec["provider"], length, batch_size,
                                           seed=loop_config.seed, soft=soft, hints=hints)
    return prefetched(itertools.islice(stream, start, None))

  metadata = {**spec["metadata"], "model_config": model_config.to_dict()}
  result = loop.train(model_config=model_config, optimizer_config=optimizer_config,
                      loop_config=loop_config, batches_from=batches_from, workdir=workdir,
                      metadata=metadata, progress=progress)
  out.mkdir(parents=True, exist_ok=True)
  release.write_params(jax.device_get(result.state.params), out, SHARD_BYTES)
  shutil.copyfile(carry / TOKENIZER_FILE, out / TOKENIZER_FILE)
  training = {"stage": spec["stage"], "step": result.step, "num_steps": loop_config.num_steps,
              "stopped": result.stopped, "device": jax.devices()[0].device_kind}
  (out / "metadata.json").write_text(json.dumps({**metadata, "training": training}, indent=1,
                                                ensure_ascii=False))
  shutil.copyfile(workdir / METRICS_FILE, out / METRICS_FILE)
  steps = result.step - result.start_step
  seconds = result.loop_seconds
  flops = transformer.train_step_flops(model_config, batch_size, length, loop_config.loss_positions)
  peak = _peak_flops()
  rate = steps / seconds if steps and seconds > 0 else None
  report = {
      **training, "start_step": result.start_step, "steps_this_run": steps,
      "loop_seconds": seconds, "wall_seconds": time.perf_counter() - called,
      "batch": [batch_size, length], "params": transformer.count_params(
          transformer.abstract_params(model_config)), "params_files": shards,
      "tokens_per_second": rate and rate * batch_size * length,
      "flops_per_step": flops, "peak_flops": peak,
      "mfu": rate and peak and rate * flops / peak,
      "peak_device_memory_bytes": _peak_memory(),
      "last_metrics": result.last_metrics, "platform": jax.default_backend(),
      "versions": _versions(),
      "imported": sorted(m for m, module in sys.modules.items()
                         if module is not None and m.split(".")[0] in NO_TF_MODULES)}
  (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
  return report


def main(argv: Sequence[str] | None = None) -> int:
  from rarejax import main as main_lib  # pylint: disable=import-outside-toplevel  (TF-free)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)
  prep = commands.add_parser("prepare", help="data stage, token cache and carry folder (needs TF)")
  prep.add_argument("--workdir", required=True, help="the experiment's workdir (data stage)")
  prep.add_argument("--gin_file", action="append", default=[], required=True)
  prep.add_argument("--gin_bindings", action="append", default=[])
  prep.add_argument("--stage", default="sft", help="the training stage to carry (its gin scope)")
  prep.add_argument("--out", required=True, help="the carry folder (replaced)")
  prep.add_argument("--max_mib", type=float, default=60.0, help="refuse a larger carry")
  tr = commands.add_parser("train", help="train from a carry folder (no TensorFlow)")
  tr.add_argument("--carry", required=True)
  tr.add_argument("--workdir", required=True, help="checkpoints and metrics; rerun to resume")
  tr.add_argument("--out", required=True, help="an empty folder: export, metrics, report")
  args = parser.parse_args(argv)
  main_lib.configure_logging(verbose=False)
  if args.command == "prepare":
    try:
      result = prepare(args.workdir, args.gin_file, args.gin_bindings, args.out, args.stage,
                       args.max_mib)
    except main_lib.ConfigError as err:
      print(err, file=sys.stderr)
      return 2
  else:
    result = train(args.carry, args.workdir, args.out)
  print(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
