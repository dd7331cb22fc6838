"""dlt source for the load-testing analytics API: organizations, projects and tests.

Plain dlt (`python -m analytics_assets.sources.analytics`), configured by dlt (docs/settings.md).
The seed's `rest_api_source` endpoints, selectors, paging, auth, retries and merge on `id` are
kept, as plain resources: dlt pages one endpoint one page at a time (dlt-hub/dlt#2844).
"""

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from ipaddress import ip_address
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration import with_config
from dlt.common.configuration.exceptions import ConfigValueCannotBeCoercedException
from dlt.sources import DltResource
from dlt.sources.helpers.rest_client.auth import APIKeyAuth, BearerTokenAuth

from analytics_assets.sources.analytics.client import ApiClient, ApiError, ListSpec
from analytics_assets.sources.analytics.helpers import arrow_batches, conform_to, unserved
from analytics_assets.sources.analytics.settings import (
    CONCURRENCY,
    DEFAULT_BASE_URL,
    DEFAULT_DIALECT,
    DIALECTS,
    LIMITS,
    ORGANIZATIONS,
    ORGANIZATIONS_PATH,
    PAGE_SIZE,
    PLACEHOLDER_TOKEN,
    PROJECTS,
    PROJECTS_PATH,
    RATE_LIMIT_MAX_WAIT,
    RUNTIME_DEFAULTS,
    SCHEMA,
    SEED_TYPES,
    SOURCE_NAME,
    TESTS,
    TESTS_PATH,
)

__all__ = ["ApiError", "SettingError", "analytics", "configured_client", "from_config"]


class SettingError(ValueError):
    """Settings that cannot work; raised before any request, naming each variable to change."""


def _variable(name: str) -> str:
    section = "RUNTIME" if name.startswith("request_") else "SOURCES__ANALYTICS"
    return f"{section}__{name.upper()}"


def _url_problem(base_url: str) -> str | None:
    url = urlsplit(base_url.strip())
    if base_url.strip().rstrip("/") == DEFAULT_BASE_URL:
        return (
            f"SOURCES__ANALYTICS__BASE_URL is not configured: it is still the placeholder "
            f"{DEFAULT_BASE_URL}. Set it to your analytics API's URL (environment, or "
            "`base_url` under [sources.analytics] in .dlt/config.toml)."
        )
    if url.scheme not in {"http", "https"} or not url.hostname:
        return f"SOURCES__ANALYTICS__BASE_URL must be an https:// URL, got {base_url!r}."
    loopback = url.hostname == "localhost" or _is_ip_loopback(url.hostname)
    if url.scheme == "http" and not loopback:
        return (
            f"SOURCES__ANALYTICS__BASE_URL uses plain http ({base_url!r}): the API token would "
            "travel in clear text. Use https://; plain http is allowed only for loopback hosts "
            "such as the bundled sample API."
        )
    return None


def _is_ip_loopback(host: str) -> bool:
    with suppress(ValueError):
        return ip_address(host).is_loopback
    return False


def api_client(
    base_url: str = DEFAULT_BASE_URL,
    api_token: dlt.TSecretStrValue = "",
    page_size: int = PAGE_SIZE,
    concurrency: int = CONCURRENCY,
    dialect: str = DEFAULT_DIALECT,
    rate_limit_max_wait: float = RATE_LIMIT_MAX_WAIT,
    **runtime: float,
) -> ApiClient:
    """A client for these settings, each checked first: every problem named in one error.

    `runtime` overrides dlt's `runtime.request_*` settings (the seed's retry policy by default).
    """
    problems = [_url_problem(base_url)]
    if not api_token.strip() or api_token.strip() == PLACEHOLDER_TOKEN:
        problems.append(
            "SOURCES__ANALYTICS__API_TOKEN is not configured: it is empty or still the "
            "placeholder of .dlt/example.secrets.toml. Set SOURCES__ANALYTICS__API_TOKEN (or "
            "API_TOKEN) in the environment, or `api_token` under [sources.analytics] in "
            ".dlt/secrets.toml."
        )
    if dialect not in DIALECTS:
        problems.append(
            f"SOURCES__ANALYTICS__DIALECT is {dialect!r}; choose {' or '.join(DIALECTS)}."
        )
    values: dict[str, Any] = dict(
        page_size=page_size, concurrency=concurrency, rate_limit_max_wait=rate_limit_max_wait
    )
    for name, default in RUNTIME_DEFAULTS.items():
        raw = runtime.get(name, dlt.config.get(f"runtime.{name}", str))
        try:
            values[name] = type(default)(default if raw is None else raw)
        except ValueError:
            problems.append(f"{_variable(name)} is {raw!r}, not a number.")
    for name, value in values.items():
        low, high = LIMITS[name]
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems.append(f"{_variable(name)} is {value!r}; it must be {allowed}.")
    if errors := [p for p in problems if p]:
        raise SettingError("The analytics source cannot run:\n- " + "\n- ".join(errors))
    scheme = DIALECTS[dialect]["auth_scheme"]
    auth = (
        BearerTokenAuth(api_token)
        if scheme == "Bearer"
        else APIKeyAuth(name="Authorization", api_key=f"{scheme} {api_token}")
    )
    return ApiClient(base_url.rstrip("/"), auth, DIALECTS[dialect]["tests_key"], **values)


# The same settings from dlt's config, for a client outside a sync (the change sensor's poll).
configured_client = with_config(api_client, sections=("sources", SOURCE_NAME))


T = TypeVar("T")


def from_config(factory: Callable[..., T], **overrides: Any) -> T:
    """`factory(**overrides)` with dlt's config; a value that is not a number names its variable."""
    try:
        return factory(**overrides)
    except ConfigValueCannotBeCoercedException as e:
        kind = {int: "a whole number", float: "a number"}.get(e.hint, f"of type {e.hint}")
        raise SettingError(f"{_variable(e.field_name)} is {e.field_value!r}, not {kind}.") from None


# One row per record: the seed's arrays and objects stay JSON columns, never child tables.
HINTS: dict[str, Any] = {"primary_key": "id", "max_table_nesting": 0}
# Merge on id; the source serves each id once, so dlt need not deduplicate what it loads.
MERGE: Any = {"disposition": "merge", "strategy": "delete-insert", "deduplicated": True}


def _served(
    client: ApiClient,
    table: str,
    selector: str,
    lists: list[ListSpec],
    seen: set[Any],
    relist: Callable[[Any], ListSpec],
    parent: str | None = None,
    within: list[Any] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Each page of `lists`, typed, without repeats; then again the lists of rows not served.

    A stored row this listing did not serve was deleted, or skipped as its list shifted while it
    was paged: its list (by `parent`) is paged once more; the rest goes after the load.
    """
    conform = conform_to(table, SEED_TYPES[table])

    def typed(pages: Iterable[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        for page in pages:
            records = [conform(record) for record in page]
            yield [r for r in records if r["id"] not in seen and not seen.add(r["id"])]

    yield from typed(client.pages(lists, selector))
    missing = unserved(table, parent, seen, within or [])
    yield from typed(client.pages(map(relist, missing), selector, missing_ok=True))


@dlt.source(name=SOURCE_NAME, max_table_nesting=0, schema_contract={"data_type": "freeze"})
def analytics(
    base_url: str = DEFAULT_BASE_URL,
    api_token: dlt.TSecretStrValue = "",
    page_size: int = PAGE_SIZE,
    concurrency: int = CONCURRENCY,
    dialect: str = DEFAULT_DIALECT,
    rate_limit_max_wait: float = RATE_LIMIT_MAX_WAIT,
) -> list[DltResource]:
    """Organizations, their projects, and tests, merged on `id`; rows no longer served go.

    The `freeze` data-type contract is a backstop: records are typed before dlt sees them, so a
    variant column (`x__v_bigint`) would mean a bug, and it fails the load instead of appearing.

    Args:
        base_url: The API's base URL.
        api_token: The API token.
        page_size: Items per page of the paged lists.
        concurrency: Requests in flight at once, at most.
        dialect: `seed` or `k6`.
        rate_limit_max_wait: Seconds one request may wait out 429s.
    """
    # checked at the first request, so the definitions can build this source unconfigured
    settings = (base_url, api_token, page_size, concurrency, dialect, rate_limit_max_wait)
    client = functools.cache(lambda: api_client(*settings))
    profile = DIALECTS.get(dialect, DIALECTS[DEFAULT_DIALECT])
    seen: dict[str, set[Any]] = {PROJECTS: set(), TESTS: set()}

    @dlt.resource(
        name=ORGANIZATIONS, columns=SCHEMA[ORGANIZATIONS], write_disposition=MERGE, **HINTS
    )
    def organizations() -> Iterator[list[dict[str, Any]]]:
        """`GET /v3/organizations`: one answer, the whole list."""
        conform = conform_to(ORGANIZATIONS, SEED_TYPES[ORGANIZATIONS])
        yield [conform(r) for r in client().get_list(ORGANIZATIONS_PATH, ORGANIZATIONS)]

    def projects_of(org_id: Any) -> ListSpec:
        return client().list_spec(PROJECTS_PATH.format(organization_id=org_id))

    @dlt.transformer(
        data_from=organizations,
        name=PROJECTS,
        columns=SCHEMA[PROJECTS],
        write_disposition=MERGE,
        **HINTS,
    )
    def projects(orgs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """`GET /v3/organizations/{organization_id}/projects`, paged, for every organization."""
        lists = [projects_of(o["id"]) for o in orgs]
        yield from _served(
            client(), PROJECTS, PROJECTS, lists, seen[PROJECTS], projects_of, "organization_id"
        )

    tests_hints: dict[str, Any] = dict(
        name=TESTS, columns=SCHEMA[TESTS], write_disposition=MERGE, **HINTS
    )
    selector = profile["tests_key"]

    def tests_of(project_id: Any) -> ListSpec:
        return client().list_spec(TESTS_PATH, project_id=project_id)

    if profile["tests_per_project"]:

        @dlt.transformer(data_from=projects, **tests_hints)
        def tests_per_project(page: list[dict[str, Any]]) -> Iterator[Any]:
            """`GET /loadtests/v2/tests?project_id=`, paged, for each project (the k6 dialect)."""
            ids = [p["id"] for p in page]
            lists = [tests_of(i) for i in ids]
            pages = _served(
                client(), TESTS, selector, lists, seen[TESTS], tests_of, "project_id", ids
            )
            yield from arrow_batches(pages, SEED_TYPES[TESTS])

        return [organizations, projects, tests_per_project]

    @dlt.resource(**tests_hints)
    def tests() -> Iterator[Any]:
        """`GET /loadtests/v2/tests`, paged: one list of every test, as Arrow tables."""
        every_test = client().list_spec(TESTS_PATH)
        pages = _served(client(), TESTS, selector, [every_test], seen[TESTS], lambda _: every_test)
        yield from arrow_batches(pages, SEED_TYPES[TESTS])

    return [organizations, projects, tests]
