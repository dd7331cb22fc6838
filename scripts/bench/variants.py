"""The four variants the benchmark compares, each as the command a person would type.

Why commands: (a) and (b) are standalone scripts a reader can run by hand, and (c1)/(c2) are the
project's documented entry points, so the numbers describe what users actually run.
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


@dataclass(frozen=True)
class Variant:
    """A named command with its environment and working directory."""

    key: str
    label: str
    build: Callable[[RunContext], tuple[list[str], dict[str, str], Path]]


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


def _dagster_materialize(ctx: RunContext) -> tuple[list[str], dict[str, str], Path]:
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "asset", "materialize", "-m", "analytics_assets", "--select", "*"]
    return command, {**_project_env(ctx), "DAGSTER_HOME": str(ctx.dagster_home)}, REPO


def _dlt_step(ctx: RunContext) -> tuple[list[str], dict[str, str], Path]:
    command = [sys.executable, "-m", "analytics_assets.sources.analytics"]
    return command, _project_env(ctx), REPO


VARIANTS = (
    Variant("a", "(a) seed config, plain dlt", _seed_plain_dlt),
    Variant("b", "(b) hand-written floor", _floor),
    Variant("c1", "(c1) project: dagster asset materialize", _dagster_materialize),
    Variant("c2", "(c2) project: dlt step alone", _dlt_step),
)
