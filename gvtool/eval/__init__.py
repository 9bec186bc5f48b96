"""Evaluation: mode coverage and sample quality metrics."""
