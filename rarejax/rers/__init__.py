"""Reflection-enhanced reasoning sampling (RERS)."""
