"""The one place TensorFlow is imported for the data pipeline: hides accelerators from TF first.

JAX owns the GPUs/TPUs; TensorFlow only reads and preprocesses data on the CPU. Every
TF-dependent module of rarejax.data imports `tf` from here (before seqio or tfds), so TF never
initializes a GPU or grabs its memory.
"""
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter quiet

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

ACCELERATOR_TYPES = ("GPU", "TPU")


def hide_accelerators_from_tensorflow() -> None:
  """Makes GPUs/TPUs invisible to TF; raises if TF already initialized one it can see."""
  for device_type in ACCELERATOR_TYPES:
    try:
      tf.config.set_visible_devices([], device_type)
    except RuntimeError as err:  # devices were initialized before this call
      if tf.config.get_visible_devices(device_type):
        raise RuntimeError(
            f"TensorFlow already initialized a {device_type} before rarejax.data could hide it; "
            "import rarejax.data modules before running any TensorFlow op") from err
      logging.debug("TF %s devices already initialized and hidden: %s", device_type, err)


hide_accelerators_from_tensorflow()
