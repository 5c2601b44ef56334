"""rarejax: RareDxR1 reasoning language models for rare-disease diagnosis, in JAX/Flax."""
