"""Runs the RareDxR1 stages in order, each resumable in its own folder of the workdir.

  workdir/
    config.gin            the parsed gin config of the run (its hash guards the workdir)
    operative_config.gin  what the stages actually used (written after each stage)
    <stage>/              one folder per stage; <stage>/result.json marks it complete
    <stage>/export/       params handed to the next stage (train.checkpoint.export_params)

A stage is a function `stage(ctx: StageContext) -> dict` registered with `register_stage`; its
gin parameters live in the gin scope of its name (e.g. `cpt/train_stage.num_steps`). The
pipeline skips stages whose result.json exists, hands each stage the export of the nearest
earlier stage that produced one, and refuses a workdir created by a different config unless
told to overwrite it. Stages talk to each other only through these folders.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin

from rarejax import atomic_io

StageFn = Callable[["StageContext"], dict]
_STAGES: dict[str, StageFn] = {}
RESULT_FILE = "result.json"
EXPORT_DIR = "export"


class WorkdirConfigMismatch(RuntimeError):
  """The workdir holds a run made with a different config."""


def register_stage(name: str, fn: StageFn) -> None:
  """Makes `fn` runnable as stage `name` (its gin scope)."""
  if name in _STAGES and _STAGES[name] is not fn:
    raise ValueError(f"stage {name!r} is already registered ({_STAGES[name].__name__}).")
  _STAGES[name] = fn


def registered_stages() -> list[str]:
  return sorted(_STAGES)


@dataclasses.dataclass(frozen=True)
class StageContext:
  """What a stage knows: where it writes, and what the earlier stages left."""
  name: str
  workdir: pathlib.Path
  folder: pathlib.Path
  results: dict[str, dict]  # earlier stages' results, in order

  def previous_export(self) -> pathlib.Path | None:
    """Params export of the nearest earlier stage that wrote one."""
    for result in reversed(list(self.results.values())):
      if result.get("export"):
        return pathlib.Path(result["export"])
    return None


def write_json_atomically(path: pathlib.Path, value: Any) -> None:
  """Writes JSON atomically (rarejax.atomic_io): never a half-written file."""
  atomic_io.write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str))


def _config_hash(config: str) -> str:
  lines = [l for l in config.splitlines() if l.strip() and not l.lstrip().startswith("#")]
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _claim_workdir(workdir: pathlib.Path, config: str, overwrite: bool) -> None:
  stored = workdir / "config.gin"
  if stored.is_file() and _config_hash(stored.read_text()) != _config_hash(config):
    if not overwrite:
      raise WorkdirConfigMismatch(
          f"{workdir} was created by a different config (see {stored}); use another workdir, "
          "or pass --overwrite to delete its stages and start again.")
    logging.warning("overwriting %s: its config differs", workdir)
    for child in workdir.iterdir():
      shutil.rmtree(child) if child.is_dir() else child.unlink()
  workdir.mkdir(parents=True, exist_ok=True)
  stored.write_text(config)


@gin.configurable
def run_pipeline(workdir: str | os.PathLike, stages: Sequence[str] = gin.REQUIRED,
                 overwrite: bool = False) -> dict[str, dict]:
  """Runs `stages` in order in `workdir`, skipping completed ones; returns every stage result.

  The workdir is made absolute first, so the paths results record (exports, reports) stay valid
  from any directory, e.g. for an ablation arm that branches from this run elsewhere.
  """
  unknown = [s for s in stages if s not in _STAGES]
  if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; registered: {registered_stages()}.")
  workdir = pathlib.Path(workdir).absolute()
  _claim_workdir(workdir, gin.config_str(), overwrite)
  results: dict[str, dict] = {}
  for name in stages:
    results[name] = run_stage(name, workdir, results)
  return results


def run_stage(name: str, workdir: pathlib.Path, results: dict[str, dict]) -> dict:
  """Runs one stage unless its result.json exists; records wall time and the operative config."""
  folder = workdir / name
  done = folder / RESULT_FILE
  if done.is_file():
    logging.info("stage %s already complete (%s); skipping", name, done)
    return json.loads(done.read_text())
  folder.mkdir(parents=True, exist_ok=True)
  logging.info("stage %s: starting in %s", name, folder)
  start = time.perf_counter()
  with gin.config_scope(name):
    result = dict(_STAGES[name](StageContext(name, workdir, folder, dict(results))))
  result["wall_seconds"] = round(time.perf_counter() - start, 2)
  (workdir / "operative_config.gin").write_text(gin.operative_config_str())
  write_json_atomically(done, result)
  logging.info("stage %s: done in %.1f s", name, result["wall_seconds"])
  return result
