"""Grader, metrics, classical phenotype rankers and evaluation reports."""
