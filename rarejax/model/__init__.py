"""Decoder-only transformer families (Llama, Qwen2, Gemma) in Flax Linen."""
