"""Prompt/answer format and (with TensorFlow) the seqio/TFDS data pipeline.

Importing this package imports nothing. TF-free modules: format (the one prompt/answer format),
corpus (knowledge documents and QA), targets (reference diagnosis responses), trajectory (the
RERS trajectory file), packing (numpy packing into decoder rows). TensorFlow modules, each
importing TF through tf_setup (which hides GPUs/TPUs from TF first): builders (TFDS), vocab,
preprocessors, tasks (seqio registration), batches (get_batches for the train loop), stage
(build everything for a knowledge base) and inspect (python -m rarejax.data.inspect).
"""
