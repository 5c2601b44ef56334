"""Orbax checkpoints of train states (async, keep-N, restore onto any mesh) and params-only exports.

Layout of a train-run directory (orbax CheckpointManager): `<dir>/<step>/state` (the TrainState
arrays) and `<dir>/<step>/metadata` (a JSON dict from the caller: model config, vocabulary,
knowledge version, ...). A params-only export (`export_params`, the hand-off between stages) is
`<dir>/params` + `<dir>/metadata.json`.

Restoring takes the target as ShapeDtypeStructs *with shardings* (`abstract_with_shardings`), so
arrays land directly in the current mesh's layout whatever mesh wrote them. Before reading
arrays the stored parameter shapes are compared with the target; a different architecture
raises CheckpointMismatchError naming the differing parameters. An unreadable or incomplete
step raises CorruptCheckpointError, or, when restoring the latest step, is skipped (with a
warning) in favour of the newest readable one.
"""
import json
import logging
import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from rarejax.train.state import TrainState

PathLike = str | os.PathLike
# Files/folders a finalized step of a Checkpointer always has.
_STEP_ENTRIES = ("_CHECKPOINT_METADATA", "state/_METADATA", "metadata")
# What orbax/tensorstore raise on missing or damaged files.
_READ_ERRORS = (OSError, ValueError, KeyError)


class CheckpointMismatchError(ValueError):
  """The checkpoint holds a different architecture than the requested target."""


class CorruptCheckpointError(RuntimeError):
  """The checkpoint step is incomplete or cannot be read."""


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
    return self._manager.save(
        int(jax.device_get(state.step)), force=force,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                metadata=ocp.args.JsonSave(metadata)))

  def all_steps(self) -> list[int]:
    """Steps present on disk (complete or not), ascending."""
    return sorted(self._manager.all_steps(read=True))

  def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
    """Restores (state, metadata) into `target`'s shapes and shardings.

    Args:
      target: TrainState of ShapeDtypeStructs with shardings (abstract_with_shardings).
      step: the step to restore; None = the newest readable one (corrupt newer steps are
        skipped with a warning).
    """
    self.wait()
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise FileNotFoundError(f"no checkpoints in {self.directory}.")
    for candidate in steps:
      try:
        return self._restore_step(candidate, target)
      except CorruptCheckpointError as e:
        if step is not None:
          raise
        logging.warning("%s; trying an earlier step.", e)
    raise CorruptCheckpointError(f"no readable checkpoint in {self.directory} (tried steps "
                                 f"{steps}).")

  def _restore_step(self, step: int, target: TrainState) -> tuple[TrainState, dict]:
    where = f"checkpoint step {step} in {self.directory}"
    step_dir = self.directory / str(step)
    absent = [e for e in _STEP_ENTRIES if not (step_dir / e).exists()]
    if absent:
      raise CorruptCheckpointError(f"{where} is incomplete or corrupt: missing {absent}.")
    try:
      metadata = self._manager.restore(
          step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]
      stored = self._manager.item_metadata(step)["state"].tree["params"]
    except _READ_ERRORS as e:
      raise CorruptCheckpointError(f"{where} is corrupt: {type(e).__name__}: {e}") from e
    check_params_match(stored, target.params, where, metadata)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except _READ_ERRORS as e:
      raise CorruptCheckpointError(f"{where} is corrupt: {type(e).__name__}: {e}") from e
    return restored["state"], metadata

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
  try:
    metadata = json.loads((directory / "metadata.json").read_text())
    with ocp.StandardCheckpointer() as checkpointer:
      check_params_match(checkpointer.metadata(directory / "params").item_metadata.tree,
                         target, where, metadata)
      return checkpointer.restore(directory / "params", target), metadata
  except CheckpointMismatchError:
    raise
  except _READ_ERRORS as e:
    raise CorruptCheckpointError(f"{where} is incomplete or corrupt: {type(e).__name__}: {e}"
                                 ) from e
