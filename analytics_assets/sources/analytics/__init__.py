"""dlt source for the load-testing analytics API: organizations, projects and tests.

Plain dlt, runnable without Dagster (`python -m analytics_assets.sources.analytics`). Settings
come from dlt's config system (environment, `.dlt/config.toml`, `.dlt/secrets.toml`):

- `SOURCES__ANALYTICS__BASE_URL`: the API's base URL (default `https://api.example.com`).
- `SOURCES__ANALYTICS__API_TOKEN` (also `API_TOKEN`, or `api_token` in secrets.toml): the bearer
  token. Required.
- `SOURCES__ANALYTICS__PAGE_SIZE`: items per page for projects and tests (default 32).
- `SOURCES__ANALYTICS__CONCURRENCY`: requests in flight at once, at most (default 4).
- `SOURCES__ANALYTICS__DIALECT`: `seed` (default) or `k6`, the real service's legacy API.
- `RUNTIME__REQUEST_MAX_ATTEMPTS`, `RUNTIME__REQUEST_BACKOFF_FACTOR`, `RUNTIME__REQUEST_TIMEOUT`:
  the retry policy (default: 4 attempts, i.e. 3 retries, factor 2).
"""

from typing import Any

__all__ = [
    "ApiResponseError",
    "ContractViolation",
    "InsecureBaseUrl",
    "MissingApiToken",
    "analytics",
    "analytics_source",
    "rest_api_config",
    "upstream_fingerprint",
]


def __getattr__(name: str) -> Any:
    """The source's names, imported on first use: dlt's import costs ~0.5 s of every start-up."""
    if name in __all__:
        from analytics_assets.sources.analytics import source

        return getattr(source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
