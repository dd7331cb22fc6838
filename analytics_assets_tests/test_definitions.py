"""The code location loads, with exactly the documented assets, lineage and job."""

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

from analytics_assets import defs
from analytics_assets.sample_api import SampleApiServer
from analytics_assets_tests.conftest import CHECK_KEYS, REPO, query

ORGS, PROJECTS, TESTS = (AssetKey(["analytics", t]) for t in ("organizations", "projects", "tests"))


def test_asset_graph_is_exactly_the_three_tables_with_their_lineage() -> None:
    graph = defs.resolve_asset_graph()

    assert set(graph.get_all_asset_keys()) == {ORGS, PROJECTS, TESTS}
    assert graph.get(ORGS).parent_keys == set()
    assert graph.get(PROJECTS).parent_keys == {ORGS}
    assert graph.get(TESTS).parent_keys == {PROJECTS}


def test_assets_carry_group_kinds_descriptions_and_columns() -> None:
    graph = defs.resolve_asset_graph()

    for key in (ORGS, PROJECTS, TESTS):
        node = graph.get(key)
        assert node.group_name == "analytics"
        assert node.kinds == {"dlt", "duckdb"}
        assert key.path[-1] in node.description
        columns = node.metadata["dagster/column_schema"].columns
        assert {c.name for c in columns} >= {"id", "created", "updated"}
        assert node.metadata["dagster/table_name"] == f"analytics.{key.path[-1]}"


def test_the_sync_job_covers_every_asset() -> None:
    job = defs.resolve_job_def("analytics_sync")

    assert job.asset_layer.selected_asset_keys == {ORGS, PROJECTS, TESTS}


def test_the_dagster_cli_materializes_everything(env: SampleApiServer, warehouse: Path) -> None:
    command = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        *("asset", "materialize", "-m", "analytics_assets", "--select", "*"),
    ]
    done = subprocess.run(command, cwd=REPO, env=os.environ, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr[-3000:]
    for table, records in (
        ("organizations", env.account.organizations),
        ("tests", env.account.tests),
    ):
        assert query(warehouse, f"SELECT COUNT(*) FROM analytics.{table}")[0][0] == len(records)


def _python(code: str, env: dict[str, str], cwd: Path = REPO) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_definitions_load_before_any_setting_is_made(tmp_path: Path) -> None:
    # no token, no base URL: the code location must load so the user can see it, then configure
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "API_TOKEN"))}
    code = (
        "from analytics_assets import defs; "
        "print(len(defs.resolve_asset_graph().get_all_asset_keys()))"
    )

    assert _python(code, env | {"DLT_DATA_DIR": str(tmp_path)}) == "3"


def test_the_kinds_name_the_destination_dlt_resolves(tmp_path: Path) -> None:
    code = (
        "from analytics_assets import defs; from dagster import AssetKey; "
        "print(sorted(defs.resolve_asset_graph().get(AssetKey(['analytics', 'tests'])).kinds))"
    )
    project = tmp_path / "project"
    (project / ".dlt").mkdir(parents=True)
    base = {k: v for k, v in os.environ.items() if k != "DESTINATION_TYPE"}
    base |= {"DLT_PROJECT_DIR": str(project), "DLT_DATA_DIR": str(tmp_path / "data")}

    assert _python(code, base) == "['dlt', 'duckdb']"
    assert _python(code, base | {"DESTINATION_TYPE": "postgres"}) == "['dlt', 'postgres']"
    (project / ".dlt" / "config.toml").write_text('destination_type = "postgres"\n')
    assert _python(code, base) == "['dlt', 'postgres']"


def dg(*args: str) -> subprocess.CompletedProcess[str]:
    """Dagster's `dg` CLI from the repo root, in this venv, as `make dev` runs it."""
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "VIRTUAL_ENV": os.path.dirname(bin_dir),
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }
    return subprocess.run(
        [os.path.join(bin_dir, "dg"), *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def test_dg_checks_the_definitions_and_lists_three_assets_and_their_checks() -> None:
    checked = dg("check", "defs")
    listed = dg("list", "defs", "--json")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs_json = json.loads(listed.stdout)
    counts = {kind: len(entries) for kind, entries in defs_json.items()}
    assert counts == {
        "assets": 3,
        "asset_checks": len(CHECK_KEYS),
        "jobs": 2,
        "resources": 1,
        "schedules": 1,
        "sensors": 2,
    }
    assert "SupersessionWarning" not in checked.stderr + listed.stderr
