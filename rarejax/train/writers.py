"""Metric writers for training and evaluation: a JSONL file plus TensorBoard (tensorboardX), process 0 only."""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np

from rarejax import atomic_io


def _plain(value: Any) -> float | int | str:
  value = np.asarray(value).item() if hasattr(value, "shape") or isinstance(value, np.generic) \
      else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep them visible as strings
  return value


class MetricWriter:
  """Writes `{"step": s, **scalars}` lines to <dir>/metrics.jsonl and TensorBoard events to <dir>.

  Only process 0 writes (other processes hold a no-op writer), so a multi-host run produces
  one file. Lines are flushed on every write: a killed run keeps everything logged before.
  """

  def __init__(self, directory: str | os.PathLike, tensorboard: bool = True):
    self.directory = pathlib.Path(directory)
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self._active:
      return
    self.directory.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
    if tensorboard:
      import tensorboardX  # pylint: disable=g-import-not-at-top  (optional, no TensorFlow needed)
      self._tb = tensorboardX.SummaryWriter(str(self.directory), flush_secs=30)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self._active:
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row, sort_keys=True) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in row.items():
        if name != "step" and isinstance(value, (int, float)):
          self._tb.add_scalar(name, value, int(step))

  def rewind(self, step: int) -> None:
    """Drops the JSONL rows logged after `step`: a run resumed from its step-`step` checkpoint
    logs those steps again, and each step keeps one row. (TensorBoard keeps both.)"""
    if not self._active:
      return
    rows = read_metrics(self.directory)
    kept = [row for row in rows if row.get("step", 0) <= step]
    if len(kept) == len(rows):
      return
    self._jsonl.close()
    path = self.directory / "metrics.jsonl"
    atomic_io.write_atomic(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in kept))
    self._jsonl = open(path, "a", encoding="utf-8")

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_metrics(directory: str | os.PathLike) -> list[dict[str, Any]]:
  """Rows of <dir>/metrics.jsonl (empty when absent)."""
  path = pathlib.Path(directory) / "metrics.jsonl"
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
