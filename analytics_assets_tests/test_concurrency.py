"""The sync under every executor, two syncs at once, and a sync killed mid-run.

Two syncs at once queue on the warehouse lock, whichever executor runs their steps; a sync killed
mid-run is repaired by the next.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from analytics_assets import defs
from analytics_assets.sample_api import Fault, SampleApiServer, build_account
from analytics_assets_tests.conftest import CHECK_KEYS, DAGSTER, MATERIALIZE, REPO, query

# `make demo`'s command: Dagster's dg CLI, configured by pyproject's [tool.dg]
DG_LAUNCH = [os.path.join(os.path.dirname(DAGSTER), "dg"), "launch", "--assets", "*"]
# the same job with a process per step, as a pod per step runs it
MULTIPROCESS = [
    *(DAGSTER, "job", "execute", "-m", "analytics_assets_tests.multiprocess_location"),
    *("-j", "analytics_sync"),
]


@pytest.fixture
def slow_api() -> SampleApiServer:
    """A bigger account behind some latency, so a sync lasts long enough to overlap or kill."""
    account = build_account(project_counts=(33,) * 12, tests_per_project=(2, 3))
    with SampleApiServer(account, latency=0.02) as server:
        yield server


@pytest.fixture
def cli_env(tmp_path: Path, slow_api: SampleApiServer) -> dict[str, str]:
    """A persistent Dagster instance with the repo's dagster.yaml, as `make dev` sets up."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    # created once, as the first `make dev` does: two CLI processes creating a fresh sqlite
    # instance at once can race on its schedule storage's alembic version (seen once in CI)
    DagsterInstance.from_config(str(home)).dispose()
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
        "SOURCES__ANALYTICS__BASE_URL": slow_api.url,
        "SOURCES__ANALYTICS__API_TOKEN": slow_api.token,
    }


def start(env: dict[str, str], log: Path, command: list[str] = MATERIALIZE) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def assert_exactly_served(warehouse: Path, api: SampleApiServer) -> None:
    for table in ("organizations", "projects", "tests"):
        served = len(getattr(api.account, table))
        loaded = query(warehouse, f"SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.{table}")
        assert loaded[0] == (served, served), table


def run_outcomes(home: Path) -> list[tuple[bool, int, int]]:
    """Each run in the instance, oldest first: success, materializations, passed checks."""
    with DagsterInstance.from_config(str(home)) as instance:
        outcomes = []
        for run in reversed(instance.get_runs()):
            records = instance.get_records_for_run(run.run_id, limit=10_000).records
            events = [r.event_log_entry.dagster_event for r in records]
            kinds = [e.event_type for e in events if e is not None]
            passed = sum(
                1
                for e in events
                if e is not None
                and e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
                and e.asset_check_evaluation_data.passed
            )
            outcomes.append(
                (
                    run.is_success,
                    kinds.count(DagsterEventType.ASSET_MATERIALIZATION),
                    passed,
                )
            )
        return outcomes


@pytest.mark.parametrize(
    "executor", ["in_process", "multiprocess", "asset_materialize", "dg_launch"]
)
def test_the_sync_is_the_same_under_every_executor(
    cli_env: dict[str, str], slow_api: SampleApiServer, tmp_path: Path, executor: str
) -> None:
    home = Path(cli_env["DAGSTER_HOME"])
    if executor == "in_process":
        with pytest.MonkeyPatch.context() as monkeypatch:
            for name, value in cli_env.items():
                monkeypatch.setenv(name, value)
            with DagsterInstance.from_config(str(home)) as instance:
                job = defs.resolve_job_def("analytics_sync")
                assert job.execute_in_process(instance=instance, raise_on_error=False).success
    else:
        command = {"multiprocess": MULTIPROCESS, "asset_materialize": MATERIALIZE}.get(
            executor, DG_LAUNCH
        )
        env = {**cli_env, "VIRTUAL_ENV": os.path.dirname(os.path.dirname(DAGSTER))}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert run_outcomes(home) == [(True, 3, len(CHECK_KEYS))]
    assert_exactly_served(Path(cli_env["DESTINATION__DUCKDB__CREDENTIALS"]), slow_api)


def test_two_runs_with_a_process_per_step_interleave_safely(
    cli_env: dict[str, str], slow_api: SampleApiServer, tmp_path: Path
) -> None:
    # each step is its own process: the second run's sync may start between the first run's
    # sync and its checks, and the checks of one table may read while another's wait
    first = start(cli_env, tmp_path / "first.log", MULTIPROCESS)
    time.sleep(0.5)
    second = start(cli_env, tmp_path / "second.log", MULTIPROCESS)

    codes = first.wait(timeout=240), second.wait(timeout=240)

    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert codes == (0, 0), logs[-3000:]
    assert "Another sync is using" in logs, "the runs never overlapped"
    assert run_outcomes(Path(cli_env["DAGSTER_HOME"])) == [
        (True, 3, len(CHECK_KEYS)),
        (True, 3, len(CHECK_KEYS)),
    ]
    assert_exactly_served(Path(cli_env["DESTINATION__DUCKDB__CREDENTIALS"]), slow_api)


def test_a_run_that_fails_beside_another_writes_nothing(
    cli_env: dict[str, str], slow_api: SampleApiServer, tmp_path: Path
) -> None:
    # the first run to list tests meets an outage beyond the retry budget; the other does not
    slow_api.add_fault(Fault("/loadtests/v2/tests", status=503, times=4))
    first = start(cli_env, tmp_path / "first.log", MULTIPROCESS)
    time.sleep(0.5)
    second = start(cli_env, tmp_path / "second.log", MULTIPROCESS)

    codes = sorted((first.wait(timeout=240), second.wait(timeout=240)))

    assert codes[0] == 0 and codes[1] != 0
    outcomes = run_outcomes(Path(cli_env["DAGSTER_HOME"]))
    assert sorted(outcomes) == [(False, 0, 0), (True, 3, len(CHECK_KEYS))], (
        "a failed run materialized"
    )
    assert_exactly_served(Path(cli_env["DESTINATION__DUCKDB__CREDENTIALS"]), slow_api)


def test_two_syncs_at_once_queue_instead_of_failing(
    cli_env: dict[str, str], slow_api: SampleApiServer, tmp_path: Path
) -> None:
    first = start(cli_env, tmp_path / "first.log")
    time.sleep(0.5)
    second = start(cli_env, tmp_path / "second.log")

    codes = first.wait(timeout=240), second.wait(timeout=240)

    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert codes == (0, 0), logs[-3000:]
    assert "Another sync is using" in logs, "the syncs never overlapped"
    assert_exactly_served(Path(cli_env["DESTINATION__DUCKDB__CREDENTIALS"]), slow_api)


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the sync ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.001)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_sync_killed_during_extract_is_repaired_by_the_next(
    cli_env: dict[str, str], slow_api: SampleApiServer, tmp_path: Path
) -> None:
    warehouse = Path(cli_env["DESTINATION__DUCKDB__CREDENTIALS"])
    assert subprocess.run(MATERIALIZE, cwd=REPO, env=cli_env, capture_output=True).returncode == 0
    slow_api.account.organizations[0]["name"] = "after the crash"
    slow_api.reset_requests()

    sync = start(cli_env, tmp_path / "killed.log")
    kill_when(sync, lambda: slow_api.request_count("/loadtests/") >= 3)

    rerun = subprocess.run(MATERIALIZE, cwd=REPO, env=cli_env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_exactly_served(warehouse, slow_api)
    names = [n for (n,) in query(warehouse, "SELECT name FROM analytics.organizations")]
    assert "after the crash" in names


def test_a_sync_killed_during_load_is_repaired_by_the_next(
    cli_env: dict[str, str], slow_api: SampleApiServer, tmp_path: Path
) -> None:
    warehouse = Path(cli_env["DESTINATION__DUCKDB__CREDENTIALS"])
    pipelines = Path(cli_env["DLT_DATA_DIR"]) / "pipelines"

    def loading() -> bool:  # dlt moves a job to started_jobs when it begins loading it
        return any(pipelines.glob("*/load/normalized/*/started_jobs/*"))

    sync = start(cli_env, tmp_path / "killed.log")
    kill_when(sync, loading)

    rerun = subprocess.run(MATERIALIZE, cwd=REPO, env=cli_env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_exactly_served(warehouse, slow_api)
