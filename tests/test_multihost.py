"""Multi-host training on localhost: 2 CPU processes joined by jax.distributed (gloo collectives).

Each test launches tests/multihost_worker.py as two processes of one run (per-host input
sharding, checkpoints written and restored by both) next to a single-process reference on the
same global mesh and batches, and checks that both processes agree and match the reference
step for step, and that only process 0 writes metrics.
"""
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.paths import ROOT

WORKER = ROOT / "tests" / "multihost_worker.py"
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _launch(workdir, *args) -> subprocess.Popen:
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen([sys.executable, str(WORKER), "--workdir", str(workdir), *args],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _output(proc: subprocess.Popen) -> str:
  """The process's stdout+stderr once it ended (killed after TIMEOUT_S)."""
  try:
    return proc.communicate(timeout=TIMEOUT_S)[0]
  except subprocess.TimeoutExpired:
    proc.kill()
    return proc.communicate()[0]


def _results(procs: list[subprocess.Popen]) -> list[dict]:
  """The RESULT line of each process; on a failure, the output tails of all of them."""
  outputs = [_output(p) for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n\n".join(
      f"process {i} (exit {p.returncode}):\n{out[-3000:]}"
      for i, (p, out) in enumerate(zip(procs, outputs)))
  return [json.loads(next(l for l in reversed(out.splitlines()) if l.startswith("RESULT "))[7:])
          for out in outputs]


def _losses(workdir) -> dict[int, float]:
  """step -> train/loss of <workdir>/metrics.jsonl; fails if a step was written twice."""
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l]
  steps = [r["step"] for r in rows if "train/loss" in r]
  assert len(steps) == len(set(steps)), f"steps written more than once: {steps}"
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def _run(tmp_path, phases, devices_per_process, mesh, sigterm=None):
  """(results of both processes, reference result, run workdir, reference workdir)."""
  run, reference = tmp_path / "run", tmp_path / "reference"
  common = ["--devices_per_process", str(devices_per_process), "--mesh", mesh,
            "--compilation_cache", str(tmp_path / "cache")]
  coordinator = f"127.0.0.1:{_free_port()}"
  procs = [_launch(run, "--phases", phases, "--num_processes", "2", "--process_id", str(i),
                   "--coordinator", coordinator, *common,
                   *(["--sigterm", sigterm] if sigterm else []))
           for i in range(2)]
  # The reference: one process holding as many devices as both processes, no interruption.
  ref = _launch(reference, "--phases", phases.split(",")[-1], "--devices_per_process",
                str(2 * devices_per_process), "--mesh", mesh)
  try:
    results = _results(procs)
  finally:
    for p in procs:
      p.kill()
  return results, _results([ref])[0], run, reference


def _check_agreement(results, reference_result, run, reference, last_step, exact):
  """Both processes agree; the run's losses equal the reference's (bitwise when `exact`: a sum
  over 2 devices has one order, over 4 the cross-process order differs in the last bits)."""
  first, second = results
  assert [r["process_index"] for r in results] == [0, 1]
  assert all(r["distributed"] and r["process_count"] == 2 for r in results)
  assert first["phases"] == second["phases"]  # the same steps, stops and losses on both hosts
  assert first["phases"][-1]["step"] == last_step
  assert reference_result["process_count"] == 1
  assert reference_result["device_count"] == first["device_count"]
  losses, expected = _losses(run), _losses(reference)
  assert sorted(losses) == list(range(1, last_step + 1))
  assert losses == (expected if exact else pytest.approx(expected, rel=1e-5))
  assert first["phases"][-1]["loss"] == losses[last_step]


def test_two_processes_train_save_and_restore_like_one(tmp_path):
  results, ref, run, reference = _run(tmp_path, phases="3,6", devices_per_process=1,
                                      mesh="1,-1,1")
  _check_agreement(results, ref, run, reference, last_step=6, exact=True)
  assert [(p["step"], p["stopped"]) for p in results[0]["phases"]] == [(3, "completed"),
                                                                       (6, "completed")]
  # Parameters are split over fsdp across both processes; the run restored them at step 3.
  assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [4, 6]


@pytest.mark.slow
def test_sigterm_on_one_host_stops_both_at_one_checkpoint(tmp_path):
  """2 x 2 devices, mesh data=2 x fsdp=2; process 1 alone gets SIGTERM before step 4."""
  results, ref, run, reference = _run(tmp_path, phases="2,12,12", devices_per_process=2,
                                      mesh="2,2,1", sigterm="1:4")
  _check_agreement(results, ref, run, reference, last_step=12, exact=False)
  stopped = results[0]["phases"][1]
  assert stopped["stopped"] == "preempted" and 4 <= stopped["step"] < 12
  assert stopped["loss"] == pytest.approx(_losses(reference)[stopped["step"]], rel=1e-5)


def test_main_joins_the_distributed_run_before_any_stage(monkeypatch, tmp_path):
  from rarejax import main as main_lib, pipeline  # pylint: disable=g-import-not-at-top
  from rarejax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(mesh_lib, "initialize_distributed",
                      lambda *args, **kwargs: calls.append(("join", args, kwargs)))
  monkeypatch.setattr(pipeline, "run_pipeline", lambda *_, **__: calls.append(("run",)) or {})
  tiny = ["--workdir", str(tmp_path), "--gin_file", "experiments/tiny.gin"]
  assert main_lib.main([*tiny, "--coordinator_address", "10.0.0.1:1234", "--num_processes", "4",
                        "--process_id", "2"]) == 0
  assert main_lib.main([*tiny, "--distributed"]) == 0
  assert calls == [("join", ("10.0.0.1:1234", 4, 2), {"auto_detect": False}), ("run",),
                   ("join", (None, None, None), {"auto_detect": True}), ("run",)]
