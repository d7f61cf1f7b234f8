"""Metrics and held-out evaluation runs."""
