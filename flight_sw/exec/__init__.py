"""Exec: the deterministic time-triggered executive."""
