"""Prompt/answer format and (with TensorFlow) the seqio/TFDS data pipeline.

Importing this package imports nothing. TF-free modules: format (the one prompt/answer format),
corpus (knowledge documents and QA), targets (reference diagnosis responses), trajectory (the
RERS trajectory file), packing (numpy packing into decoder rows), cached_batches (packed
batches streamed from the token cache: what the training stages read). TensorFlow modules, each
importing TF through tf_setup (which hides GPUs/TPUs from TF first): builders (TFDS), vocab
(seqio vocabularies; inference reads the same tokenizer files through the TF-free
rarejax.tokenizer), preprocessors, tasks (seqio registration), token_cache (tokenizes a task
once into the cache), batches (get_batches: the live seqio pipeline, for RL, evaluation and
tests), stage (build everything for a knowledge base) and inspect (python -m
rarejax.data.inspect).
"""
