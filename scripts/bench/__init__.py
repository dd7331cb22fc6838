"""Helpers for `scripts/bench.py`: the measured variants, process measurement and the report."""
