"""KV-cache autoregressive sampler."""
