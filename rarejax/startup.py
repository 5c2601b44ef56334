"""Quiet command-line start-up: absl/TF/JAX/orbax INFO chatter is hidden unless --verbose.

`rarejax diagnose` and `rarejax evaluate` call `configure` before TensorFlow or JAX is imported.
Quiet (the default): TF_CPP_MIN_LOG_LEVEL=2 and the absl/TF/JAX/orbax Python loggers at
WARNING, so INFO notices ('Using custom data configuration', ...) are hidden and warnings stay.
Neither command imports TensorFlow (a model's tokenizer loads through rarejax.tokenizer), so
TensorFlow's native start-up lines, which ignore TF_CPP_MIN_LOG_LEVEL since TF 2.19, never
appear. --verbose leaves every library at its own defaults (TF_CPP_MIN_LOG_LEVEL=0: everything).
Library use (no `configure` call) is not changed.
"""
from __future__ import annotations

import logging
import os

LIBRARY_LOGGERS = ("absl", "tensorflow", "jax", "orbax", "tensorflow_datasets", "seqio")


def configure(verbose: bool) -> None:
  """Sets the start-up verbosity of this process (call before TF/JAX are imported)."""
  if verbose:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for name in LIBRARY_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)
