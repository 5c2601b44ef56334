"""Evaluation: benchmarks, diagnosis methods, grader, metrics and reports (the rankers: rarejax.phenotypes)."""
