"""Dual-level curriculum reinforcement learning with DAPO."""
