"""The seed's API contract and the sync's defaults: one place for source, Dagster, checks, docs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # constants only: this module imports nothing at run time
    from dlt.common.schema.typing import TTableSchemaColumns

SOURCE_NAME: Final = "analytics"
PIPELINE_NAME: Final = "analytics_assets"
# The default DuckDB file is named after the pipeline: `analytics.analytics` would be ambiguous.
DATASET_NAME: Final = "analytics"
DEFAULT_DESTINATION: Final = "duckdb"
# DuckDB's defaults, measured on kilobyte scripts (docs/performance.md): capped, a load spills to
# `<file>.tmp` rather than grow with the account; zstd writes long strings faster, in a smaller
# file. Each key can be overridden in DUCKDB_CONFIG_SETTING.
DUCKDB_GLOBAL_CONFIG: Final = {
    "memory_limit": "64MB",
    "threads": 1,
    "preserve_insertion_order": False,
    "force_compression": "zstd",
}
DUCKDB_CONFIG_SETTING: Final = "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"

# The placeholders of `.dlt/config.toml` and `.dlt/example.secrets.toml`: a sync refuses them.
DEFAULT_BASE_URL: Final = "https://api.example.com"
PLACEHOLDER_TOKEN: Final = "paste-your-api-token-here"
PAGE_PARAM: Final = "page"
PAGE_SIZE_PARAM: Final = "page_size"
PAGE_SIZE: Final = 32
# Where a list may carry its length: optional, the seed's contract has none.
COUNT_PATH: Final = ("meta", "count")
# Requests in flight across all lists: ~4x faster, kind to the API; fewer after a 429 (`Pacer`).
CONCURRENCY: Final = 4

# Seed: "retry on 429, 500, 502, 503, 504; max retries 3; backoff factor 2". dlt retries the 5xx;
# a 429 is waited out apart from that budget, up to RATE_LIMIT_MAX_WAIT s per request.
SERVER_ERROR_STATUS_CODES: Final = (500, 502, 503, 504)
RATE_LIMIT_MAX_WAIT: Final = 600.0
# dlt's `runtime.request_*` settings, with the seed's policy as their defaults.
RUNTIME_DEFAULTS: Final[dict[str, float]] = {
    "request_max_attempts": 4,
    "request_backoff_factor": 2.0,
    "request_timeout": 60.0,
    "request_max_retry_delay": 300.0,
}
# The lowest and highest value of each numeric setting (None: no highest).
LIMITS: Final[dict[str, tuple[float, float | None]]] = {
    "page_size": (1, 1000),
    "concurrency": (1, 64),
    "rate_limit_max_wait": (0, None),
    "request_max_attempts": (1, None),
    "request_backoff_factor": (0, None),
    "request_timeout": (0.001, None),
    "request_max_retry_delay": (0, None),
}

# Offending ids named in a check's or a ghost report's metadata, at most.
SAMPLE_SIZE: Final = 10

ORGANIZATIONS: Final = "organizations"
PROJECTS: Final = "projects"
TESTS: Final = "tests"
RESOURCE_NAMES: Final = (ORGANIZATIONS, PROJECTS, TESTS)

# "seed" is the spec's contract; "k6" the public load-testing cloud's legacy API behind it, with
# tests under `k6-tests` listed per project (`?project_id=`), `Authorization: Token <token>`.
DIALECTS: Final = {
    "seed": {"tests_key": "tests", "tests_per_project": False, "auth_scheme": "Bearer"},
    "k6": {"tests_key": "k6-tests", "tests_per_project": True, "auth_scheme": "Token"},
}
DEFAULT_DIALECT: Final = "seed"

ORGANIZATIONS_PATH: Final = "/v3/organizations"
PROJECTS_PATH: Final = "/v3/organizations/{organization_id}/projects"
TESTS_PATH: Final = "/loadtests/v2/tests"

# The seed's Schema as dlt types (`created`/`updated` as timestamps, arrays as json on the row),
# with the words the catalog shows for each column.
SEED_COLUMNS: Final[dict[str, dict[str, tuple[str, str]]]] = {
    ORGANIZATIONS: {
        "billing_address": ("text", "Postal address on the organization's invoices."),
        "billing_country": ("text", "Country of the billing address."),
        "billing_email": ("text", "Address that receives the invoices."),
        "created": ("timestamp", "When the organization was created."),
        "description": ("text", "Free text about the organization."),
        "id": ("bigint", "The organization's id, the primary key."),
        "is_default": ("bool", "Whether this is the account's default organization."),
        "is_saml_org": ("bool", "Whether members sign in through SAML single sign-on."),
        "name": ("text", "The organization's name."),
        "owner_id": ("bigint", "Id of the user who owns the organization."),
        "updated": ("timestamp", "When the organization last changed."),
        "vat_number": ("text", "VAT number on the invoices, if any."),
    },
    PROJECTS: {
        "created": ("timestamp", "When the project was created."),
        "description": ("text", "Free text about the project."),
        "id": ("bigint", "The project's id, the primary key."),
        "is_default": ("bool", "Whether this is the organization's default project."),
        "name": ("text", "The project's name."),
        "organization_id": ("bigint", "Id of the organization the project belongs to."),
        "updated": ("timestamp", "When the project last changed."),
    },
    TESTS: {
        "created": ("timestamp", "When the test was created."),
        "id": ("bigint", "The test's id, the primary key."),
        "last_test_run_id": ("text", "Id of the test's latest run, if it has run."),
        "name": ("text", "The test's name."),
        "project_id": ("bigint", "Id of the project the test belongs to."),
        "script": ("text", "The test's script."),
        "test_run_ids": ("json", "Ids of every run of the test, as a JSON array."),
        "updated": ("timestamp", "When the test last changed."),
        "user_id": ("bigint", "Id of the user who created the test."),
    },
}
SEED_TYPES: Final = {t: {c: kind for c, (kind, _) in cs.items()} for t, cs in SEED_COLUMNS.items()}
COLUMN_DESCRIPTIONS: Final = {
    t: {c: words for c, (_, words) in cs.items()} for t, cs in SEED_COLUMNS.items()
}
# The same as dlt's column hints: every seed field is declared, so its type never depends on data.
SCHEMA: Final[dict[str, TTableSchemaColumns]] = {
    table: {
        name: {"name": name, "data_type": kind, "nullable": name != "id"}  # type: ignore[typeddict-item]
        for name, kind in types.items()
    }
    for table, types in SEED_TYPES.items()
}
