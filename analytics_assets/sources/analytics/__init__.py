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

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.configuration.inject import with_config
from dlt.extract.source import DltSource
from dlt.sources import DltResource
from dlt.sources.helpers.requests import Session
from dlt.sources.helpers.rest_client.auth import APIKeyAuth, AuthConfigBase, BearerTokenAuth
from dlt.sources.rest_api import rest_api_resources
from dlt.sources.rest_api.typing import RESTAPIConfig

from analytics_assets.sources.analytics.helpers import (
    ApiResponseError,
    ContractViolation,
    DropJsonHintNotice,
    PagedList,
    SizedPageNumberPaginator,
    arrow_batches,
    build_session,
    conform_to,
    require_list_at,
)
from analytics_assets.sources.analytics.settings import (
    CONCURRENCY,
    DEFAULT_BASE_URL,
    DEFAULT_DIALECT,
    DIALECTS,
    ORGANIZATIONS,
    ORGANIZATIONS_PATH,
    PAGE_PARAM,
    PAGE_SIZE,
    PAGE_SIZE_PARAM,
    PROJECTS,
    PROJECTS_PATH,
    SCHEMA,
    SOURCE_NAME,
    TESTS,
    TESTS_PATH,
)

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


class MissingApiToken(ValueError):
    """No API token is configured; raised before any request is sent."""


API_TOKEN_HELP = (
    "The analytics API token is not configured. Set SOURCES__ANALYTICS__API_TOKEN (or API_TOKEN) "
    "in the environment, or `api_token` under [sources.analytics] in .dlt/secrets.toml "
    "(see .dlt/example.secrets.toml)."
)


def rest_api_config(
    base_url: str,
    api_token: str,
    page_size: int = PAGE_SIZE,
    concurrency: int = CONCURRENCY,
    dialect: str = DEFAULT_DIALECT,
) -> RESTAPIConfig:
    """The seed's rest_api config, corrected where dlt 1.31 needs it (see the README).

    `tests` is a plain dlt resource (see `tests_resource`); organizations and projects stay
    declarative, and the projects of several organizations are fetched in parallel.
    """
    profile = dialect_profile(dialect)
    session = build_session(max_connections=concurrency)
    auth = api_auth(api_token, profile["auth_scheme"])

    def resource(name: str, path: str, **endpoint: Any) -> dict[str, Any]:
        return {
            "name": name,
            "endpoint": {
                "path": path,
                "data_selector": name,
                "response_actions": [require_list_at(name)],
                **endpoint,
            },
            "columns": SCHEMA[name],
            "processing_steps": [{"map": conform_to(name, SCHEMA[name])}],
        }

    return {
        "client": {"base_url": base_url, "auth": auth, "session": session},
        "resource_defaults": {
            "primary_key": "id",
            "write_disposition": "merge",
            # One row per record: arrays and objects stay JSON columns, never child tables.
            "max_table_nesting": 0,
        },
        "resources": [
            resource(ORGANIZATIONS, ORGANIZATIONS_PATH, paginator="single_page"),
            {
                **resource(
                    PROJECTS,
                    PROJECTS_PATH,
                    params={
                        "organization_id": {
                            "type": "resolve",
                            "resource": ORGANIZATIONS,
                            "field": "id",
                        }
                    },
                    paginator=SizedPageNumberPaginator(page_size=page_size),
                ),
                "parallelized": True,
            },
        ],
    }


def dialect_profile(dialect: str) -> dict[str, Any]:
    """The dialect's settings; an unknown name fails naming the setting and the choices."""
    if dialect not in DIALECTS:
        raise ValueError(
            f"SOURCES__ANALYTICS__DIALECT is {dialect!r}; choose one of {', '.join(DIALECTS)}."
        )
    return DIALECTS[dialect]


def api_auth(api_token: str, scheme: str) -> AuthConfigBase:
    """`Authorization: Bearer <token>` (the seed) or `Token <token>` (the k6 dialect)."""
    if scheme == "Bearer":
        return BearerTokenAuth(api_token)
    return APIKeyAuth(name="Authorization", api_key=f"{scheme} {api_token}", location="header")


def tests_resource(
    session: Session,
    base_url: str,
    auth: AuthConfigBase,
    page_size: int,
    concurrency: int,
    dialect: str = DEFAULT_DIALECT,
    projects: DltResource | None = None,
) -> DltResource:
    """`GET /loadtests/v2/tests`, pages of `page_size`, several in flight; per project if asked.

    The seed's tests endpoint, kept out of the declarative config because dlt fetches the pages
    of one endpoint one at a time (12k tests at 32 per page and 30 ms each is 11 s). The list
    comes as Arrow tables, which dlt writes as parquet while it extracts; the per-project lists
    of the k6 dialect stay rows, as each project's list is short.
    """
    profile = dialect_profile(dialect)
    url = f"{base_url}{TESTS_PATH}"
    key = profile["tests_key"]
    conform = conform_to(TESTS, SCHEMA[TESTS])
    hints: dict[str, Any] = {
        "name": TESTS,
        "table_name": TESTS,
        "primary_key": "id",
        "write_disposition": "merge",
        "columns": SCHEMA[TESTS],
        "max_table_nesting": 0,
    }
    if not profile["tests_per_project"]:
        logging.getLogger("dlt").addFilter(_JSON_HINT_NOTICE)

        def tests() -> Iterator[Any]:
            pages = PagedList(session, url, TESTS, key, page_size, concurrency, auth=auth)
            records = ([conform(record) for record in page] for page in pages)
            # dlt adds a load id to Arrow items only under a process-wide setting users can change
            load_id = dlt.current.load_package_state()["load_id"]
            yield from arrow_batches(records, SCHEMA[TESTS], load_id)

        return dlt.resource(tests, **hints)

    if projects is None:
        raise ValueError("the per-project tests list needs the projects resource")

    def tests_of(items: Any) -> Iterator[list[dict[str, Any]]]:
        for project in items if isinstance(items, list) else [items]:
            params = {"project_id": project["id"]}
            # projects already run in parallel: one page at a time within each project
            yield from PagedList(session, url, TESTS, key, page_size, 1, auth=auth, params=params)

    resource = dlt.transformer(tests_of, data_from=projects, parallelized=True, **hints)
    return resource.add_map(conform)


_JSON_HINT_NOTICE = DropJsonHintNotice(TESTS)


@dlt.source(
    name=SOURCE_NAME,
    section=SOURCE_NAME,
    max_table_nesting=0,
    schema_contract={"data_type": "freeze"},
)
def analytics(
    base_url: str = DEFAULT_BASE_URL,
    api_token: str = dlt.secrets.value,
    page_size: int = PAGE_SIZE,
    concurrency: int = CONCURRENCY,
    dialect: str = DEFAULT_DIALECT,
) -> Sequence[DltResource]:
    """Organizations, their projects, and tests, merged on `id`.

    The `freeze` data-type contract is a backstop: records are typed before dlt sees them, so a
    variant column (`x__v_bigint`) would mean a bug, and it fails the load instead of appearing.

    Args:
        base_url: The API's base URL, without a trailing path.
        api_token: The bearer token. Never logged.
        page_size: Items per page for the paginated lists.
        concurrency: Requests in flight at once, at most, across all lists.
        dialect: "seed" (the spec's contract) or "k6" (the real service's legacy API).
    """
    base_url = checked_base_url(base_url)
    config = rest_api_config(base_url, api_token, page_size, concurrency, dialect)
    resources = rest_api_resources(config)
    projects = next(r for r in resources if r.name == PROJECTS)
    client = config["client"]
    tests = tests_resource(
        client["session"], base_url, client["auth"], page_size, concurrency, dialect, projects
    )
    return [*resources, tests]


class InsecureBaseUrl(ValueError):
    """The base URL would send the token in clear text."""


def checked_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; plain http only on loopback (the sample API)."""
    parsed = urlsplit(base_url.strip())
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise InsecureBaseUrl(
            f"SOURCES__ANALYTICS__BASE_URL must be an https:// URL, got {base_url!r}."
        )
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise InsecureBaseUrl(
            f"SOURCES__ANALYTICS__BASE_URL uses plain http ({base_url!r}): the API token would "
            "travel in clear text. Use https://; plain http is allowed only for loopback hosts "
            "such as the bundled sample API."
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def analytics_source(**overrides: Any) -> DltSource:
    """A fresh source with config resolved now; a missing token fails here, before any request."""
    try:
        return analytics(**overrides)
    except ConfigFieldMissingException as e:
        if "api_token" in e.fields:
            raise MissingApiToken(API_TOKEN_HELP) from None
        raise


@with_config(sections=("sources", SOURCE_NAME))
def _api_settings(
    base_url: str = DEFAULT_BASE_URL,
    api_token: str = dlt.secrets.value,
    page_size: int = PAGE_SIZE,
    dialect: str = DEFAULT_DIALECT,
) -> tuple[str, AuthConfigBase, int]:
    auth = api_auth(api_token, dialect_profile(dialect)["auth_scheme"])
    return checked_base_url(base_url), auth, page_size


def upstream_fingerprint(request_timeout: float = 10.0) -> str:
    """A cheap digest of what the API serves now: the organizations and the first page of tests.

    Two requests of at most two attempts each: a poll must be quick, and a failure only means
    "try again at the next poll". A change of `meta` (the API's total, when sent) counts too.
    """
    try:
        base_url, auth, page_size = _api_settings()
    except ConfigFieldMissingException as e:
        if "api_token" in e.fields:
            raise MissingApiToken(API_TOKEN_HELP) from None
        raise
    session = build_session(
        request_max_attempts=2, request_backoff_factor=0.5, request_timeout=request_timeout
    )
    digest = hashlib.sha256()
    for path, params in (
        (ORGANIZATIONS_PATH, {}),
        (TESTS_PATH, {PAGE_PARAM: 1, PAGE_SIZE_PARAM: page_size}),
    ):
        response = session.get(f"{base_url}{path}", params=params, auth=auth)
        response.raise_for_status()
        digest.update(json.dumps(response.json(), sort_keys=True).encode())
    return digest.hexdigest()
