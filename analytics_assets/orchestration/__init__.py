"""Dagster's view of the analytics sync: assets, checks, automation, resources."""
