"""Variant (a): the seed's config on plain dlt, as a user would write it.

Corrected only as far as dlt 1.31 needs to run it (see ../shared/notes/facts.md): the
`page_number` paginator has no `limit`/`limit_param`, so the page size goes out as a static
`page_size` param, with `base_page: 1` and `total_path: None`; `{organization_id}` is a
`resolve` param. Everything else is dlt's default: insert_values files, and `test_run_ids`
nested into a child table (`tests__test_run_ids`). With `total_path: None` it pages until an
empty page, so it needs no total (the seed's contract) and ignores one the API sends.

Usage: python scripts/bench/seed_plain_dlt.py BASE_URL DUCKDB_FILE (token from API_TOKEN).
"""

import sys

import dlt
from dlt.sources.rest_api import rest_api_source

base_url, duckdb_file = sys.argv[1], sys.argv[2]

paginator = {"type": "page_number", "page_param": "page", "base_page": 1, "total_path": None}

source = rest_api_source(
    {
        "client": {
            "base_url": base_url,
            "auth": {"type": "bearer", "token": dlt.secrets["api_token"]},
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [
            {
                "name": "organizations",
                "endpoint": {"path": "/v3/organizations", "data_selector": "organizations"},
            },
            {
                "name": "projects",
                "endpoint": {
                    "path": "/v3/organizations/{organization_id}/projects",
                    "data_selector": "projects",
                    "params": {
                        "organization_id": {
                            "type": "resolve",
                            "resource": "organizations",
                            "field": "id",
                        },
                        "page_size": 32,
                    },
                    "paginator": paginator,
                },
            },
            {
                "name": "tests",
                "endpoint": {
                    "path": "/loadtests/v2/tests",
                    "data_selector": "tests",
                    "params": {"page_size": 32},
                    "paginator": paginator,
                },
            },
        ],
    }
)

pipeline = dlt.pipeline(
    pipeline_name="seed_plain_dlt",
    destination=dlt.destinations.duckdb(duckdb_file),
    dataset_name="analytics",
)
print(pipeline.run(source))
