"""dlt source for the load-testing analytics API: organizations, projects and tests.

The seed's endpoints, selectors, auth, retries and merge on `id`, as plain resources rather than
`rest_api_source`: dlt fetches the pages of an endpoint one after another (dlt-hub/dlt#2844).
docs/settings.md lists the settings; `python -m analytics_assets` runs it with plain dlt.
"""

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from ipaddress import ip_address
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dlt
import pyarrow as pa
from dlt.common.configuration import with_config
from dlt.common.configuration.exceptions import ConfigValueCannotBeCoercedException
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.sources import DltResource
from dlt.sources.helpers.rest_client.auth import APIKeyAuth

from analytics_assets.sources.analytics import settings as s
from analytics_assets.sources.analytics.helpers import (
    ApiClient,
    ApiError,
    ListSpec,
    SettingError,
    conform_to,
    to_arrow,
)

__all__ = ["ApiError", "ListSpec", "SettingError", "analytics", "configured_client", "from_config"]
T = TypeVar("T")


def _variable(name: str) -> str:
    return f"{'RUNTIME' if name.startswith('request_') else 'SOURCES__ANALYTICS'}__{name.upper()}"


def _problems(base_url: str, api_token: str, dialect: str) -> Iterator[str]:
    url = urlsplit(base_url.strip())
    loopback = url.hostname == "localhost"
    with suppress(ValueError):
        loopback = loopback or ip_address(url.hostname or "").is_loopback
    if base_url.strip().rstrip("/") == s.DEFAULT_BASE_URL:
        yield (
            f"SOURCES__ANALYTICS__BASE_URL is not configured: it is still the placeholder "
            f"{s.DEFAULT_BASE_URL}. Set it to your analytics API's URL (environment, or "
            "`base_url` under [sources.analytics] in .dlt/config.toml)."
        )
    elif url.scheme not in {"http", "https"} or not url.hostname:
        yield f"SOURCES__ANALYTICS__BASE_URL must be an https:// URL, got {base_url!r}."
    elif url.scheme == "http" and not loopback:
        yield (
            f"SOURCES__ANALYTICS__BASE_URL uses plain http ({base_url!r}): the API token would "
            "travel in clear text. Use https://; plain http is allowed only for loopback hosts "
            "such as the bundled sample API."
        )
    if api_token.strip() in ("", s.PLACEHOLDER_TOKEN):
        yield (
            "SOURCES__ANALYTICS__API_TOKEN is not configured: it is empty or still the "
            "placeholder of .dlt/example.secrets.toml. Set SOURCES__ANALYTICS__API_TOKEN (or "
            "API_TOKEN) in the environment, or `api_token` under [sources.analytics] in "
            ".dlt/secrets.toml."
        )
    if dialect not in s.DIALECTS:
        yield f"SOURCES__ANALYTICS__DIALECT is {dialect!r}; choose {' or '.join(s.DIALECTS)}."


def api_client(
    base_url: str = s.DEFAULT_BASE_URL,
    api_token: dlt.TSecretStrValue = "",
    page_size: int = s.PAGE_SIZE,
    concurrency: int = s.CONCURRENCY,
    dialect: str = s.DEFAULT_DIALECT,
    rate_limit_max_wait: float = s.RATE_LIMIT_MAX_WAIT,
    **runtime: float,
) -> ApiClient:
    """A client for these settings, each checked first: every problem named in one error.

    `runtime` overrides dlt's `runtime.request_*` settings (the seed's retry policy by default).
    """
    problems = list(_problems(base_url, api_token, dialect))
    values: dict[str, Any] = dict(
        page_size=page_size, concurrency=concurrency, rate_limit_max_wait=rate_limit_max_wait
    )
    for name, default in s.RUNTIME_DEFAULTS.items():
        raw = runtime.get(name, dlt.config.get(f"runtime.{name}", str))
        try:
            values[name] = type(default)(default if raw is None else raw)
        except ValueError:
            problems.append(f"{_variable(name)} is {raw!r}, not a number.")
    for name, value in values.items():
        low, high = s.LIMITS[name]
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems.append(f"{_variable(name)} is {value!r}; it must be {allowed}.")
    if problems:
        raise SettingError("The analytics source cannot run:\n- " + "\n- ".join(problems))
    dialect_of = s.DIALECTS[dialect]  # its auth scheme: Bearer (the seed's) or Token (k6)
    auth = APIKeyAuth("Authorization", f"{dialect_of['auth_scheme']} {api_token}")
    return ApiClient(base_url.rstrip("/"), auth, dialect_of["tests_key"], **values)


# The same settings from dlt's config, for a client outside a sync (the change sensor's poll).
configured_client = with_config(api_client, sections=("sources", s.SOURCE_NAME))


def from_config(factory: Callable[..., T], **overrides: Any) -> T:
    """`factory(**overrides)` with dlt's config; a value that is not a number names its variable."""
    try:
        return factory(**overrides)
    except ConfigValueCannotBeCoercedException as e:
        kind = {int: "a whole number", float: "a number"}.get(e.hint, f"of type {e.hint}")
        raise SettingError(f"{_variable(e.field_name)} is {e.field_value!r}, not {kind}.") from None


# One row per record (arrays and objects stay JSON columns), merged on id. The source serves each
# id once, so dlt need not deduplicate what it loads.
MERGE: Any = {"disposition": "merge", "strategy": "delete-insert", "deduplicated": True}
HINTS: dict[str, Any] = {"primary_key": "id", "max_table_nesting": 0, "write_disposition": MERGE}
ARROW_ROWS = 256  # rows per Arrow table handed to dlt: bigger tables peak higher (performance.md)


@dlt.source(name=s.SOURCE_NAME, max_table_nesting=0, schema_contract={"data_type": "freeze"})
def analytics(
    base_url: str = s.DEFAULT_BASE_URL,
    api_token: dlt.TSecretStrValue = "",
    page_size: int = s.PAGE_SIZE,
    concurrency: int = s.CONCURRENCY,
    dialect: str = s.DEFAULT_DIALECT,
    rate_limit_max_wait: float = s.RATE_LIMIT_MAX_WAIT,
) -> list[DltResource]:
    """Organizations, their projects, and tests, merged on `id`; rows no longer served go.

    Records are typed before dlt sees them; the `freeze` contract fails a load that would still
    split a column into variants (`x__v_bigint`), which would mean a bug.

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
    client = functools.cache(functools.partial(api_client, *settings))
    seen: defaultdict[str, set[Any]] = defaultdict(set)  # ids served, per table

    def served(
        table: str,
        list_of: Callable[[Any], ListSpec],
        parents: list[Any],
        parent: str = "NULL",
        scoped: bool = False,
    ) -> Iterator[Any]:
        """Each page of the parents' lists, typed, without repeats; then those of rows not served.

        A stored row not served was deleted, or skipped as its list shifted while paged: listing
        its list again tells which. What neither listing served goes after the load. `parent`:
        the column naming a row's list (NULL: one list); `scoped`: only these parents' rows count.
        """
        ids, conform = seen[table], conform_to(table, s.SEED_TYPES[table])

        def listing(parents: Iterable[Any], missing_ok: bool = False) -> Iterator[Any]:
            lists = [list_of(parent) for parent in parents]
            for page in client().pages(lists, missing_ok):
                yield [r for r in map(conform, page) if r["id"] not in ids and not ids.add(r["id"])]

        yield from listing(parents)
        yield from listing(unserved(table, parent, ids, parents if scoped else None), True)
        if not scoped:
            ids.clear()

    @dlt.resource(name=s.ORGANIZATIONS, columns=s.SCHEMA[s.ORGANIZATIONS], **HINTS)
    def organizations() -> Iterator[list[dict[str, Any]]]:
        """Organizations of the analytics account, merged on id.

        Listed by GET /v3/organizations (data selector organizations), in one answer.
        """
        conform = conform_to(s.ORGANIZATIONS, s.SEED_TYPES[s.ORGANIZATIONS])
        yield [conform(r) for r in client().get_list(s.ORGANIZATIONS_PATH, s.ORGANIZATIONS)]

    def projects_of(org_id: Any) -> ListSpec:
        return ListSpec(s.PROJECTS_PATH.format(organization_id=org_id), s.PROJECTS)

    @dlt.transformer(
        data_from=organizations, name=s.PROJECTS, columns=s.SCHEMA[s.PROJECTS], **HINTS
    )
    def projects(orgs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Projects of every organization, merged on id.

        Listed by GET /v3/organizations/{organization_id}/projects (data selector projects), paged.
        """
        yield from served(s.PROJECTS, projects_of, [o["id"] for o in orgs], "organization_id")

    def tests_of(project_id: Any) -> ListSpec:
        params = () if project_id is None else (("project_id", project_id),)
        return ListSpec(s.TESTS_PATH, client().tests_key, params)

    if s.DIALECTS.get(dialect, {}).get("tests_per_project"):

        @dlt.transformer(data_from=projects, name=s.TESTS, columns=s.SCHEMA[s.TESTS], **HINTS)
        def tests_per_project(page: list[dict[str, Any]]) -> Iterator[pa.Table]:
            """Load tests, merged on id; each test's test_run_ids stay a JSON array on its row.

            Listed by GET /loadtests/v2/tests?project_id= for each project (data selector
            k6-tests), paged.
            """
            tests = served(s.TESTS, tests_of, [p["id"] for p in page], "project_id", scoped=True)
            yield from arrow_batches(tests, s.SEED_TYPES[s.TESTS])

        return [organizations, projects, tests_per_project]

    @dlt.resource(name=s.TESTS, columns=s.SCHEMA[s.TESTS], **HINTS)
    def tests() -> Iterator[pa.Table]:
        """Load tests, merged on id; each test's test_run_ids stay a JSON array on its row.

        Listed by GET /loadtests/v2/tests (data selector tests), paged.
        """
        yield from arrow_batches(served(s.TESTS, tests_of, [None]), s.SEED_TYPES[s.TESTS])

    return [organizations, projects, tests]


def unserved(
    table: str, parent: str, served: set[Any], within: Sequence[Any] | None = None
) -> dict[Any, list[Any]]:
    """Stored rows of `table` this sync did not serve (of the parents `within`), by parent id."""
    by_parent: dict[Any, list[Any]] = defaultdict(list)
    if within is not None and not within:
        return by_parent
    with suppress(DatabaseUndefinedRelation), dlt.current.pipeline().sql_client() as client:
        sql = f"SELECT id, {parent} FROM {client.make_qualified_table_name(table)}"
        if within is not None:
            sql += f" WHERE {parent} IN ({', '.join(['%s'] * len(within))})"
        with client.execute_query(sql, *(within or ())) as cursor:
            while rows := cursor.fetchmany(10_000):  # a 10x account is 120,000 rows
                for row_id, parent_id in rows:
                    if row_id not in served:
                        by_parent[parent_id].append(row_id)
    return by_parent


def arrow_batches(
    pages: Iterable[list[dict[str, Any]]], columns: dict[str, str], rows: int = ARROW_ROWS
) -> Iterator[pa.Table]:
    """Typed records as Arrow tables: dlt writes them to parquet as it extracts, no normalizing."""
    batch: list[dict[str, Any]] = []
    for page in pages:
        batch += page
        if len(batch) >= rows:
            yield to_arrow(batch, columns)
            batch = []
    if batch:
        yield to_arrow(batch, columns)
