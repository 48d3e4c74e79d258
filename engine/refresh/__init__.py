"""Refresh: the scheduler and per-dataset refresh."""
