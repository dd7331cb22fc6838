"""Run the demo or the Dagster UI against the bundled sample API, then stop the API.

`make demo` launches the `analytics_sync` job with Dagster's `dg` CLI and prints what was
loaded; `make dev` opens `dg dev` on the same sample data. Both use the Dagster instance in
`DAGSTER_HOME` (the Makefile sets `.dagster_home/`), so the demo's run shows in the UI.
`DEMO_LOG_LEVEL=DEBUG make demo` shows Dagster's run log too.
"""

import json
import os
import subprocess
import sys

from dagster import DagsterInstance

from analytics_assets.pipeline import duckdb_credentials, warehouse_lock
from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets.sources.analytics.settings import RESOURCE_NAMES

BIN = os.path.dirname(sys.executable)


def sample_env(server: SampleApiServer) -> dict[str, str]:
    env = {
        **os.environ,
        # dg checks that the project's venv is the active one
        "VIRTUAL_ENV": os.path.dirname(BIN),
        "PATH": os.pathsep.join([BIN, os.environ.get("PATH", "")]),
        "SOURCES__ANALYTICS__BASE_URL": server.url,
        "SOURCES__ANALYTICS__API_TOKEN": server.token,
    }
    os.environ.update(env)
    return env


def demo(server: SampleApiServer) -> int:
    level = os.environ.get("DEMO_LOG_LEVEL", "WARNING")
    config = {"loggers": {"console": {"config": {"log_level": level}}}}
    command = [f"{BIN}/dg", "launch", "--job", "analytics_sync"]
    command += ["--config-json", json.dumps(config)]
    print(f"Syncing the sample API at {server.url} (Dagster's log at {level} and above)...")
    code = subprocess.run(command, env=sample_env(server)).returncode
    if code:
        print(f"The sync failed (exit {code}); the lines above say why.", file=sys.stderr)
        return code
    with warehouse_lock(print, shared=True) as pipeline, pipeline.sql_client() as client:
        where = f"{pipeline.destination.destination_name}, dataset {pipeline.dataset_name}"
        print(f"\nLoaded into {where}:")
        for table in RESOURCE_NAMES:
            (count,) = client.execute_sql(
                f"SELECT COUNT(*) FROM {client.make_qualified_table_name(table)}"
            )[0]
            print(f"  {pipeline.dataset_name}.{table:<14} {count:>6} rows")
        duckdb = duckdb_credentials(pipeline)
    if duckdb is not None:
        print(f"\nThe warehouse file: {duckdb.database}. Query it with:")
        print(
            f'  {BIN}/python -c "import duckdb; '
            f"print(duckdb.connect('{duckdb.database}', read_only=True)"
            f".sql('FROM analytics.tests LIMIT 5'))\""
        )
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(limit=1)
    if runs:
        print("\nThe run, its checks and its log: `make dev`, then open")
        print(f"  http://127.0.0.1:3000/runs/{runs[0].run_id}")
    return 0


def dev(server: SampleApiServer) -> int:
    print(f"Dagster UI on the sample API at {server.url}; stop with Ctrl-C.")
    try:
        return subprocess.run([f"{BIN}/dg", "dev"], env=sample_env(server)).returncode
    except KeyboardInterrupt:
        return 0


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "demo"
    if mode not in {"demo", "dev"}:
        print("usage: sample_stack.py demo|dev", file=sys.stderr)
        return 2
    with SampleApiServer(build_account()) as server:
        return demo(server) if mode == "demo" else dev(server)


if __name__ == "__main__":
    sys.exit(main())
