"""Prompt/answer format and (with TensorFlow) the seqio/TFDS data pipeline."""
