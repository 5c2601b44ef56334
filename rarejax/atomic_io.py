"""Atomic writes: a temp file or folder beside the target renamed into place, never a partial one."""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator


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


def folder_bytes(folder: str | os.PathLike) -> int:
  """Bytes of every file under `folder`."""
  return sum(p.stat().st_size for p in pathlib.Path(folder).rglob("*") if p.is_file())


@contextlib.contextmanager
def replaced_folder(out: str | os.PathLike, max_bytes: int, what: str,
                    fix: str = "") -> Iterator[pathlib.Path]:
  """Yields an empty staging folder beside `out` (mode 0o755) to write into; on success, it
  replaces `out` only when complete. A staging folder over `max_bytes` raises ValueError naming
  `what` (and `fix`, what to do about it), and nothing is replaced; on any error the staging
  folder is removed."""
  out = pathlib.Path(out).absolute()
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
  staging.chmod(0o755)  # mkdtemp's 0o700 would make the folder unreadable to other users
  try:
    yield staging
    size = folder_bytes(staging)
    if size > max_bytes:
      raise ValueError(f"{what} would be {size / 2**20:.1f} MiB, more than the "
                       f"{max_bytes / 2**20:.0f} MiB allowed" + (f": {fix}" if fix else ""))
    if out.exists():
      shutil.rmtree(out)
    staging.rename(out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
