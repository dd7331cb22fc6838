"""A full sync loads exactly what the API served, with the seed's types, and merges on re-runs."""

import gc
import json
import logging
import re
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import DagsterInstance

from analytics_assets.pipeline import sync_settings
from analytics_assets.sample_api import SampleApiServer
from analytics_assets.sources.analytics.settings import SCHEMA
from analytics_assets_tests.conftest import query, run_sync

DUCKDB_TYPES = {
    "bigint": "BIGINT",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "text": "VARCHAR",
    "json": "JSON",
}


def table_rows(path: Path, table: str) -> dict[int, dict]:
    columns = list(SCHEMA[table])
    rows = query(path, f"SELECT {', '.join(columns)} FROM analytics.{table} ORDER BY id")
    return {row[columns.index("id")]: dict(zip(columns, row, strict=True)) for row in rows}


def as_loaded(record: dict) -> dict:
    """What the warehouse should hold for an API record: parsed timestamps, JSON as text."""
    loaded = {}
    for name, value in record.items():
        if name in {"created", "updated"} and value is not None:
            value = datetime.fromisoformat(value)
        loaded[name] = value
    return loaded


def normalize(row: dict) -> dict:
    return {
        name: json.loads(value) if name == "test_run_ids" and value is not None else value
        for name, value in row.items()
    }


def test_full_sync_loads_exactly_what_the_api_served(env: SampleApiServer, warehouse: Path) -> None:
    result = run_sync()

    assert result.success
    served = {
        "organizations": env.account.organizations,
        "projects": env.account.projects,
        "tests": env.account.tests,
    }
    for table, records in served.items():
        loaded = table_rows(warehouse, table)
        assert len(loaded) == len(records), table
        for record in records:
            assert normalize(loaded[record["id"]]) == as_loaded(record), (table, record["id"])


def test_columns_have_the_seed_types_and_nothing_splits(
    env: SampleApiServer, warehouse: Path
) -> None:
    run_sync()

    types = {
        (table, column): data_type
        for table, column, data_type in query(
            warehouse,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'analytics'",
        )
    }
    for table, columns in SCHEMA.items():
        for column, hints in columns.items():
            assert types[(table, column)] == DUCKDB_TYPES[hints["data_type"]], (table, column)
    assert not [c for c in types if "__v_" in c[1]], "variant columns appeared"
    tables = {t for t, _ in types if not t.startswith("_dlt")}
    assert tables == {"organizations", "projects", "tests"}, "child tables appeared"


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_clean_sync_logs_no_dlt_warnings(env: SampleApiServer) -> None:
    # a warning in a run's log should mean something: dlt's notice on every Arrow item does not
    kept = _Kept()
    logging.getLogger("dlt").addHandler(kept)
    try:
        assert run_sync().success
    finally:
        logging.getLogger("dlt").removeHandler(kept)

    assert [record.getMessage() for record in kept.records] == []


def test_a_syncs_settings_of_the_process_end_with_it() -> None:
    filters, pool = list(logging.getLogger("dlt").filters), pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError, match="a failed sync"), sync_settings():
        assert gc.get_freeze_count() > 0  # the imports' objects, skipped by full collections
        assert len(logging.getLogger("dlt").filters) == len(filters) + 1
        assert pa.default_memory_pool().backend_name == "system"
        raise RuntimeError("a failed sync")

    assert gc.get_freeze_count() == 0
    assert pa.default_memory_pool().backend_name == pool != "system"
    assert logging.getLogger("dlt").filters == filters
    gc.freeze()  # a host's own freeze stays
    try:
        with sync_settings():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_materializations_report_row_counts_and_schema(env: SampleApiServer) -> None:
    result = run_sync()

    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        table = materialization.asset_key.path[-1]
        metadata = materialization.metadata
        assert metadata["dagster/row_count"].value == len(getattr(env.account, table))
        assert metadata["dagster/table_name"].value == f"analytics.{table}"
        columns = {c.name for c in metadata["dagster/column_schema"].value.columns}
        assert set(SCHEMA[table]) <= columns


def test_rerun_adds_no_duplicates_and_merges_upstream_changes(
    env: SampleApiServer, warehouse: Path
) -> None:
    run_sync()
    org = env.account.organizations[0]
    org["name"] = "Renamed Örg"
    test = env.account.tests[0]
    test["test_run_ids"] = [*test["test_run_ids"], 999_999]
    test["last_test_run_id"] = "999999"
    new_project = {**env.account.projects[-1], "id": 99_999, "name": "brand new"}
    env.account.projects.append(new_project)

    run_sync()

    assert (
        query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.organizations")[0]
        == (len(env.account.organizations),) * 2
    )
    assert query(warehouse, f"SELECT name FROM analytics.organizations WHERE id = {org['id']}") == [
        ("Renamed Örg",)
    ]
    (runs,) = query(warehouse, f"SELECT test_run_ids FROM analytics.tests WHERE id = {test['id']}")[
        0
    ]
    assert json.loads(runs)[-1] == 999_999
    projects = table_rows(warehouse, "projects")
    assert len(projects) == len(env.account.projects)
    assert projects[99_999]["name"] == "brand new"
    tests = query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.tests")[0]
    assert tests == (len(env.account.tests),) * 2


def test_one_asset_alone_loads_only_its_table(env: SampleApiServer, warehouse: Path) -> None:
    result = run_sync("tests")

    assert result.success
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"tests"}
    tables = {
        t
        for (t,) in query(
            warehouse,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'analytics'",
        )
    }
    assert "tests" in tables and "organizations" not in tables and "projects" not in tables
    assert env.request_count("/v3/") == 0


def test_projects_alone_reads_organizations_for_ids_but_loads_projects_only(
    env: SampleApiServer, warehouse: Path
) -> None:
    assert run_sync("organizations").success
    env.account.organizations[0]["name"] = "not reloaded"

    result = run_sync("projects")

    assert result.success
    assert len(table_rows(warehouse, "projects")) == len(env.account.projects)
    names = [name for (name,) in query(warehouse, "SELECT name FROM analytics.organizations")]
    assert "not reloaded" not in names


def test_progress_is_logged_per_resource(env: SampleApiServer) -> None:
    instance = DagsterInstance.ephemeral()
    result = run_sync(instance=instance)

    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"tests: {len(env.account.tests)}" in m for m in messages), "no rows per resource"
    assert any(f"projects: {len(env.account.projects)}" in m for m in messages)
    assert any("Load analytics" in m for m in messages), "no progress of the load"
    headers = [m for m in messages if "Normalize analytics" in m or "Load analytics" in m]
    assert headers and all("the sync of 20" in m and " UTC" in m for m in headers), headers
    assert not any(re.search(r"in \d{10}\.\d+", m) for m in messages), "a load id as a float"


def test_lists_served_empty_sync_again_and_again(env: SampleApiServer, warehouse: Path) -> None:
    # dagster-dlt's metadata once raised on a run that normalized nothing (dagster#33572)
    env.account.tests.clear()
    env.account.organizations.clear()

    for tables in (("tests",), ("tests",), ("organizations",), ()):
        result = run_sync(*tables)
        assert result.success, tables
        for event in result.get_asset_materialization_events():
            metadata = event.step_materialization_data.materialization.metadata
            assert "first_run" not in metadata
