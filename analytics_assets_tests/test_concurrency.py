"""Two syncs at once queue on the warehouse lock; a sync killed mid-run is repaired by the next."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets_tests.conftest import query

REPO = Path(__file__).resolve().parents[1]
DAGSTER = os.path.join(os.path.dirname(sys.executable), "dagster")
MATERIALIZE = [DAGSTER, "asset", "materialize", "-m", "analytics_assets", "--select", "*"]


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
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
        "SOURCES__ANALYTICS__BASE_URL": slow_api.url,
        "SOURCES__ANALYTICS__API_TOKEN": slow_api.token,
    }


def start(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        MATERIALIZE,
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
