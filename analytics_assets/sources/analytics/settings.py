"""The analytics API contract from the seed spec, and the defaults of the sync.

Constants only: every path, page size, retry number and column type the project relies on lives
here, so that the source, the Dagster layer, the checks and the docs agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # constants only: this module imports nothing at run time
    from dlt.common.schema.typing import TTableSchemaColumns

SOURCE_NAME: Final = "analytics"
PIPELINE_NAME: Final = "analytics_assets"
# The dataset (a schema in DuckDB/PostgreSQL). The default DuckDB file is named after the
# pipeline, never after the dataset: `analytics.duckdb` with dataset `analytics` is ambiguous.
DATASET_NAME: Final = "analytics"
DEFAULT_DESTINATION: Final = "duckdb"
# DuckDB's defaults let a load's memory grow with the account (measured at 10x: 403 MB, against
# 259 MB at 1x). Capped, it spills to disk instead. Each key can be overridden in dlt's config.
DUCKDB_GLOBAL_CONFIG: Final = {
    "memory_limit": "32MB",
    "preserve_insertion_order": False,
    "threads": 1,
}

# The placeholders of `.dlt/config.toml` and `.dlt/example.secrets.toml`: a sync refuses them.
DEFAULT_BASE_URL: Final = "https://api.example.com"
PLACEHOLDER_TOKEN: Final = "paste-your-api-token-here"
PAGE_PARAM: Final = "page"
PAGE_SIZE_PARAM: Final = "page_size"
PAGE_SIZE: Final = 32
MAX_PAGE_SIZE: Final = 1000
# Where a list response may carry its total length. Optional: the seed's contract has none.
COUNT_PATH: Final = ("meta", "count")
# Requests in flight at once, across all lists: kind to the API's rate limit, and ~4x faster.
# Fewer while the API answers 429 (see `client.AdaptiveLimit`).
CONCURRENCY: Final = 4
MAX_CONCURRENCY: Final = 64

# Seed: "retry on 429, 500, 502, 503, 504; max retries 3; backoff factor 2". dlt counts attempts.
# The 5xx go through dlt's retries; a 429 is waited out apart from that budget (`client.py`),
# up to RATE_LIMIT_MAX_WAIT seconds per request.
SERVER_ERROR_STATUS_CODES: Final = (500, 502, 503, 504)
REQUEST_MAX_ATTEMPTS: Final = 4
REQUEST_BACKOFF_FACTOR: Final = 2.0
RATE_LIMIT_MAX_WAIT: Final = 600.0
RATE_LIMIT_MAX_WAIT_SETTING: Final = "SOURCES__ANALYTICS__RATE_LIMIT_MAX_WAIT"

# Offending ids named in a check's or a ghost report's metadata, at most.
SAMPLE_SIZE: Final = 10

ORGANIZATIONS: Final = "organizations"
PROJECTS: Final = "projects"
TESTS: Final = "tests"
RESOURCE_NAMES: Final = (ORGANIZATIONS, PROJECTS, TESTS)

# API dialects, chosen by one setting (`sources.analytics.dialect`). "seed" is the spec's
# vendor-neutral contract. "k6" is the public load-testing cloud's legacy API behind it: tests
# under `k6-tests`, listed per project (`?project_id=`; without it only the default project's),
# and the documented `Authorization: Token <token>` header.
DIALECTS: Final = {
    "seed": {"tests_key": "tests", "tests_per_project": False, "auth_scheme": "Bearer"},
    "k6": {"tests_key": "k6-tests", "tests_per_project": True, "auth_scheme": "Token"},
}
DEFAULT_DIALECT: Final = "seed"

ORGANIZATIONS_PATH: Final = "/v3/organizations"
PROJECTS_PATH: Final = "/v3/organizations/{organization_id}/projects"
TESTS_PATH: Final = "/loadtests/v2/tests"

# Shown in Dagster's catalog, which renders no Markdown there: plain sentences.
DESCRIPTIONS: Final = {
    ORGANIZATIONS: (
        "Organizations of the analytics account, listed by GET /v3/organizations (data selector "
        "organizations). Merged on id."
    ),
    PROJECTS: (
        "Projects of every organization, listed by GET "
        "/v3/organizations/{organization_id}/projects (data selector projects, 32 per page). "
        "Merged on id."
    ),
    TESTS: (
        "Load tests, listed by GET /loadtests/v2/tests (data selector tests, 32 per page). The "
        "test_run_ids of a test stay a JSON array on its row. Merged on id."
    ),
}

# The seed's fields, in a few words each: the Columns table of each asset in Dagster's catalog.
COLUMN_DESCRIPTIONS: Final = {
    ORGANIZATIONS: {
        "billing_address": "Postal address on the organization's invoices.",
        "billing_country": "Country of the billing address.",
        "billing_email": "Address that receives the invoices.",
        "created": "When the organization was created.",
        "description": "Free text about the organization.",
        "id": "The organization's id, the primary key.",
        "is_default": "Whether this is the account's default organization.",
        "is_saml_org": "Whether members sign in through SAML single sign-on.",
        "name": "The organization's name.",
        "owner_id": "Id of the user who owns the organization.",
        "updated": "When the organization last changed.",
        "vat_number": "VAT number on the invoices, if any.",
    },
    PROJECTS: {
        "created": "When the project was created.",
        "description": "Free text about the project.",
        "id": "The project's id, the primary key.",
        "is_default": "Whether this is the organization's default project.",
        "name": "The project's name.",
        "organization_id": "Id of the organization the project belongs to.",
        "updated": "When the project last changed.",
    },
    TESTS: {
        "created": "When the test was created.",
        "id": "The test's id, the primary key.",
        "last_test_run_id": "Id of the test's latest run, if it has run.",
        "name": "The test's name.",
        "project_id": "Id of the project the test belongs to.",
        "script": "The test's script.",
        "test_run_ids": "Ids of every run of the test, as a JSON array.",
        "updated": "When the test last changed.",
        "user_id": "Id of the user who created the test.",
    },
}


# The seed's Schema section, as dlt types: string -> text, integer -> bigint, boolean -> bool,
# `created`/`updated` -> timestamp (with time zone), array -> json (one row per record).
SEED_TYPES: Final[dict[str, dict[str, str]]] = {
    ORGANIZATIONS: dict(
        billing_address="text",
        billing_country="text",
        billing_email="text",
        created="timestamp",
        description="text",
        id="bigint",
        is_default="bool",
        is_saml_org="bool",
        name="text",
        owner_id="bigint",
        updated="timestamp",
        vat_number="text",
    ),
    PROJECTS: dict(
        created="timestamp",
        description="text",
        id="bigint",
        is_default="bool",
        name="text",
        organization_id="bigint",
        updated="timestamp",
    ),
    TESTS: dict(
        created="timestamp",
        id="bigint",
        last_test_run_id="text",
        name="text",
        project_id="bigint",
        script="text",
        test_run_ids="json",
        updated="timestamp",
        user_id="bigint",
    ),
}


def _columns(types: dict[str, str]) -> TTableSchemaColumns:
    """Column hints for dlt: every seed field is declared, so its type never depends on the data."""
    return {
        name: {"name": name, "data_type": data_type, "nullable": name != "id"}  # type: ignore[typeddict-item]
        for name, data_type in types.items()
    }


# The same, as dlt's column hints.
SCHEMA: Final[dict[str, TTableSchemaColumns]] = {t: _columns(c) for t, c in SEED_TYPES.items()}
