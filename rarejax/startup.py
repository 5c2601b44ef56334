"""Quiet command-line start-up: TensorFlow/XLA/absl/CUDA chatter is hidden unless --verbose.

`rarejax diagnose` and `rarejax evaluate` call `configure` before TensorFlow or JAX is imported.
Quiet (the default):
* TF_CPP_MIN_LOG_LEVEL=2 and the absl/TF/JAX/orbax Python loggers at WARNING, so INFO notices
  ('Using custom data configuration', ...) are hidden and warnings stay;
* since TensorFlow 2.19 its native start-up lines ignore TF_CPP_MIN_LOG_LEVEL (tensorflow issue
  100442: 'All log messages before absl::InitializeLog()', the oneDNN notice, 'Could not find
  cuda drivers', 'failed call to cuInit'), so `native_stderr_filtered` catches what native code
  writes to stderr while TensorFlow loads and drops those lines; anything else is passed on.
--verbose leaves every library at its own defaults (TF_CPP_MIN_LOG_LEVEL=0: everything).
Library use (no `configure` call) is not changed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

LIBRARY_LOGGERS = ("absl", "tensorflow", "jax", "orbax", "tensorflow_datasets", "seqio")
# Native start-up lines of TensorFlow/XLA that name nothing a user must act on: the absl
# pre-initialization banner, INFO/WARNING lines of the C++ logger (I0000 …, W0000 …, or
# 'YYYY-MM-DD hh:mm:ss.uuuuuu: I …'), and the errors a machine without a GPU always gets.
START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "
    r"|.*(failed call to cuInit|Unable to register cu\w+ factory"
    r"|Could not find cuda drivers|oneDNN custom operations are on))")

_quiet = False


def configure(verbose: bool) -> None:
  """Sets the start-up verbosity of this process (call before TF/JAX are imported)."""
  global _quiet
  _quiet = not verbose
  if verbose:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for name in LIBRARY_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)


def quiet() -> bool:
  """True when a command asked for a quiet start-up (`configure(verbose=False)`)."""
  return _quiet


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
  """While quiet: native writes to stderr (fd 2) go to a file, then all but START_UP_NOISE lines
  are written to stderr. Otherwise: nothing changes."""
  if not _quiet:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(True)
              if not START_UP_NOISE.match(line)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()
