"""analytics_assets: a Dagster code location that syncs the analytics API into a warehouse."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster import Definitions

    defs: Definitions

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): the plain-dlt entry point and the sample API need no Dagster import.
    if name == "defs":
        from analytics_assets.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])
