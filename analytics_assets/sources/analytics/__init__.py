"""dlt source for the load-testing analytics API: organizations, projects and tests.

Plain dlt, runnable without Dagster (`python -m analytics_assets.sources.analytics`). Settings
come from dlt's config system (environment, `.dlt/config.toml`, `.dlt/secrets.toml`):

- `SOURCES__ANALYTICS__BASE_URL`: the API's base URL. Required: the committed placeholder
  `https://api.example.com` is refused.
- `SOURCES__ANALYTICS__API_TOKEN` (also `API_TOKEN`, or `api_token` in secrets.toml): the bearer
  token. Required.
- `SOURCES__ANALYTICS__PAGE_SIZE`: items per page for projects and tests (default 32).
- `SOURCES__ANALYTICS__CONCURRENCY`: requests in flight at once, at most (default 4).
- `SOURCES__ANALYTICS__DIALECT`: `seed` (default) or `k6`, the real service's legacy API.
- `SOURCES__ANALYTICS__RATE_LIMIT_MAX_WAIT`: seconds one request may wait out 429s (default 600).
- `RUNTIME__REQUEST_MAX_ATTEMPTS`, `RUNTIME__REQUEST_BACKOFF_FACTOR`, `RUNTIME__REQUEST_TIMEOUT`,
  `RUNTIME__REQUEST_MAX_RETRY_DELAY`: dlt's retry policy for 5xx and connection errors (default:
  4 attempts, i.e. the seed's 3 retries, factor 2).

The seed describes a `rest_api_source` config. Its endpoints, selectors, page-number paging,
bearer auth, retries and merge on `id` are kept; the lists are plain dlt resources because dlt
fetches the pages of one endpoint one after another (dlt-hub/dlt#2844), 3x slower here.
"""

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)
from dlt.common.configuration.inject import with_config
from dlt.sources import DltResource
from dlt.sources.helpers.rest_client.auth import APIKeyAuth, AuthConfigBase, BearerTokenAuth

from analytics_assets.sources.analytics.client import (
    ApiClient,
    ApiError,
    ApiResponseError,
    ApiUnreachable,
    Page,
    RateLimitExceeded,
    TokenRejected,
    build_session,
)
from analytics_assets.sources.analytics.helpers import (
    ContractViolation,
    DropJsonHintNotice,
    Listing,
    arrow_batches,
    current_load_id,
)
from analytics_assets.sources.analytics.settings import (
    CONCURRENCY,
    DEFAULT_BASE_URL,
    DEFAULT_DIALECT,
    DIALECTS,
    MAX_CONCURRENCY,
    MAX_PAGE_SIZE,
    ORGANIZATIONS,
    ORGANIZATIONS_PATH,
    PAGE_SIZE,
    PLACEHOLDER_TOKEN,
    PROJECTS,
    PROJECTS_PATH,
    RATE_LIMIT_MAX_WAIT,
    REQUEST_BACKOFF_FACTOR,
    REQUEST_MAX_ATTEMPTS,
    SCHEMA,
    SEED_TYPES,
    SOURCE_NAME,
    TESTS,
    TESTS_PATH,
)

__all__ = [
    "ApiError",
    "ApiResponseError",
    "ApiSettings",
    "ApiUnreachable",
    "ContractViolation",
    "InsecureBaseUrl",
    "MissingApiToken",
    "RateLimitExceeded",
    "SettingError",
    "TokenRejected",
    "analytics",
    "api_settings",
    "upstream_fingerprint",
]


class SettingError(ValueError):
    """A setting is missing or out of range; raised before any request is sent."""


class MissingApiToken(SettingError):
    """No API token is configured, or only the example's placeholder."""


class InsecureBaseUrl(SettingError):
    """The base URL would send the token in clear text."""


API_TOKEN_HELP = (
    "Set SOURCES__ANALYTICS__API_TOKEN (or API_TOKEN) in the environment, or `api_token` under "
    "[sources.analytics] in .dlt/secrets.toml (see .dlt/example.secrets.toml)."
)


@dataclass(frozen=True)
class ApiSettings:
    """Everything a sync needs to know about the API, checked once before the first request."""

    base_url: str = DEFAULT_BASE_URL
    api_token: str = field(default="", repr=False)
    page_size: int = PAGE_SIZE
    concurrency: int = CONCURRENCY
    dialect: str = DEFAULT_DIALECT
    rate_limit_max_wait: float = RATE_LIMIT_MAX_WAIT
    request_max_attempts: int = REQUEST_MAX_ATTEMPTS
    request_backoff_factor: float = REQUEST_BACKOFF_FACTOR
    request_timeout: float = 60.0
    request_max_retry_delay: float = 300.0

    @property
    def profile(self) -> dict[str, Any]:
        """The dialect's differences from the seed: the tests key, per-project lists, auth."""
        return DIALECTS[self.dialect]

    def auth(self) -> AuthConfigBase:
        """`Authorization: Bearer <token>` (the seed) or `Token <token>` (the k6 dialect)."""
        scheme = self.profile["auth_scheme"]
        if scheme == "Bearer":
            return BearerTokenAuth(self.api_token)
        return APIKeyAuth(name="Authorization", api_key=f"{scheme} {self.api_token}")

    def client(self) -> ApiClient:
        """A client with its own session and in-flight limit, for one sync or one poll."""
        session = build_session(
            self.concurrency,
            self.request_max_attempts,
            self.request_backoff_factor,
            self.request_timeout,
            self.request_max_retry_delay,
            self.rate_limit_max_wait,
        )
        return ApiClient(session, self.base_url, self.auth(), self.page_size, self.concurrency)


@with_config(sections=("sources", SOURCE_NAME))
def _configured(
    base_url: str = DEFAULT_BASE_URL,
    api_token: str = dlt.secrets.value,
    page_size: int = PAGE_SIZE,
    concurrency: int = CONCURRENCY,
    dialect: str = DEFAULT_DIALECT,
    rate_limit_max_wait: float = RATE_LIMIT_MAX_WAIT,
) -> dict[str, Any]:
    return dict(locals())


def api_settings(**overrides: Any) -> ApiSettings:
    """The settings from dlt's config, checked; each error names the setting to change."""
    try:
        values = {**_configured(), **_runtime_settings(), **overrides}
    except ConfigFieldMissingException as e:
        if "api_token" in e.fields:
            message = f"The analytics API token is not configured. {API_TOKEN_HELP}"
            raise MissingApiToken(message) from None
        raise
    except ConfigValueCannotBeCoercedException as e:
        kinds = {int: "a whole number", float: "a number"}
        kind = kinds.get(e.hint, f"of type {e.hint}")
        raise SettingError(f"{_variable(e.field_name)} is {e.field_value!r}, not {kind}.") from None
    settings = ApiSettings(**values)
    _check(settings)
    return settings


def _runtime_settings() -> dict[str, Any]:
    """Dlt's standard `runtime.request_*` settings, with the seed's retry policy as default."""
    defaults = {
        "request_max_attempts": REQUEST_MAX_ATTEMPTS,
        "request_backoff_factor": REQUEST_BACKOFF_FACTOR,
        "request_timeout": ApiSettings.request_timeout,
        "request_max_retry_delay": ApiSettings.request_max_retry_delay,
    }
    values = {}
    for name, default in defaults.items():
        value = dlt.config.get(f"runtime.{name}", type(default))
        values[name] = default if value is None else value
    return values


def _variable(name: str) -> str:
    section = "RUNTIME" if name.startswith("request_") else "SOURCES__ANALYTICS"
    return f"{section}__{name.upper()}"


def _check(settings: ApiSettings) -> None:
    if not settings.api_token.strip() or settings.api_token.strip() == PLACEHOLDER_TOKEN:
        raise MissingApiToken(
            "The analytics API token is not configured: it is empty or still the placeholder "
            f"of .dlt/example.secrets.toml. {API_TOKEN_HELP}"
        )
    _check_base_url(settings.base_url)
    if settings.dialect not in DIALECTS:
        raise SettingError(
            f"SOURCES__ANALYTICS__DIALECT is {settings.dialect!r}; choose one of "
            f"{', '.join(DIALECTS)}."
        )
    bounds = {
        "page_size": (1, MAX_PAGE_SIZE),
        "concurrency": (1, MAX_CONCURRENCY),
        "rate_limit_max_wait": (0, None),
        "request_max_attempts": (1, None),
        "request_backoff_factor": (0, None),
        "request_timeout": (0.001, None),
        "request_max_retry_delay": (0, None),
    }
    for name, (low, high) in bounds.items():
        value = getattr(settings, name)
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingError(f"{_variable(name)} is {value!r}; it must be {allowed}.")


def _check_base_url(base_url: str) -> None:
    """Plain http only on loopback (the sample API); the committed placeholder is refused."""
    parsed = urlsplit(base_url.strip())
    if base_url.strip().rstrip("/") == DEFAULT_BASE_URL:
        raise SettingError(
            f"SOURCES__ANALYTICS__BASE_URL is not configured: it is still the placeholder "
            f"{DEFAULT_BASE_URL}. Set it to your analytics API's URL (environment, or "
            "`base_url` under [sources.analytics] in .dlt/config.toml)."
        )
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


# One row per record: the seed's arrays and objects stay JSON columns, never child tables.
HINTS: dict[str, Any] = {
    "primary_key": "id",
    "write_disposition": "merge",
    "max_table_nesting": 0,
}


def organizations_resource(client: ApiClient, listing: Listing) -> DltResource:
    """`GET /v3/organizations`, selector `organizations`: one page, the whole list."""

    def organizations() -> Iterator[list[dict[str, Any]]]:
        records = client.get_list(ORGANIZATIONS_PATH, ORGANIZATIONS)
        yield from listing.served([Page(1, records, total=None)])
        listing.close()

    return dlt.resource(organizations, name=ORGANIZATIONS, columns=SCHEMA[ORGANIZATIONS], **HINTS)


def projects_resource(
    client: ApiClient, listing: Listing, organizations: DltResource
) -> DltResource:
    """`GET /v3/organizations/{organization_id}/projects` for each organization, paged."""

    def projects(orgs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        lists = (client.list_spec(PROJECTS_PATH.format(organization_id=o["id"])) for o in orgs)
        yield from listing.served(client.pages(lists, PROJECTS, listing.note_drift))
        listing.close()

    return dlt.transformer(
        projects, data_from=organizations, name=PROJECTS, columns=SCHEMA[PROJECTS], **HINTS
    )


def tests_resource(
    client: ApiClient, listing: Listing, dialect: str, projects: DltResource
) -> DltResource:
    """`GET /loadtests/v2/tests`, paged; in the k6 dialect once per project (`?project_id=`).

    The seed's single list comes as Arrow tables, which dlt writes as parquet while it extracts
    (normalize then only moves files); the k6 dialect's per-project lists are short and stay rows.
    """
    profile = DIALECTS[dialect]
    selector = profile["tests_key"]
    hints = {"name": TESTS, "columns": SCHEMA[TESTS], **HINTS}

    if profile["tests_per_project"]:

        def tests_of(page_of_projects: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
            lists = (client.list_spec(TESTS_PATH, project_id=p["id"]) for p in page_of_projects)
            yield from listing.served(client.pages(lists, selector, listing.note_drift))
            listing.close()

        return dlt.transformer(tests_of, data_from=projects, **hints)

    logging.getLogger("dlt").addFilter(_JSON_HINT_NOTICE)

    def tests() -> Iterator[Any]:
        pages = client.pages([client.list_spec(TESTS_PATH)], selector, listing.note_drift)
        # dlt adds a load id to Arrow items only under a process-wide setting users can change
        yield from arrow_batches(listing.served(pages), SEED_TYPES[TESTS], current_load_id())
        listing.close()

    return dlt.resource(tests, **hints)


_JSON_HINT_NOTICE = DropJsonHintNotice(TESTS)


@dlt.source(
    name=SOURCE_NAME,
    section=SOURCE_NAME,
    max_table_nesting=0,
    schema_contract={"data_type": "freeze"},
)
def analytics(settings: ApiSettings | None = None) -> list[DltResource]:
    """Organizations, their projects, and tests, merged on `id`.

    The `freeze` data-type contract is a backstop: records are typed before dlt sees them, so a
    variant column (`x__v_bigint`) would mean a bug, and it fails the load instead of appearing.

    Args:
        settings: The API and its paging; by default `api_settings()`, from dlt's config (see
            the module's docstring). Checked before any request.
    """
    settings = settings or api_settings()
    client = settings.client()
    listed_organizations = Listing(ORGANIZATIONS, paged=False)
    listed_projects = Listing(PROJECTS, parent=listed_organizations)
    # the k6 dialect lists tests per project: they can be no better listed than the projects
    per_project = DIALECTS[settings.dialect]["tests_per_project"]
    listed_tests = Listing(TESTS, parent=listed_projects if per_project else None)
    organizations = organizations_resource(client, listed_organizations)
    projects = projects_resource(client, listed_projects, organizations)
    tests = tests_resource(client, listed_tests, settings.dialect, projects)
    return [organizations, projects, tests]


# A poll's two requests take at most 2 x (2 attempts x 5 s + 0.5 s + 5 s of 429s) = 31 s, well
# inside the 60 s Dagster gives a sensor evaluation.
POLL_SETTINGS: dict[str, Any] = {
    "request_max_attempts": 2,
    "request_backoff_factor": 0.5,
    "request_timeout": 5.0,
    "request_max_retry_delay": 5.0,
    "rate_limit_max_wait": 5.0,
}


def upstream_fingerprint() -> str:
    """A cheap digest of what the API serves now: the organizations and the first page of tests.

    Two requests, each bounded (two attempts, short timeouts and 429 waits): a poll must be
    quick, and a failure only means "try again at the next poll".
    """
    settings = api_settings(**POLL_SETTINGS, concurrency=1)
    client = settings.client()
    digest = hashlib.sha256()
    organizations = client.get_list(ORGANIZATIONS_PATH, ORGANIZATIONS)
    first_tests = client.page(client.list_spec(TESTS_PATH), 1, settings.profile["tests_key"])
    for part in (organizations, first_tests.items, first_tests.total):
        digest.update(json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()
