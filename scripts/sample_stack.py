"""Run the demo or the Dagster UI against the bundled sample API, then stop the API.

`make demo` launches the `analytics_sync` job with Dagster's `dg` CLI and prints what was
loaded; `make dev` opens `dg dev` on the same sample data. `dg` rather than `dagster asset
materialize` and `dagster dev`, which print supersession warnings pointing to it.
"""

import os
import subprocess
import sys

from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets.sources.analytics.pipeline import analytics_pipeline
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
    command = [f"{BIN}/dg", "launch", "--job", "analytics_sync"]
    code = subprocess.run(command, env=sample_env(server)).returncode
    if code:
        print(f"materialization failed (exit {code}); see the log above", file=sys.stderr)
        return code
    pipeline = analytics_pipeline()
    with pipeline.sql_client() as client:
        print(f"\nLoaded from {server.url} into {pipeline.destination.destination_name}:")
        for table in RESOURCE_NAMES:
            name = client.make_qualified_table_name(table)
            (count,) = client.execute_sql(f"SELECT COUNT(*) FROM {name}")[0]
            print(f"  {pipeline.dataset_name}.{table:<14} {count:>6} rows")
    print(f"API requests served: {server.request_count()}")
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
