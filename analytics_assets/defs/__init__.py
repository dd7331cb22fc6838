"""Dagster's view of the analytics sync: assets, resources, and (later) checks and automation."""
