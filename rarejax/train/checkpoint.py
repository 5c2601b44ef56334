"""Orbax checkpoints of train states (async, keep-N, restore onto any mesh) and params-only exports.

Layout of a train-run directory (orbax CheckpointManager): `<dir>/<step>/state` (the TrainState
arrays) and `<dir>/<step>/metadata` (a JSON dict from the caller: model config, vocabulary,
knowledge version, ...). A params-only export (`export_params`, the hand-off between stages) is
`<dir>/params` + `<dir>/metadata.json`.

Restoring takes the target as ShapeDtypeStructs *with shardings* (`abstract_with_shardings`), so
arrays land directly in the current mesh's layout whatever mesh wrote them. Before reading
arrays the stored parameter shapes are compared with the target; a different architecture
raises CheckpointMismatchError naming the differing parameters; after reading, every array is
compared with a fingerprint saved in the metadata (`fingerprints`: catches flipped bytes, which
the storage format itself does not notice). An unreadable, incomplete or damaged step raises
CorruptCheckpointError, or, when restoring the latest step, is skipped (with a warning) in
favour of the newest readable one, and moved aside ('<step>.unreadable-<time>') so that the
resumed run can save that step again.
"""
import contextlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rarejax.train.state import TrainState

PathLike = str | os.PathLike
# Files/folders a finalized step of a Checkpointer always has.
_STEP_ENTRIES = ("_CHECKPOINT_METADATA", "state/_METADATA", "metadata")
# Metadata entry written by save and checked (then removed) by restore.
_FINGERPRINTS = "_state_fingerprints"
# What orbax/tensorstore raise on missing or damaged files; damaged array data surfaces as a
# bare Exception wrapping tensorstore's error (matched by exact type, so real bugs still raise).
_READ_ERRORS = (OSError, ValueError, KeyError)


class CheckpointMismatchError(ValueError):
  """The checkpoint holds a different architecture than the requested target."""


class CorruptCheckpointError(RuntimeError):
  """The checkpoint step is incomplete or cannot be read."""


def _first_line(error: BaseException) -> str:
  return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


@contextlib.contextmanager
def _read_errors_as_corrupt(problem: str) -> Iterator[None]:
  """Re-raises read failures of damaged or missing files as CorruptCheckpointError(problem: ...)."""
  try:
    yield
  except CheckpointMismatchError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (filtered below)
    if not isinstance(e, _READ_ERRORS) and type(e) is not Exception:
      raise
    reported = e.__cause__ if type(e) is Exception and e.__cause__ else e  # tensorstore's error
    raise CorruptCheckpointError(f"{problem}: {_first_line(reported)}") from e


@jax.jit
def _bit_sums(tree: Any) -> Any:
  """Per leaf: the sum of its raw bits read as unsigned words, modulo 2**32 (uint32 scalars).

  Integer sums do not round, so they are the same for any mesh or reduction order (a state
  restored onto another mesh matches), and any single flipped bit changes them.
  """
  def bit_sum(x):
    if x.dtype.itemsize >= 4:  # 8-byte values become pairs of words
      words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    else:
      words = jax.lax.bitcast_convert_type(
          x, {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]).astype(jnp.uint32)
    return jnp.sum(words, dtype=jnp.uint32)
  return jax.tree.map(bit_sum, tree)


def fingerprints(tree: Any) -> dict[str, int]:
  """{leaf path: bit-sum fingerprint} of a pytree of arrays (detects silently damaged data)."""
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(_bit_sums(tree)))[0]
  return {jax.tree_util.keystr(path): int(value) for path, value in flat}


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (what restore places arrays into)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract, shardings)


def _param_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'a/b/c': shape} for a params tree of arrays, ShapeDtypeStructs or orbax metadata."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
          for path, leaf in flat}


def check_params_match(stored: Any, target: Any, where: str, metadata: dict[str, Any]) -> None:
  """Raises CheckpointMismatchError listing params whose presence or shape differ."""
  stored, target = _param_shapes(stored), _param_shapes(target)
  problems = [f"{p}: checkpoint {stored[p]} vs expected {target[p]}"
              for p in sorted(stored.keys() & target.keys()) if stored[p] != target[p]]
  problems += [f"{p}: missing in checkpoint" for p in sorted(target.keys() - stored.keys())]
  problems += [f"{p}: not expected" for p in sorted(stored.keys() - target.keys())]
  if problems:
    config = metadata.get("model_config")
    raise CheckpointMismatchError(
        f"{where} holds a different architecture: {'; '.join(problems[:6])}"
        f"{' ...' if len(problems) > 6 else ''}"
        f"{f'. Its model_config: {config}' if config else ''}")


class Checkpointer:
  """Saves and restores TrainStates with JSON metadata in one run directory."""

  def __init__(self, directory: PathLike, max_to_keep: int = 3, async_save: bool = True):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "metadata": ocp.JsonCheckpointHandler()})

  def save(self, state: TrainState, metadata: dict[str, Any], force: bool = False) -> bool:
    """Starts saving `state` at step state.step (returns once arrays are copied off device).

    Args:
      state: the TrainState; it may be donated to the next step as soon as this returns.
      metadata: JSON-serializable dict (model_config, vocab, knowledge version, ...).
      force: save even if the manager's policy would skip this step.

    Returns:
      Whether a save was started.
    """
    json.dumps(metadata)  # fail now, not in the background thread
    stamped = {**metadata, _FINGERPRINTS: fingerprints(state)}
    return self._manager.save(
        int(jax.device_get(state.step)), force=force,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                metadata=ocp.args.JsonSave(stamped)))

  def all_steps(self) -> list[int]:
    """Steps present on disk (complete or not), ascending."""
    self._manager.reload()  # re-reads the directory (all_steps(read=True) is deprecated)
    return sorted(self._manager.all_steps())

  def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
    """Restores (state, metadata) into `target`'s shapes and shardings.

    Args:
      target: TrainState of ShapeDtypeStructs with shardings (abstract_with_shardings).
      step: the step to restore; None = the newest readable one (unreadable newer steps are
        skipped with a warning and moved aside, so that the run can save those steps again).
    """
    self.wait()
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise FileNotFoundError(f"no checkpoints in {self.directory}.")
    for tried, candidate in enumerate(steps):
      try:
        restored = self._restore_step(candidate, target)
      except CorruptCheckpointError as e:
        if step is not None:
          raise
        logging.warning("%s; trying an earlier step.", e)
        continue
      self._set_aside(steps[:tried])
      return restored
    raise CorruptCheckpointError(f"no readable checkpoint in {self.directory} (tried steps "
                                 f"{steps}).")

  def _restore_step(self, step: int, target: TrainState) -> tuple[TrainState, dict]:
    where = f"checkpoint step {step} in {self.directory}"
    step_dir = self.directory / str(step)
    absent = [e for e in _STEP_ENTRIES if not (step_dir / e).exists()]
    if absent:
      raise CorruptCheckpointError(f"{where} is incomplete or corrupt: missing {absent}.")
    with _read_errors_as_corrupt(f"{where} is corrupt"):
      metadata = self._manager.restore(
          step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]
      stored = self._manager.item_metadata(step)["state"].tree["params"]
      check_params_match(stored, target.params, where, metadata)
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    saved = metadata.pop(_FINGERPRINTS, None)  # absent in checkpoints of older versions
    if saved is not None:
      found = fingerprints(restored)
      damaged = [path for path, value in saved.items() if found.get(path) != value]
      if damaged:
        raise CorruptCheckpointError(
            f"{where} is corrupt: the data of {', '.join(damaged[:3])}"
            f"{' ...' if len(damaged) > 3 else ''} differs from what was saved (damaged bytes)")
    return restored, metadata

  def _set_aside(self, unreadable: list[int]) -> None:
    """Renames unreadable steps to '<step>.unreadable-<time>' (kept for inspection; they would
    block new saves of the same steps). Process 0 renames; every process waits and re-lists."""
    if not unreadable:
      return
    if jax.process_index() == 0:
      stamp = time.strftime("%Y%m%d-%H%M%S")
      for bad in unreadable:
        aside = self.directory / f"{bad}.unreadable-{stamp}"
        (self.directory / str(bad)).rename(aside)
        logging.warning("checkpoint step %d could not be read; moved to %s", bad, aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"rarejax set aside unreadable steps {unreadable}")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's threads."""
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def export_params(directory: PathLike, params: Any, metadata: dict[str, Any]) -> None:
  """Writes params only (+ metadata.json) for the next stage; synchronous."""
  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "params", params, force=True)
  (directory / "metadata.json").write_text(json.dumps(metadata, indent=1))


def load_params(directory: PathLike, target: Any) -> tuple[Any, dict[str, Any]]:
  """Reads an export_params directory into `target` (ShapeDtypeStructs with shardings)."""
  directory = pathlib.Path(directory).absolute()
  where = f"params export {directory}"
  with _read_errors_as_corrupt(f"{where} is incomplete or corrupt"):
    metadata = json.loads((directory / "metadata.json").read_text())
    with ocp.StandardCheckpointer() as checkpointer:
      check_params_match(checkpointer.metadata(directory / "params").item_metadata.tree,
                         target, where, metadata)
      return checkpointer.restore(directory / "params", target), metadata
