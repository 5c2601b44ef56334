"""KV-cache autoregressive sampler."""
from rarejax.sample.sampler import SampleOutput, Sampler
from rarejax.sample.sampling import sample_tokens
from rarejax.sample.state import SequenceState, StopReason

__all__ = ["SampleOutput", "Sampler", "SequenceState", "StopReason", "sample_tokens"]
