"""Real-size data with the default settings: kilobyte scripts load exactly on DuckDB and PostgreSQL.

The account is smaller than the bench's, but its scripts alone are larger than the 32 MB that
DuckDB was once capped at, which failed the load (BENCHMARKS.md has the full sizes).
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_assets.pipeline import ROW_GROUP_SIZE, warehouse_lock
from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets.sources.analytics.settings import DUCKDB_CONFIG_SETTING, DUCKDB_GLOBAL_CONFIG
from analytics_assets_tests.conftest import FAST_RETRY_ENV, MATERIALIZE, REPO, point_sync_at, query
from analytics_assets_tests.test_postgres import OnPostgres, run_job
from analytics_assets_tests.test_postgres import pg as pg
from analytics_assets_tests.test_postgres import query as pg_query

pytest_plugins = ["analytics_assets_tests.postgres_server"]

SCRIPT_KB = 5
# 7,200 tests of 5 KiB: 36 MB of scripts, more than the old 32 MB cap
PROJECTS, TESTS_PER_PROJECT = (60,) * 10, (12,)


@pytest.fixture
def big_api() -> Iterator[SampleApiServer]:
    account = build_account(PROJECTS, TESTS_PER_PROJECT, script_kb=SCRIPT_KB)
    assert sum(len(t["script"]) for t in account.tests) > 32 * 2**20
    with SampleApiServer(account) as server:
        yield server


def materialize_cli(server: SampleApiServer, tmp_path: Path, **settings: str) -> str:
    """`dagster asset materialize` of everything; its whole output, after checking its exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION"))}
    env |= {
        **FAST_RETRY_ENV,
        "SOURCES__ANALYTICS__BASE_URL": server.url,
        "SOURCES__ANALYTICS__API_TOKEN": server.token,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
        **settings,
    }
    (tmp_path / "home").mkdir(exist_ok=True)
    done = subprocess.run(MATERIALIZE, cwd=REPO, env=env, capture_output=True, text=True)
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_kilobyte_scripts_load_exactly_on_duckdb_with_the_defaults(
    big_api: SampleApiServer, tmp_path: Path
) -> None:
    output = materialize_cli(big_api, tmp_path)

    assert output.startswith("exit 0"), output[-3000:]
    warehouse = tmp_path / "warehouse.duckdb"
    assert query(warehouse, "SELECT COUNT(*), SUM(LENGTH(script)) FROM analytics.tests") == [
        (len(big_api.account.tests), sum(len(t["script"]) for t in big_api.account.tests))
    ]
    # written in groups of 4,096 rows as the load went, not held to DuckDB's 122,880 in memory
    groups = "SELECT COUNT(DISTINCT row_group_id) FROM pragma_storage_info('analytics.tests')"
    assert query(warehouse, groups) == [(-(-len(big_api.account.tests) // ROW_GROUP_SIZE),)]


def test_kilobyte_scripts_load_exactly_on_postgres(
    pg: OnPostgres, big_api: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_sync_at(big_api, monkeypatch)

    assert run_job("analytics_sync", pg.instance).success

    loaded = pg_query(pg.warehouse, "SELECT COUNT(*), SUM(LENGTH(script)) FROM analytics.tests")
    assert loaded == [
        (len(big_api.account.tests), sum(len(t["script"]) for t in big_api.account.tests))
    ]


def test_a_warehouse_limit_reached_names_the_setting_and_loads_no_table_in_part(
    big_api: SampleApiServer, tmp_path: Path
) -> None:
    assert materialize_cli(big_api, tmp_path).startswith("exit 0")
    for test in big_api.account.tests:
        test["name"] = "renamed"

    output = materialize_cli(
        big_api, tmp_path, **{DUCKDB_CONFIG_SETTING: '{"memory_limit": "4MB"}'}
    )

    assert output.startswith("exit 1")
    last_lines = "\n".join([line for line in output.splitlines() if line.strip()][-12:])
    assert f"Raise memory_limit in {DUCKDB_CONFIG_SETTING}" in last_lines, output[-3000:]
    assert "'memory_limit': '4MB'" in last_lines
    names = query(
        tmp_path / "warehouse.duckdb", "SELECT DISTINCT name = 'renamed' FROM analytics.tests"
    )
    assert len(names) == 1, "the tests table was loaded in part"
    assert DUCKDB_GLOBAL_CONFIG["memory_limit"] not in last_lines


def test_a_sync_has_our_duckdb_defaults_under_the_users_settings(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DUCKDB_CONFIG_SETTING, '{"threads": 2, "custom_user_agent": "acme"}')
    # a statement that fails if run twice on one database (dlt's clients share the sync's),
    # then one that sees the settings in force, as under dlt's own pool
    seen = "CREATE TABLE x.seen AS SELECT current_setting('memory_limit') AS cap"
    monkeypatch.setenv(
        "DESTINATION__DUCKDB__CREDENTIALS__STATEMENTS", f'["ATTACH \':memory:\' AS x", "{seen}"]'
    )
    names = ("memory_limit", "threads", "preserve_insertion_order", "custom_user_agent")
    names += ("temp_directory",)  # beside the file, as DuckDB's own default for it
    settings = "SELECT " + ", ".join(f"current_setting('{n}')" for n in names)

    with warehouse_lock(print) as pipeline:
        with pipeline.sql_client() as client:
            got = client.execute_sql(settings)
        with pipeline.sql_client() as client:
            attached = client.execute_sql(
                "SELECT COUNT(*) FROM duckdb_databases() WHERE database_name = 'x'"
            )
            statement_saw = client.execute_sql("SELECT cap FROM x.seen")
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__STATEMENTS")  # :memory: is read-write
    with warehouse_lock(print, shared=True) as pipeline, pipeline.sql_client() as client:
        mode = client.execute_sql(
            "SELECT database_name, readonly FROM duckdb_databases() WHERE path IS NOT NULL"
        )

    assert got == [("61.0 MiB", 2, False, "acme", f"{warehouse}.tmp")]
    assert attached == [(1,)]
    assert statement_saw == [("61.0 MiB",)]
    assert mode == [("warehouse", True)]  # the file, named as DuckDB names it, and no other
    assert query(warehouse, "SELECT 1") == [(1,)]  # closed: a reader can open the file
