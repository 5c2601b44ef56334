"""Fault injection into training runs: kill -9 during a checkpoint save, damaged checkpoints.

Each faulty run is resumed with the same config and must continue exactly like an uninterrupted
run from the checkpoint it falls back to. Covered elsewhere, not repeated here: SIGTERM saves a
final checkpoint and stops (train/test_loop.test_sigterm_saves_and_stops; on one host of two,
test_multihost), a NaN loss stops before saving (train/test_loop), a damaged step restored
directly by step number raises (train/test_checkpoint), the pipeline resumes mid-stage
(test_pipeline).
"""
import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rarejax.train import checkpoint as ckpt
from rarejax.train import writers
from tests.train.test_loop import _train  # the shared tiny run: checkpoints every 4 steps, keep 2
from tests.paths import ROOT

NUM_STEPS = 10
# orbax leaves an asyncio callback of a failed tensorstore read that fires after its loop closed.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _run_rows(workdir: pathlib.Path) -> tuple[int, dict[int, float]]:
  """(start step, step -> loss) of the last run in workdir (rows after its compile row)."""
  rows = writers.read_metrics(workdir)
  start = max(i for i, r in enumerate(rows) if "compile/flops" in r)
  losses = {r["step"]: r["train/loss"] for r in rows[start:] if "train/loss" in r}
  return rows[start]["step"], losses


def _steps(workdir: pathlib.Path) -> list[str]:
  return sorted(p.name for p in (workdir / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """step -> loss of an uninterrupted run of NUM_STEPS steps."""
  workdir = tmp_path_factory.mktemp("straight")
  _train(workdir, NUM_STEPS)
  return _run_rows(workdir)[1]


@pytest.fixture(scope="module")
def run_to_8(tmp_path_factory):
  """A finished 8-step run (complete checkpoints at steps 4 and 8) to copy and damage."""
  workdir = tmp_path_factory.mktemp("run_to_8")
  _train(workdir, 8)
  assert _steps(workdir) == ["4", "8"]
  return workdir


# --- kill -9 while a checkpoint is being written ---------------------------------------------

def _stall_save_of_step(workdir: pathlib.Path, step: int) -> None:
  """Makes the save of `step` hang inside orbax after its files are written, before it is
  committed, and drops a SAVING marker so the parent knows when to kill."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  write = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def stalled(self, item, directory):
    await write(self, item, directory)
    if pathlib.Path(directory).parent.name.startswith(f"{step}."):  # '<step>.orbax-...-tmp'
      (workdir / "SAVING").write_text(str(directory))
      await asyncio.sleep(3600)
  ocp.JsonCheckpointHandler._save_fn = stalled  # pylint: disable=protected-access


def test_kill_9_during_a_save_resumes_from_the_last_complete_checkpoint(tmp_path, straight):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
  child = subprocess.Popen([sys.executable, __file__, str(tmp_path), "8"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + 300
    while not (tmp_path / "SAVING").exists():
      assert child.poll() is None, child.communicate()[0][-3000:]
      assert time.monotonic() < deadline, "the child never reached the save of step 8"
      time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
  finally:
    child.kill()
    child.communicate()
  assert "8" not in _steps(tmp_path) and "4" in _steps(tmp_path)  # step 8 never committed

  result = _train(tmp_path, NUM_STEPS)
  start, losses = _run_rows(tmp_path)
  assert result.step == NUM_STEPS and start == 4
  assert losses == {s: straight[s] for s in range(5, NUM_STEPS + 1)}  # bitwise
  assert _steps(tmp_path) == ["10", "8"]  # the stale temporary folder was replaced


# --- damaged checkpoints ---------------------------------------------------------------------

def _truncate(path: pathlib.Path) -> None:
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _flip_bytes(path: pathlib.Path) -> None:
  """Inverts 64 bytes in the middle: the file keeps its size and format (silent damage)."""
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  path.write_bytes(bytes(data))


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


DAMAGE = {
    "array data truncated": lambda step: _truncate(_largest_file(step / "state")),
    "array data bytes flipped": lambda step: _flip_bytes(_largest_file(step / "state")),
    "array metadata truncated": lambda step: _truncate(step / "state" / "_METADATA"),
    "json metadata emptied": lambda step: (step / "metadata" / "metadata").write_text(""),
    "commit metadata deleted": lambda step: (step / "_CHECKPOINT_METADATA").unlink(),
}


@pytest.mark.parametrize("damage", [
    "array data truncated", "array data bytes flipped", "json metadata emptied",
    pytest.param("array metadata truncated", marks=pytest.mark.slow),
    pytest.param("commit metadata deleted", marks=pytest.mark.slow)])
def test_damaged_newest_checkpoint_is_skipped_set_aside_and_rewritten(damage, tmp_path, run_to_8,
                                                                       straight, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(run_to_8, workdir)
  DAMAGE[damage](workdir / "checkpoints" / "8")

  result = _train(workdir, NUM_STEPS)
  start, losses = _run_rows(workdir)
  assert result.step == NUM_STEPS and start == 4
  assert losses == {s: straight[s] for s in range(5, NUM_STEPS + 1)}
  assert "checkpoint step 8" in caplog.text and "trying an earlier step" in caplog.text
  assert "is corrupt" in caplog.text or "incomplete" in caplog.text
  if damage == "array data bytes flipped":
    assert "differs from what was saved" in caplog.text
  steps = _steps(workdir)
  assert steps[:2] == ["10", "8"] and steps[2].startswith("8.unreadable-") and len(steps) == 3


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, run_to_8):
  workdir = tmp_path / "run"
  shutil.copytree(run_to_8, workdir)
  for step in ("4", "8"):
    DAMAGE["array metadata truncated"](workdir / "checkpoints" / step)
  with pytest.raises(ckpt.CorruptCheckpointError, match=r"no readable checkpoint .*\[8, 4\]"):
    _train(workdir, NUM_STEPS)
  assert _steps(workdir) == ["4", "8"]  # nothing trained, saved or moved


if __name__ == "__main__":  # the child of the kill -9 test: python test_faults.py WORKDIR STEP
  _stall_save_of_step(pathlib.Path(sys.argv[1]), int(sys.argv[2]))
  _train(pathlib.Path(sys.argv[1]), NUM_STEPS)
