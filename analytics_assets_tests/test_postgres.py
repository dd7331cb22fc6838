"""PostgreSQL as the warehouse and as Dagster's instance, against a real server.

The warehouse is chosen by configuration alone (`DESTINATION_TYPE=postgres` and
`DESTINATION__POSTGRES__CREDENTIALS`); Dagster's instance is the committed `deploy/dagster.yaml`
with its `DAGSTER_PG_*` variables pointed at the session's throwaway server (postgres_server.py),
each on a database of its own. The tests that only read share one sync.
"""

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg2
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
)

# the run monitor's slot sweep and its clock: no public API runs one daemon iteration
from dagster._daemon.monitoring import concurrency as run_monitor
from dagster._time import get_current_datetime
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from analytics_assets import defs
from analytics_assets.pipeline import analytics_pipeline
from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets.sources.analytics.settings import SCHEMA
from analytics_assets_tests.conftest import CHECK_KEYS, FAST_RETRY_ENV
from analytics_assets_tests.test_sync import as_loaded

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts get rewritten
    from analytics_assets_tests.postgres_server import PostgresServer

pytest_plugins = ["analytics_assets_tests.postgres_server"]

DEPLOY_CONFIG = Path(__file__).parents[1] / "deploy" / "dagster.yaml"
POOL = "analytics_warehouse"  # the assets' `pool=`, limited in deploy/dagster.yaml
SLOT_HELD_S = 1.0
POSTGRES_TYPES = {
    "bigint": "bigint",
    "bool": "boolean",
    "timestamp": "timestamp with time zone",
    "text": "character varying",
    "json": "jsonb",
}


@dataclass
class OnPostgres:
    """A warehouse database and a Dagster instance on another database of the same server."""

    warehouse: str
    dagster: str
    instance: DagsterInstance


@contextlib.contextmanager
def on_postgres(
    server: "PostgresServer", warehouse: str, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OnPostgres]:
    """Select the PostgreSQL warehouse through dlt's config and load deploy/dagster.yaml."""
    monkeypatch.setenv("DESTINATION_TYPE", "postgres")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", warehouse)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp / "dlt"))
    dagster = server.create_database("dagster")
    url = urlsplit(dagster)
    for name, value in {
        "DAGSTER_PG_HOST": url.hostname,
        "DAGSTER_PG_PORT": url.port,
        "DAGSTER_PG_DB": url.path.lstrip("/"),
        "DAGSTER_PG_USER": url.username,
        "DAGSTER_PG_PASSWORD": url.password,
    }.items():
        monkeypatch.setenv(name, str(value))
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_CONFIG, home)  # DAGSTER_HOME, as deploy/README.md sets it up
    with DagsterInstance.from_config(str(home)) as instance:
        yield OnPostgres(warehouse, dagster, instance)


@dataclass
class Synced(OnPostgres):
    """What one full `analytics_sync` run left behind."""

    api: SampleApiServer
    result: ExecuteInProcessResult


@pytest.fixture(scope="module")
def synced(
    postgres_server: "PostgresServer", postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Synced]:
    """One full sync from the sample API, shared by the tests that only read what it left."""
    tmp = tmp_path_factory.mktemp("synced")
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        SampleApiServer(build_account()) as api,
        on_postgres(postgres_server, postgres_dsn, tmp, monkeypatch) as pg,
    ):
        monkeypatch.setenv("SOURCES__ANALYTICS__BASE_URL", api.url)
        monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", api.token)
        for name, value in FAST_RETRY_ENV.items():
            monkeypatch.setenv(name, value)
        result = run_job("analytics_sync", pg.instance)
        assert result.success
        yield Synced(pg.warehouse, pg.dagster, pg.instance, api, result)


@pytest.fixture
def pg(
    postgres_server: "PostgresServer",
    env: SampleApiServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OnPostgres]:
    """A fresh warehouse and instance for a test that changes the data."""
    warehouse = postgres_server.create_database("warehouse")
    with on_postgres(postgres_server, warehouse, tmp_path, monkeypatch) as pg:
        yield pg


def run_job(
    name: str, instance: DagsterInstance, op_selection: list[str] | None = None
) -> ExecuteInProcessResult:
    """A job of the code location, as the UI or the schedule launches it."""
    job = defs.resolve_job_def(name)
    return job.execute_in_process(
        instance=instance, raise_on_error=False, op_selection=op_selection
    )


def by_check(result: ExecuteInProcessResult) -> dict[tuple[str, str], AssetCheckEvaluation]:
    """A run's check evaluations by (table, check)."""
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def query(dsn: str, sql: str) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def tamper(dsn: str, *statements: str) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def table_rows(dsn: str, table: str) -> dict[int, dict]:
    columns = list(SCHEMA[table])
    rows = query(dsn, f"SELECT {', '.join(columns)} FROM analytics.{table} ORDER BY id")
    return {row[columns.index("id")]: dict(zip(columns, row, strict=True)) for row in rows}


def column_types(dsn: str) -> dict[tuple[str, str], str]:
    sql = (
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'analytics'"
    )
    return {(table, column): data_type for table, column, data_type in query(dsn, sql)}


def test_the_warehouse_is_postgres_by_configuration_alone(synced: Synced) -> None:
    pipeline = analytics_pipeline()

    assert pipeline.destination.destination_name == "postgres"
    assert pipeline.dataset_name == "analytics"


def test_full_sync_loads_exactly_what_the_api_served(synced: Synced) -> None:
    served = {
        "organizations": synced.api.account.organizations,
        "projects": synced.api.account.projects,
        "tests": synced.api.account.tests,
    }
    for table, records in served.items():
        loaded = table_rows(synced.warehouse, table)
        assert sorted(loaded) == sorted(r["id"] for r in records), table
        for record in records:
            # psycopg2 hands JSON back parsed: test_run_ids is already a list
            assert loaded[record["id"]] == as_loaded(record), (table, record["id"])


def test_columns_have_the_seed_types_and_nothing_splits(synced: Synced) -> None:
    types = column_types(synced.warehouse)

    for table, columns in SCHEMA.items():
        for column, hints in columns.items():
            assert types[(table, column)] == POSTGRES_TYPES[hints["data_type"]], column
    assert not [c for c in types if "__v_" in c[1]], "variant columns appeared"
    tables = {t for t, _ in types if not t.startswith("_dlt")}
    assert tables == {"organizations", "projects", "tests"}, "child tables appeared"


def test_every_check_evaluates_and_passes(synced: Synced) -> None:
    evaluations = by_check(synced.result)

    assert len(evaluations) == len(CHECK_KEYS)
    assert {key for key, e in evaluations.items() if not e.passed} == set()


def test_the_instance_keeps_runs_events_and_schedules_in_postgres(synced: Synced) -> None:
    assert isinstance(synced.instance.run_storage, PostgresRunStorage)
    assert isinstance(synced.instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(synced.instance.schedule_storage, PostgresScheduleStorage)


def test_the_run_and_its_events_are_in_the_postgres_event_log(synced: Synced) -> None:
    run_id = synced.result.run_id

    run = synced.instance.get_run_by_id(run_id)
    materialized = synced.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    checked = synced.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)

    assert run is not None and run.is_success
    assert sorted(e.get_dagster_event().asset_key.path[-1] for e in materialized) == [
        "organizations",
        "projects",
        "tests",
    ]
    assert len(checked) == len(CHECK_KEYS)
    stored = dict(
        query(
            synced.dagster,
            "SELECT dagster_event_type, COUNT(*) FROM event_logs "
            f"WHERE run_id = '{run_id}' GROUP BY dagster_event_type",
        )
    )
    assert (stored["ASSET_MATERIALIZATION"], stored["ASSET_CHECK_EVALUATION"]) == (
        3,
        len(CHECK_KEYS),
    )


def test_warehouse_steps_take_a_slot_of_the_analytics_warehouse_pool(synced: Synced) -> None:
    pool = synced.instance.event_log_storage.get_concurrency_info(POOL)

    assert pool.limit == 1 and pool.using_default_limit
    assert pool.claimed_slots == [] and pool.pending_steps == [], "a slot was not released"


def test_a_step_waits_while_another_run_holds_the_warehouse_slot(synced: Synced) -> None:
    storage = synced.instance.event_log_storage
    assert storage.claim_concurrency_slot(POOL, "other-run", "other-step").is_claimed
    blocked_at: list[float] = []
    run_over = threading.Event()
    earlier = {step.run_id for step in storage.get_concurrency_info(POOL).pending_steps}

    def told_blocked() -> bool:
        runs = {step.run_id for step in storage.get_concurrency_info(POOL).pending_steps} - earlier
        logs = [e for run in runs for e in synced.instance.all_logs(run)]
        return any(e.message == f"Step blocked by limit for pool {POOL}" for e in logs)

    def release_once_blocked() -> None:
        # the other run lets go SLOT_HELD_S after the step queued for the slot and said so,
        # however slowly the run started (a timer from the launch raced a slowed run)
        try:
            deadline = time.monotonic() + 60
            while not told_blocked() and time.monotonic() < deadline and not run_over.wait(0.05):
                pass
            blocked_at.append(time.monotonic())
            run_over.wait(SLOT_HELD_S)
        finally:  # never leave the slot held: the run, and the next test, would wait for it
            storage.free_concurrency_slots_for_run("other-run")

    release = threading.Thread(target=release_once_blocked)
    release.start()
    # the SQL checks' step alone: the builders' pool-less steps could outlast the hold
    result = run_job("analytics_checks", synced.instance, ["analytics_table_checks"])
    finished = time.monotonic()
    run_over.set()

    release.join()
    assert result.success
    assert finished - blocked_at[0] >= SLOT_HELD_S
    messages = [e.message for e in synced.instance.all_logs(result.run_id)]
    assert f"Step blocked by limit for pool {POOL}" in messages


def test_the_daemon_frees_a_slot_that_an_ended_run_left_claimed(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = synced.instance.event_log_storage
    ended_run = synced.result.run_id
    assert storage.claim_concurrency_slot(POOL, ended_run, "analytics_tests").is_claimed
    free_after = synced.instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
    later = get_current_datetime() + timedelta(seconds=free_after + 1)
    monkeypatch.setattr(run_monitor, "get_current_datetime", lambda: later)

    try:
        daemon = SimpleNamespace(instance=synced.instance)
        list(run_monitor.execute_concurrency_slots_iteration(daemon, logging.getLogger(__name__)))

        assert storage.get_concurrency_info(POOL).claimed_slots == []
    finally:
        storage.free_concurrency_slots_for_run(ended_run)


def test_a_rerun_merges_changes_and_removes_ghosts(pg: OnPostgres, env: SampleApiServer) -> None:
    assert run_job("analytics_sync", pg.instance).success
    renamed = env.account.organizations[0]
    renamed["name"] = "Renamed Örg"
    gone = env.account.projects.pop(5)

    # a row the API stopped serving goes with the first sync that does not list it
    assert run_job("analytics_sync", pg.instance).success

    for table in ("organizations", "projects", "tests"):
        served = len(getattr(env.account, table))
        counts = query(pg.warehouse, f"SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.{table}")
        assert counts == [(served, served)], table
    assert table_rows(pg.warehouse, "organizations")[renamed["id"]]["name"] == "Renamed Örg"
    assert gone["id"] not in table_rows(pg.warehouse, "projects")


def test_orphaned_projects_fail_the_blocking_check_naming_them(
    pg: OnPostgres, env: SampleApiServer
) -> None:
    assert run_job("analytics_sync", pg.instance).success
    project = env.account.projects[5]["id"]
    tamper(
        pg.warehouse,
        f"UPDATE analytics.projects SET organization_id = 999999 WHERE id = {project}",
    )

    result = run_job("analytics_checks", pg.instance)

    evaluation = by_check(result)[("projects", "organization_id_references_organizations")]
    assert not result.success, "a failed blocking check fails the run"
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    assert evaluation.metadata["orphans"].value == 1
    assert evaluation.metadata["sample_offending_ids"].value == [project]
    assert evaluation.metadata["sample_offending_values"].value == {str(project): 999_999}


def test_a_json_string_is_not_an_array(pg: OnPostgres, env: SampleApiServer) -> None:
    assert run_job("analytics_sync", pg.instance).success
    test_id = env.account.tests[0]["id"]
    text = json.dumps(json.dumps([1, 2]))  # the JSON string "[1, 2]", not the array [1, 2]
    tamper(pg.warehouse, f"UPDATE analytics.tests SET test_run_ids = '{text}' WHERE id = {test_id}")

    result = run_job("analytics_checks", pg.instance)

    evaluation = by_check(result)[("tests", "test_run_ids_are_integer_arrays")]

    assert not evaluation.passed
    assert evaluation.metadata["reasons"].value == {str(test_id): "not an array: str"}
