"""The variants the benchmark compares, each as the command a person would type.

Why commands: (a) and (b) are standalone scripts a reader can run by hand, and (c1) is the
project's documented entry point, so the numbers describe what users actually run. (c2) is no
command of its own: it is the sync step inside (c1), timed by Dagster, because every other
entry point into the package now imports Dagster too and would time that, not the sync. (d8)
and (d3) are (c1) against an API that caps requests in flight, with the project's concurrency
above and at the cap. Every variant talks to whatever the bench's sample API serves (script
size, total or not), so (a), (b) and (c1) of one table always get the same data.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import clean_env

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOKEN = "sample-token"
TABLES = ("organizations", "projects", "tests")
# Phoning home depends on the network, not on the code under test: off for every variant.
NO_TELEMETRY = {"RUNTIME__DLTHUB_TELEMETRY": "false"}
# The Dagster step whose STEP_START..STEP_SUCCESS is (c2); the @dlt_assets name in assets.py.
SYNC_STEP_KEY = "analytics_dlt"
# The over-cap variants: the sample API answers 429 (Retry-After 1 s) beyond 3 in flight.
API_CAP = 3
# (e): the DuckDB setting kilobyte scripts once needed, which the default must be no slower than.
DUCKDB_256MB = '{"memory_limit": "256MB"}'
API_CAP_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class RunContext:
    """Where one run of one variant talks to and writes: a fresh dir per run."""

    api_url: str
    workdir: Path
    dagster_home: Path

    @property
    def duckdb_file(self) -> Path:
        """The run's own warehouse file (never named after the dataset, see facts.md)."""
        return self.workdir / "warehouse.duckdb"


Build = Callable[[RunContext], tuple[list[str], dict[str, str], Path]]


@dataclass(frozen=True)
class Variant:
    """A named command with its environment and working directory.

    `build` is None for a variant read out of another one's runs (`derived_from`); `capped`
    variants run against their own sample API with a concurrency cap (on `bench` and `small`,
    one-line scripts, without a total);
    `dagster_run` variants leave a Dagster run whose sync step the bench times afterwards;
    `long_scripts_1x` variants run only on the 1x account with long scripts, without a total.
    """

    key: str
    label: str
    build: Build | None
    derived_from: str | None = None
    capped: bool = False
    dagster_run: bool = False
    long_scripts_1x: bool = False


def _seed_plain_dlt(ctx: RunContext) -> tuple[list[str], dict[str, str], Path]:
    # An empty project dir: the repo's .dlt config must not help (or hurt) plain dlt.
    (ctx.workdir / "project").mkdir(exist_ok=True)
    env = clean_env(
        **NO_TELEMETRY,
        API_TOKEN=TOKEN,
        DLT_PROJECT_DIR=str(ctx.workdir / "project"),
        DLT_DATA_DIR=str(ctx.workdir / "dlt"),
    )
    command = [sys.executable, str(HERE / "seed_plain_dlt.py"), ctx.api_url, str(ctx.duckdb_file)]
    return command, env, ctx.workdir


def _floor(ctx: RunContext) -> tuple[list[str], dict[str, str], Path]:
    command = [sys.executable, str(HERE / "floor.py"), ctx.api_url, str(ctx.duckdb_file)]
    return command, clean_env(API_TOKEN=TOKEN), ctx.workdir


def _project_env(ctx: RunContext) -> dict[str, str]:
    # The repo's .dlt/config.toml only sets defaults, so the project dir stays the repo.
    return clean_env(
        **NO_TELEMETRY,
        SOURCES__ANALYTICS__BASE_URL=ctx.api_url,
        SOURCES__ANALYTICS__API_TOKEN=TOKEN,
        DESTINATION__DUCKDB__CREDENTIALS=str(ctx.duckdb_file),
        DLT_DATA_DIR=str(ctx.workdir / "dlt"),
        DLT_PROJECT_DIR=str(REPO),
    )


def _dagster_materialize(concurrency: int | None = None, duckdb_config: str = "") -> Build:
    """`dagster asset materialize` of everything, optionally with the sync's concurrency set."""

    def build(ctx: RunContext) -> tuple[list[str], dict[str, str], Path]:
        dagster = Path(sys.executable).parent / "dagster"
        command = [str(dagster), "asset", "materialize", "-m", "analytics_assets", "--select", "*"]
        env = {**_project_env(ctx), "DAGSTER_HOME": str(ctx.dagster_home)}
        if concurrency is not None:
            env["SOURCES__ANALYTICS__CONCURRENCY"] = str(concurrency)
        if duckdb_config:
            env["DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"] = duckdb_config
        return command, env, REPO

    return build


VARIANTS = (
    Variant("a", "(a) seed config, plain dlt", _seed_plain_dlt),
    Variant("b", "(b) hand-written floor", _floor),
    Variant(
        "c1", "(c1) project: dagster asset materialize", _dagster_materialize(), dagster_run=True
    ),
    Variant(
        "c2",
        f"(c2) project: the sync step ({SYNC_STEP_KEY}, timed by Dagster inside c1)",
        None,
        derived_from="c1",
    ),
    Variant(
        "e",
        "(e) project (c1), DuckDB memory_limit 256MB",
        _dagster_materialize(duckdb_config=DUCKDB_256MB),
        dagster_run=True,
        long_scripts_1x=True,
    ),
    Variant(
        "d8",
        f"(d8) project (c1), concurrency 8 vs API cap {API_CAP}",
        _dagster_materialize(8),
        capped=True,
        dagster_run=True,
    ),
    Variant(
        "d3",
        f"(d3) project (c1), concurrency 3 vs API cap {API_CAP}",
        _dagster_materialize(3),
        capped=True,
        dagster_run=True,
    ),
)
