"""Orbax checkpoints: bitwise resume, keep-N, corrupt/incomplete steps, architecture mismatch,
params-only export, and restore onto a different mesh (8 fake devices, in a subprocess)."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rarejax.model.config import preset
from rarejax.parallel import mesh as mesh_lib
from rarejax.train import checkpoint as ckpt
from rarejax.train import losses, optimizer, state as state_lib, step as step_lib
from tests.paths import ROOT

CONFIG = preset("tiny_llama")
TX = optimizer.make_optimizer(optimizer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0,
                                                        total_steps=100))
METADATA = {"model_config": CONFIG.to_dict(), "vocab": "bytes-256", "knowledge_version": "t1"}


def _batch(seed: int):
  tokens = np.random.default_rng(seed).integers(1, CONFIG.vocab_size, size=(4, 17))
  return {"inputs": jnp.asarray(tokens[:, :-1], jnp.int32),
          "targets": jnp.asarray(tokens[:, 1:], jnp.int32)}


def _target(mesh, config=CONFIG):
  shardings = state_lib.train_state_shardings(config, TX, mesh)
  return shardings, ckpt.abstract_with_shardings(state_lib.abstract_train_state(config, TX),
                                                 shardings)


@pytest.fixture(scope="module")
def run():
  """(mesh, shardings, target, compiled step) of the tiny model on one device."""
  mesh = mesh_lib.make_mesh()
  shardings, target = _target(mesh)
  compiled = step_lib.compile_train_step(
      step_lib.make_train_step(CONFIG, TX, losses.get_loss("lm")), shardings,
      state_lib.abstract_train_state(CONFIG, TX), _batch(0), mesh)
  return mesh, shardings, target, compiled


def _trained_state(run, steps: int):
  _, shardings, _, compiled = run
  state = state_lib.init_train_state(CONFIG, TX, shardings, seed=0)
  for i in range(steps):
    state, _ = compiled(state, _batch(i))
  return state


def test_resumed_run_gives_bitwise_identical_next_loss(run, tmp_path):
  _, _, target, compiled = run
  state = _trained_state(run, 2)
  checkpointer = ckpt.Checkpointer(tmp_path, async_save=True)
  checkpointer.save(state, METADATA)
  saved = jax.device_get(state)
  _, metrics = compiled(state, _batch(2))  # donates `state` while the save may still run
  checkpointer.close()

  with ckpt.Checkpointer(tmp_path) as fresh:
    restored, metadata = fresh.restore(target)
  assert metadata == METADATA
  assert int(restored.step) == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
  _, resumed_metrics = compiled(restored, _batch(2))
  assert float(resumed_metrics["loss"]) == float(metrics["loss"])


def test_keeps_the_newest_n_and_lists_the_disk(run, tmp_path, caplog):
  state = _trained_state(run, 0)
  with ckpt.Checkpointer(tmp_path, max_to_keep=2) as checkpointer:
    for step in range(1, 4):
      checkpointer.save(state.replace(step=jnp.asarray(step, jnp.int32)), METADATA)
    checkpointer.wait()
    assert checkpointer.all_steps() == [2, 3]
    shutil.copytree(tmp_path / "3", tmp_path / "4")  # a step another process wrote
    assert checkpointer.all_steps() == [2, 3, 4]
  assert "deprecated" not in caplog.text  # all_steps(read=True) warned at every call


# A failed tensorstore read leaves an asyncio callback that fires after orbax closes its loop.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_or_incomplete_steps_are_refused_or_skipped(run, tmp_path, caplog):
  _, _, target, _ = run
  state = _trained_state(run, 0)
  with ckpt.Checkpointer(tmp_path, max_to_keep=5) as checkpointer:
    for step in (1, 2):
      checkpointer.save(state.replace(step=jnp.asarray(step, jnp.int32)), METADATA)
    checkpointer.wait()
    shutil.rmtree(tmp_path / "2" / "state" / "d")  # array data of step 2 lost
    (tmp_path / "3").mkdir()  # a step whose save never finished
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"step 2 .* is corrupt"):
      checkpointer.restore(target, step=2)
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"step 3 .* incomplete .*missing"):
      checkpointer.restore(target, step=3)
    restored, _ = checkpointer.restore(target)
  assert int(restored.step) == 1
  assert "step 3" in caplog.text and "step 2" in caplog.text


def test_different_architecture_is_named(run, tmp_path):
  _, shardings, _, _ = run
  state = _trained_state(run, 0)
  _, deeper = _target(mesh_lib.make_mesh(), preset("tiny_llama", num_layers=3))
  with ckpt.Checkpointer(tmp_path) as checkpointer:
    checkpointer.save(state, METADATA)
    with pytest.raises(ckpt.CheckpointMismatchError,
                       match=r"layers/attn/q: checkpoint \(2, 64, 4, 16\) vs expected "
                             r"\(3, 64, 4, 16\).*model_config"):
      checkpointer.restore(deeper)
  ckpt.export_params(tmp_path / "export", state.params, METADATA)
  _, tied = _target(mesh_lib.make_mesh(), preset("tiny_llama", tie_embeddings=True))
  with pytest.raises(ckpt.CheckpointMismatchError, match="lm_head: not expected"):
    ckpt.load_params(tmp_path / "export", tied.params)
  params, metadata = ckpt.load_params(tmp_path / "export",
                                      ckpt.abstract_with_shardings(state.params,
                                                                   shardings.params))
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  assert metadata["knowledge_version"] == "t1"


# --- restore onto a different mesh (runs in an 8-device subprocess) -------------------------

def _main(directory: str) -> None:
  """Saves on mesh (1, 4, 2), restores on other meshes; prints a JSON report."""
  assert jax.device_count() == 8
  shardings, _ = _target(mesh_lib.make_mesh(1, 4, 2))
  state = state_lib.init_train_state(CONFIG, TX, shardings, seed=3)
  saved = jax.device_get(state)
  checkpointer = ckpt.Checkpointer(directory)
  checkpointer.save(state, METADATA)
  report = {}
  for shape in ((2, 2, 2), (8, 1, 1), (1, 1, 1)):
    target_shardings, target = _target(mesh_lib.make_mesh(*shape))
    restored, _ = checkpointer.restore(target)  # waits for the save to finish
    equal = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                         jax.device_get(restored), saved))
    placed = jax.tree.leaves(jax.tree.map(lambda x, s: x.sharding == s, restored,
                                          target_shardings))
    report[str(shape)] = {"bitwise_equal": all(equal), "shardings_match": all(placed),
                          "q_spec": str(restored.params["layers"]["attn"]["q"].sharding.spec)}
  checkpointer.close()
  print("RESULT " + json.dumps(report))


def test_restore_onto_a_different_mesh_is_bitwise_equal(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
  proc = subprocess.run([sys.executable, __file__, str(tmp_path / "run")], env=env,
                        capture_output=True, text=True, timeout=600,
                        cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(next(l for l in proc.stdout.splitlines()
                           if l.startswith("RESULT "))[len("RESULT "):])
  assert set(report) == {"(2, 2, 2)", "(8, 1, 1)", "(1, 1, 1)"}
  for shape, r in report.items():
    assert r["bitwise_equal"] and r["shardings_match"], (shape, r)
  assert report["(2, 2, 2)"]["q_spec"] == "P(None, 'fsdp', 'tensor', None)"


if __name__ == "__main__":
  _main(sys.argv[1])
