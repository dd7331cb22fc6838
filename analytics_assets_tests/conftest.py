"""Shared test set-up: a hermetic dlt config, the sample API on a loopback port, a temp warehouse.

dlt reads `.dlt/*.toml` from its project dir once per process, so the repo's own `.dlt` (and a
developer's secrets.toml) are hidden before anything imports dlt.
"""

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HERMETIC = tempfile.mkdtemp(prefix="analytics-tests-")
for _name in list(os.environ):
    if _name.startswith(("SOURCES__", "DESTINATION__", "RUNTIME__", "NORMALIZE__", "LOAD__")) or (
        _name in {"API_TOKEN", "DESTINATION_TYPE", "DAGSTER_HOME"}
    ):
        del os.environ[_name]
os.environ["DLT_PROJECT_DIR"] = _HERMETIC
os.environ["DLT_DATA_DIR"] = os.path.join(_HERMETIC, "dlt")
os.environ["DLT_LOCAL_DIR"] = _HERMETIC

import duckdb  # noqa: E402
import pytest  # noqa: E402
from dagster import (  # noqa: E402
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)
from dagster_dlt import DagsterDltResource  # noqa: E402

from analytics_assets import defs  # noqa: E402
from analytics_assets.orchestration.assets import analytics_tables  # noqa: E402
from analytics_assets.orchestration.checks import ASSET_CHECKS, analytics_table_checks  # noqa: E402
from analytics_assets.sample_api import SampleApiServer, build_account  # noqa: E402

# Every check of the definitions (Dagster's builders' too), by table: counts derive from these.
CHECK_KEYS = defs.resolve_asset_graph().asset_check_keys
CHECKS_PER_ASSET = {
    table: sum(key.asset_key.path[-1] == table for key in CHECK_KEYS)
    for table in ("organizations", "projects", "tests")
}
# The checks that query the warehouse, each showing its SQL
SQL_CHECKS = analytics_table_checks.check_keys


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no hermetic dlt dir behind in the system's temp dir."""
    shutil.rmtree(_HERMETIC, ignore_errors=True)


REPO = Path(__file__).resolve().parents[1]
DAGSTER = os.path.join(os.path.dirname(sys.executable), "dagster")
# `dagster asset materialize` of everything, as a user runs it from the repo root
MATERIALIZE = [DAGSTER, "asset", "materialize", "-m", "analytics_assets", "--select", "*"]

# Retries in tests wait milliseconds, not seconds; one test keeps the seed's real defaults.
FAST_RETRY_ENV = {
    "RUNTIME__REQUEST_BACKOFF_FACTOR": "0.01",
    "RUNTIME__REQUEST_MAX_RETRY_DELAY": "0.2",
}


@pytest.fixture
def api() -> Iterator[SampleApiServer]:
    """The bundled sample API with the demo account, on an ephemeral loopback port."""
    with SampleApiServer(build_account()) as server:
        yield server


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DuckDB file and dlt data dir for this test only."""
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(path))
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    return path


@pytest.fixture
def env(api: SampleApiServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> SampleApiServer:
    """Point the sync at the sample API and the temp warehouse, with fast retries."""
    return point_sync_at(api, monkeypatch)


def point_sync_at(server: SampleApiServer, monkeypatch: pytest.MonkeyPatch) -> SampleApiServer:
    """Configure the sync for a sample API server, as a user would with environment variables."""
    monkeypatch.setenv("SOURCES__ANALYTICS__BASE_URL", server.url)
    monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", server.token)
    for name, value in FAST_RETRY_ENV.items():
        monkeypatch.setenv(name, value)
    return server


def run_sync(
    *tables: str, raise_on_error: bool = True, instance: DagsterInstance | None = None
) -> ExecuteInProcessResult:
    """Materialize the named tables (all when none) in process, as the UI's Materialize does.

    Each selected table's checks run too, as they do with every materialization in the UI.
    """
    selection = [AssetKey(["analytics", t]) for t in tables] if tables else None
    return materialize(
        [analytics_tables, *ASSET_CHECKS],
        resources={"dlt": DagsterDltResource()},
        selection=selection,
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def query(path: Path, sql: str) -> list[tuple]:
    """Read the warehouse read-only, as a user would after a sync."""
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()
