"""Two hosts, one instance: the pool alone keeps two syncs from writing the warehouse at once.

Each host is a `dagster job execute` process with a DAGSTER_HOME and a dlt working dir
(DLT_DATA_DIR) of its own, so the file locks in the code guard nothing between them. They share
what the hosts of a cluster share: the Dagster instance (deploy/dagster.yaml, unchanged, on
PostgreSQL), the warehouse (PostgreSQL) and the API. A `dagster-daemon` stands for the
cluster's daemon; only its copy of deploy/dagster.yaml runs the monitor's clocks faster.
"""

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, RunsFilter

from analytics_assets import defs
from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets_tests.conftest import DAGSTER, point_sync_at
from analytics_assets_tests.test_concurrency import start
from analytics_assets_tests.test_postgres import (
    DEPLOY_CONFIG,
    POOL,
    OnPostgres,
    on_postgres,
    query,
)
from analytics_assets_tests.test_sync import as_loaded

if TYPE_CHECKING:
    from analytics_assets_tests.postgres_server import PostgresServer

pytest_plugins = ["analytics_assets_tests.postgres_server"]

JOB = "analytics_sync"
TABLES = ("organizations", "projects", "tests")
SYNC = [DAGSTER, "job", "execute", "-m", "analytics_assets", "-j", JOB]
DAEMON = [os.path.join(os.path.dirname(DAGSTER), "dagster-daemon"), "run", "--empty-workspace"]
# Which launch a run came from, so the test can find it in the shared instance.
LAUNCH_TAG = "analytics_tests/launch"
# The daemon's clocks only: how often the monitor looks, and how long a slot of an ended run
# stays claimed (deploy/dagster.yaml: 120 s and 60 s). Every limit stays as deployed.
DAEMON_CLOCKS = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1}
# The killed run's own limit (the `dagster/max_runtime` tag): the local run launcher cannot
# see that a worker died, as K8sRunLauncher sees a pod die, so the monitor fails the dead run
# when its runtime is up. Long enough for the run to reach its load before it is killed.
VICTIM_MAX_RUNTIME_S = 25  # with room for another test beside it (make test runs two)
RUN_TIMEOUT_S = 150


@dataclass
class Cluster:
    """The shared instance, warehouse and API, and a way to start a host's run."""

    pg: OnPostgres
    api: SampleApiServer
    root: Path
    daemon_log: Path
    processes: list[subprocess.Popen]

    def pool(self):  # a ConcurrencyKeyInfo, which dagster does not export
        """The pool's slots and waiting steps, as `dagster instance concurrency get` shows them."""
        return self.pg.instance.event_log_storage.get_concurrency_info(POOL)

    def launch(self, label: str, tags: dict[str, str] | None = None) -> subprocess.Popen:
        """`analytics_sync` on a host of its own: its own DAGSTER_HOME and dlt working dir."""
        host = self.root / label
        (host / "dagster_home").mkdir(parents=True)
        shutil.copy(DEPLOY_CONFIG, host / "dagster_home")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(host / "dagster_home"),
            "DLT_DATA_DIR": str(host / "dlt"),
        }
        command = [*SYNC, "--tags", json.dumps({LAUNCH_TAG: label, **(tags or {})})]
        process = start(env, host / "run.log", command)
        self.processes.append(process)
        return process

    def log(self, label: str) -> str:
        return (self.root / label / "run.log").read_text()[-3000:]

    def run(self, label: str) -> DagsterRun | None:
        runs = self.pg.instance.get_runs(filters=RunsFilter(tags={LAUNCH_TAG: label}))
        return runs[0] if runs else None


@pytest.fixture(scope="module")
def cluster(
    postgres_server: "PostgresServer", tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The demo account behind the sample API, an empty warehouse, and a running daemon."""
    root = tmp_path_factory.mktemp("cluster")
    warehouse = postgres_server.create_database("warehouse")
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        SampleApiServer(build_account()) as api,
        on_postgres(postgres_server, warehouse, root, monkeypatch) as pg,
    ):
        point_sync_at(api, monkeypatch)
        config = yaml.safe_load(DEPLOY_CONFIG.read_text())
        config["run_monitoring"].update(DAEMON_CLOCKS)
        (root / "daemon_home").mkdir()
        (root / "daemon_home" / "dagster.yaml").write_text(yaml.safe_dump(config))
        daemon_log = root / "daemon.log"
        daemon = start(
            {**os.environ, "DAGSTER_HOME": str(root / "daemon_home")}, daemon_log, DAEMON
        )
        processes = [daemon]
        try:
            yield Cluster(pg, api, root, daemon_log, processes)
        finally:
            for process in processes:  # a failed test may have left a host running
                stop(process)


def stop(process: subprocess.Popen) -> None:
    """End a process group started by `start`, if its process still runs: politely, then not."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
            return


def wait_until(
    what: str, ready: Callable[[], Any], processes: list[subprocess.Popen], timeout: float = 120
) -> Any:
    """Poll `ready` until it returns something truthy; fail if a process ends first."""
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        assert all(p.poll() is None for p in processes), f"a run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)
    return value


@contextlib.contextmanager
def slot_held(instance: DagsterInstance) -> Iterator[None]:
    """Hold the pool's one slot, as a third run would, until the block ends."""
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(POOL)
    assert storage.claim_concurrency_slot(POOL, "gate", "gate").is_claimed
    try:
        yield
    finally:
        storage.free_concurrency_slots_for_run("gate")


def at_the_pool(cluster: Cluster) -> set[str]:
    """The runs waiting for the pool's slot or holding it.

    The daemon may free the gate's slot, whose run it does not know, before both runs arrive.
    """
    info = cluster.pool()
    runs = {step.run_id for step in info.pending_steps}
    return (runs | {slot.run_id for slot in info.claimed_slots if slot.run_id}) - {"gate"}


def pool_steps() -> set[str]:
    """The steps of `analytics_sync` that run in the pool, as the job declares them."""
    job = defs.resolve_job_def(JOB)
    steps = {node.name for node in job.graph.nodes if node.definition.pool == POOL}
    assert "analytics_dlt" in steps
    return steps


def step_intervals(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each pool step of a run: when it started and when it ended, from the event log."""
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    in_pool = pool_steps()
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        if entry.step_key not in in_pool:
            continue
        kind = entry.get_dagster_event().event_type
        (starts if kind == DagsterEventType.STEP_START else ends)[entry.step_key] = entry.timestamp
    return {step: (starts[step], ends[step]) for step in starts if step in ends}


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.message for entry in instance.all_logs(run_id)]


def assert_warehouse_serves(dsn: str, api: SampleApiServer) -> None:
    """Every table holds exactly the records the API serves now, each once."""
    for table in TABLES:
        served = {record["id"]: as_loaded(record) for record in getattr(api.account, table)}
        columns = sorted({column for record in served.values() for column in record})
        rows = query(dsn, f"SELECT {', '.join(columns)} FROM analytics.{table}")
        loaded = [dict(zip(columns, row, strict=True)) for row in rows]
        assert sorted(row["id"] for row in loaded) == sorted(served), table
        for row in loaded:
            record = served[row["id"]]
            assert {c: row[c] for c in record} == record, (table, row["id"])


def test_two_hosts_launched_at_once_take_turns_at_the_warehouse(cluster: Cluster) -> None:
    # both reach the pool before either may go: the slot is held until both wait for it
    with slot_held(cluster.pg.instance):
        hosts = {label: cluster.launch(label) for label in ("host-a", "host-b")}
        wait_until(
            "both runs reached the pool", lambda: len(at_the_pool(cluster)) == 2, [*hosts.values()]
        )

    codes = {label: process.wait(timeout=RUN_TIMEOUT_S) for label, process in hosts.items()}

    assert codes == {"host-a": 0, "host-b": 0}, cluster.log("host-a") + cluster.log("host-b")
    runs = [cluster.run(label) for label in hosts]
    assert all(run is not None and run.is_success for run in runs)
    intervals = sorted(
        interval
        for run in runs
        if run is not None
        for interval in step_intervals(cluster.pg.instance, run.run_id).values()
    )
    assert len(intervals) == 2 * len(pool_steps()), intervals
    for (_, ended), (started, _) in itertools.pairwise(intervals):
        assert ended <= started, f"two warehouse steps overlapped: {intervals}"
    info = cluster.pool()
    assert info.claimed_slots == [] and info.pending_steps == [], "a slot was not released"
    assert_warehouse_serves(cluster.pg.warehouse, cluster.api)


def test_a_host_killed_mid_load_loses_its_slot_and_the_other_run_completes(
    cluster: Cluster,
) -> None:
    if not query(cluster.pg.warehouse, "SELECT to_regclass('analytics.tests')")[0][0]:
        # run alone: the table to lock comes from a first sync
        assert cluster.launch("first-sync").wait(timeout=RUN_TIMEOUT_S) == 0
    # the second sync brings changes, which only a completed load can show
    cluster.api.account.organizations[0]["name"] = "Renamed after the crash"
    cluster.api.account.tests[0]["name"] = "Retitled after the crash"
    lock = psycopg2.connect(cluster.pg.warehouse)
    try:
        # the victim's load waits on this lock (reads pass), so it is killed mid-load when we choose
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE analytics.tests IN EXCLUSIVE MODE")
        victim = cluster.launch("victim", {"dagster/max_runtime": str(VICTIM_MAX_RUNTIME_S)})
        victim_run = wait_until("the victim's run started", lambda: cluster.run("victim"), [victim])
        wait_until(
            "the victim held the slot",
            lambda: victim_run.run_id in {slot.run_id for slot in cluster.pool().claimed_slots},
            [victim],
        )
        survivor = cluster.launch("survivor")
        waiting = wait_until(
            "the victim's load waited on the warehouse",
            lambda: query(
                cluster.pg.warehouse,
                "SELECT pid, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ),
            [victim, survivor],
        )
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        # PostgreSQL notices a dead client only when it next writes to it
        for pid, _ in waiting:
            query(cluster.pg.warehouse, f"SELECT pg_terminate_backend({pid})")
    finally:
        lock.close()

    code = survivor.wait(timeout=RUN_TIMEOUT_S)

    assert code == 0, cluster.log("survivor")
    (_, statement), *_ = waiting
    assert statement.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE", "MERGE")), statement
    instance = cluster.pg.instance
    victim_run = instance.get_run_by_id(victim_run.run_id)
    survivor_run = cluster.run("survivor")
    assert victim_run is not None and victim_run.is_failure, cluster.daemon_log.read_text()[-3000:]
    assert survivor_run is not None and survivor_run.is_success
    (failed,) = instance.all_logs(victim_run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert failed.timestamp > killed_at, "the run was failed before it was killed"
    assert any("maximum runtime" in m for m in messages(instance, victim_run.run_id))
    # only the daemon's sweep frees the slot of a dead run, and only once the run has been over
    # for free_slots_after_run_end_seconds (it logs nothing: the SQL storages return no count)
    first_step = min(start for start, _ in step_intervals(instance, survivor_run.run_id).values())
    freed_after = DAEMON_CLOCKS["free_slots_after_run_end_seconds"]
    assert first_step > failed.timestamp + freed_after, "the survivor ran while the slot was held"
    assert f"Step blocked by limit for pool {POOL}" in messages(instance, survivor_run.run_id)
    info = cluster.pool()
    assert info.claimed_slots == [] and info.pending_steps == [], "a slot was not released"
    assert_warehouse_serves(cluster.pg.warehouse, cluster.api)
