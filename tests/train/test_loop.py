"""Tests for the shared training loop: loss falls, resume equals uninterrupted, NaN guard, SIGTERM."""
import os
import signal

import numpy as np
import pytest

from rarejax.model.config import preset
from rarejax.train import loop, optimizer, writers

CONFIG = preset("tiny_llama")
BATCH, LENGTH = 4, 16


def _batches_from(seed=0, poison_step=None):
  """Deterministic batches of a learnable pattern; batch k depends only on (seed, k)."""
  def batches(start):
    step = start
    while True:
      rng = np.random.default_rng((seed, step))
      base = rng.integers(1, 50, size=(BATCH, 1))
      tokens = (base + np.arange(LENGTH + 1)) % CONFIG.vocab_size  # counting sequences
      batch = {"inputs": tokens[:, :-1].astype(np.int32),
               "targets": tokens[:, 1:].astype(np.int32)}
      if poison_step is not None:  # an 'sft' run whose loss weights turn NaN at poison_step
        weight = np.nan if step == poison_step else 1.0
        batch["loss_weights"] = np.full((BATCH, LENGTH), weight, np.float32)
      yield batch
      step += 1
  return batches


def _train(workdir, num_steps, **kwargs):
  loop_config = loop.LoopConfig(num_steps=num_steps, log_every=1, checkpoint_every=4,
                                async_checkpoints=False,
                                **{k: v for k, v in kwargs.items() if k != "batches_from"})
  opt = optimizer.OptimizerConfig(learning_rate=3e-3, warmup_steps=2, total_steps=100)
  return loop.train(model_config=CONFIG, optimizer_config=opt, loop_config=loop_config,
                    batches_from=kwargs.get("batches_from", _batches_from()), workdir=workdir,
                    progress=False)


def test_loss_falls_and_metrics_are_written(tmp_path):
  result = _train(tmp_path, 12)
  rows = writers.read_metrics(tmp_path)
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert result.stopped == "completed" and result.step == 12 and len(losses) == 12
  assert losses[-1] < losses[0] * 0.8
  assert any("compile/flops" in r for r in rows)
  assert all(r["train/tokens"] == BATCH * LENGTH for r in rows if "train/tokens" in r)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
  straight = _train(tmp_path / "a", 10)
  _train(tmp_path / "b", 6)                       # checkpoint at 4 and at the end (6)
  resumed = _train(tmp_path / "b", 10)            # continues from step 6
  assert resumed.step == 10
  assert resumed.last_metrics["loss"] == straight.last_metrics["loss"]
  again = _train(tmp_path / "b", 10)              # nothing left to do
  assert again.step == 10 and again.stopped == "completed"


def test_resume_after_a_kill_logs_each_step_once(tmp_path):
  _train(tmp_path / "a", 10)
  def dying(start):  # the process dies at step 6, after the step-4 checkpoint
    for step, batch in enumerate(_batches_from()(start), start):
      if step == 6:
        raise KeyboardInterrupt("simulated kill")
      yield batch
  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path / "b", 10, batches_from=dying)
  steps = sorted(int(p.name) for p in (tmp_path / "b" / "checkpoints").iterdir()
                 if p.name.isdigit())
  logged = [r["step"] for r in writers.read_metrics(tmp_path / "b") if "train/loss" in r]
  assert steps[-1] == 4 and logged[-1] > 4  # steps after the checkpoint were logged
  _train(tmp_path / "b", 10)
  losses = {tag: [(r["step"], r["train/loss"]) for r in writers.read_metrics(tmp_path / tag)
                  if "train/loss" in r] for tag in ("a", "b")}
  assert [s for s, _ in losses["b"]] == list(range(1, 11))
  assert losses["b"] == losses["a"]


def test_nonfinite_loss_stops_before_saving(tmp_path):
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 6.*Last good checkpoint: step 4"):
    _train(tmp_path, 10, loss="sft", batches_from=_batches_from(poison_step=5))
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [4]


def test_sigterm_saves_and_stops(tmp_path):
  def batches(start):
    inner = _batches_from()(start)
    for i, batch in enumerate(inner):
      if start + i == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch
  result = _train(tmp_path, 50, batches_from=batches)
  assert result.stopped == "preempted" and result.step == 4
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 4


def test_time_limit_saves_stops_and_resumes(tmp_path):
  stopped = _train(tmp_path, 1000, max_seconds=1e-9)  # past the deadline after the first step
  assert stopped.stopped == "time_limit" and stopped.step == 1 and stopped.start_step == 0
  assert stopped.loop_seconds > 0
  resumed = _train(tmp_path, 3)
  assert resumed.stopped == "completed" and resumed.start_step == 1 and resumed.step == 3
