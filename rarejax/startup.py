"""Quiet command-line start-up: absl/TF/JAX/orbax chatter is hidden unless --verbose.

`rarejax diagnose`, `rarejax evaluate` and `rarejax run` call `configure` before TensorFlow or
JAX is imported. Quiet (the default): TF_CPP_MIN_LOG_LEVEL=2, the absl/TF/JAX/orbax Python loggers
at WARNING, and the warnings nobody can act on dropped (NOISE: TFDS warns 'Using custom data
configuration: <the whole config, every disease id>' for every rarejax dataset, ~100 kB a line
on the full recipe); warnings a user must act on stay. diagnose and evaluate never import
TensorFlow (a model's tokenizer loads through rarejax.tokenizer), so
TensorFlow's native start-up lines, which ignore TF_CPP_MIN_LOG_LEVEL since TF 2.19, never
appear. --verbose leaves every library at its own defaults (TF_CPP_MIN_LOG_LEVEL=0: everything).
Library use (no `configure` call) is not changed.
"""
from __future__ import annotations

import logging
import os

LIBRARY_LOGGERS = ("absl", "tensorflow", "jax", "orbax", "tensorflow_datasets", "seqio")
# Library warnings that say nothing to act on: every rarejax dataset has a custom TFDS config.
NOISE = ("Using custom data configuration",)


def _not_noise(record: logging.LogRecord) -> bool:
  return not str(record.msg).startswith(NOISE)


def configure(verbose: bool) -> None:
  """Sets the start-up verbosity of this process (call before TF/JAX are imported)."""
  if verbose:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    for name in LIBRARY_LOGGERS:
      logging.getLogger(name).removeFilter(_not_noise)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for name in LIBRARY_LOGGERS:
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    logger.addFilter(_not_noise)  # once: a logger keeps one copy of a filter
