"""analytics_assets: a Dagster code location that syncs the analytics API into a warehouse."""

from analytics_assets.definitions import defs

__all__ = ["defs"]
