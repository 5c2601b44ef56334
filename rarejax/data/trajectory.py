"""The trajectory file RERS writes and trajectory SFT reads: one JSON object per line (TF-free).

Schema (UTF-8 JSON Lines; unknown keys are an error, so typos never pass silently):

  case_id       str, required   the training case the trajectory answers
  prompt        str, required   the ORIGINAL prompt (format.build_prompt of the unmasked or
                                masked note — never the reflection hint)
  response      str, required   the kept response: <think>...</think><answer>...</answer>
  gold_ids      [str], required the case's gold disease ids
  task          str             'differential' (default) or 'final' (format.TASKS)
  method        str             how it was obtained: 'rejection' (a correct sample, default)
                                or 'reflection' (a failure continued with feedback)
  teacher       str             the teacher checkpoint (path or name)
  sample_index  int             which of the K samples (default 0)
  reward        float | null    the grader's reward of the response
  kb_digest     str             digest of the knowledge base used for feedback and filtering
  provenance    object          anything else (masked findings, filter verdicts, seeds...)
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Iterable, Mapping

from rarejax.cases import jsonl
from rarejax.cases.case import FrozenMap, thaw
from rarejax.data import format as format_lib

METHODS = ("rejection", "reflection")
REQUIRED = ("case_id", "prompt", "response", "gold_ids")


class TrajectoryFormatError(ValueError):
  """A trajectory line could not be read; names the file:line and the field."""


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """One kept RERS trajectory: the original prompt paired with a correct response."""
  case_id: str
  prompt: str
  response: str
  gold_ids: tuple[str, ...]
  task: str = "differential"
  method: str = "rejection"
  teacher: str = ""
  sample_index: int = 0
  reward: float | None = None
  kb_digest: str = ""
  provenance: Mapping[str, Any] = dataclasses.field(default_factory=FrozenMap)

  def __post_init__(self):
    for name in ("case_id", "prompt", "response", "teacher", "kb_digest"):
      if not isinstance(getattr(self, name), str):
        raise TypeError(f"Trajectory.{name} must be a string, got {getattr(self, name)!r:.80}")
    for name in ("case_id", "prompt", "response"):
      if not getattr(self, name).strip():
        raise ValueError(f"Trajectory.{name} is empty")
    if isinstance(self.gold_ids, str) or not self.gold_ids or not all(
        isinstance(g, str) and g for g in self.gold_ids):
      raise ValueError(f"Trajectory.gold_ids must be a non-empty list of id strings, got "
                       f"{self.gold_ids!r}")
    object.__setattr__(self, "gold_ids", tuple(self.gold_ids))
    if self.task not in format_lib.TASKS:
      raise ValueError(f"Trajectory.task must be one of {format_lib.TASKS}, got {self.task!r}")
    if self.method not in METHODS:
      raise ValueError(f"Trajectory.method must be one of {METHODS}, got {self.method!r}")
    if isinstance(self.sample_index, bool) or not isinstance(self.sample_index, int):
      raise TypeError(f"Trajectory.sample_index must be an int, got {self.sample_index!r}")
    if self.reward is not None:
      object.__setattr__(self, "reward", float(self.reward))
    if not isinstance(self.provenance, FrozenMap):
      object.__setattr__(self, "provenance", FrozenMap(self.provenance))

  def to_json(self) -> dict[str, Any]:
    """Plain dict for json.dumps; `parse_trajectory` inverts it."""
    return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}


_FIELDS = frozenset(f.name for f in dataclasses.fields(Trajectory))


def parse_trajectory(line: str | bytes, where: str) -> Trajectory:
  """One JSONL line → Trajectory; raises TrajectoryFormatError naming `where` (file:line)."""
  try:
    obj = json.loads(line)
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise TrajectoryFormatError(f"{where}: not a JSON object line ({err})") from None
  if not isinstance(obj, dict):
    raise TrajectoryFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  missing = [k for k in REQUIRED if k not in obj]
  if missing:
    raise TrajectoryFormatError(f"{where}: missing required field '{missing[0]}' "
                                f"(required: {', '.join(REQUIRED)})")
  unknown = sorted(set(obj) - _FIELDS)
  if unknown:
    raise TrajectoryFormatError(f"{where}: unknown field '{unknown[0]}' "
                                f"(allowed: {', '.join(sorted(_FIELDS))})")
  if isinstance(obj["gold_ids"], list):
    obj["gold_ids"] = tuple(obj["gold_ids"])
  try:
    return Trajectory(**obj)
  except (TypeError, ValueError) as err:
    raise TrajectoryFormatError(f"{where}: {err}") from None


def read_trajectories(path: str | os.PathLike) -> list[Trajectory]:
  """Reads a trajectory JSONL file (blank lines skipped); any bad line raises, naming file:line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"trajectory file not found: {path}")
  with open(path, "rb") as stream:
    return [parse_trajectory(raw, f"{path}:{n}") for n, raw in enumerate(stream, 1)
            if raw.strip()]


def write_trajectories(trajectories: Iterable[Trajectory], path: str | os.PathLike) -> int:
  """Writes trajectories one JSON object per line (atomically, sorted keys); returns the count."""
  return jsonl.write_json_lines((t.to_json() for t in trajectories), path)
