"""`make demo`'s script: a quiet run that the UI's instance keeps, and a summary on one screen."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance

from analytics_assets_tests.conftest import REPO, query


def test_the_demo_is_quiet_and_its_run_is_in_the_instance_the_ui_reads(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"  # what `make dev` and `dg dev` read, as DAGSTER_HOME
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
    }
    command = [sys.executable, "scripts/sample_stack.py", "demo"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert len(output.strip().splitlines()) <= 24, "the demo's output does not fit on a screen"
    assert " - DEBUG - " not in output and "STEP_START" not in output
    assert query(tmp_path / "warehouse.duckdb", "SELECT COUNT(*) FROM analytics.tests")[0][0] > 0
    assert str(tmp_path / "warehouse.duckdb") in output
    (run_id,) = re.findall(r"/runs/([0-9a-f-]{36})", output)
    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None and run.job_name == "analytics_sync" and run.is_success
