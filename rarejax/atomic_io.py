"""Atomic file writes: a temp file in the target's folder renamed into place, never a partial file."""
from __future__ import annotations

import os
import pathlib
import tempfile


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes a file so that readers see the old or the new content, never a partial one."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as stream:
      stream.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
