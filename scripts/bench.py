"""`make bench`: plain dlt, a hand-written floor and this project, side by side on one API.

Why: "faster" needs a baseline a user recognizes (the seed's config on plain dlt) and a floor
that says how much is left to win. Every variant runs as its own fresh process against the
sample API (a separate process, 30 ms per request), so imports, threads and child processes all
count, and nothing one variant caches helps the next.

    python scripts/bench.py                      # 1x (3 runs) and 10x (1 run); BENCHMARKS.md
    python scripts/bench.py --sizes bench --runs 1
    python scripts/bench.py --quick              # smoke run on the demo account, into a temp dir
"""

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.harness import (
    Measurement,
    SampleApi,
    clean_env,
    run_measured,
    scratch_dir,
    warehouse_rows,
)
from bench.report import Median, SizeResult, markdown, plot
from bench.variants import REPO, TABLES, VARIANTS, RunContext, Variant

SCALES = {"bench": "1x", "bench10x": "10x"}
PAGE_SIZE = 32
STARTUP_RUNS = 5
STARTUP_IMPORT = "import analytics_assets"
STARTUP_DEFS = "from analytics_assets import defs"


def account_facts(size: str) -> tuple[dict[str, int], int, int]:
    """Record counts and the fewest requests possible, from the same deterministic account.

    Without a total, a list of n items costs n // 32 + 1 pages (a full last page asks once
    more); with one, ceil(n / 32) pages and at least one.
    """
    from analytics_assets.sample_api.server import ACCOUNT_SIZES

    account = ACCOUNT_SIZES[size]()
    per_org = Counter(project["organization_id"] for project in account.projects)
    lists = [per_org.get(org["id"], 0) for org in account.organizations] + [len(account.tests)]
    counts = {
        "organizations": len(account.organizations),
        "projects": len(account.projects),
        "tests": len(account.tests),
    }
    without_total = 1 + sum(n // PAGE_SIZE + 1 for n in lists)
    with_total = 1 + sum(max(1, math.ceil(n / PAGE_SIZE)) for n in lists)
    return counts, without_total, with_total


def measure_startup(code: str, runs: int) -> float:
    """Median wall time of `python -c CODE` from the repo root, after one warm-up."""
    command = [sys.executable, "-c", code]
    env = clean_env(DLT_PROJECT_DIR=str(REPO))
    times = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True)
        if attempt:  # the first run only warms the page cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def init_dagster_home(path: Path) -> None:
    """A Dagster instance whose storage exists before timing, as on any machine past day one.

    It takes the repo's `dagster.yaml` when there is one (as `make demo` does), with telemetry
    off.
    """
    import yaml

    path.mkdir(parents=True)
    settings_file = REPO / "dagster.yaml"
    settings = yaml.safe_load(settings_file.read_text()) if settings_file.exists() else None
    settings = {**(settings or {}), "telemetry": {"enabled": False}}
    (path / "dagster.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    code = "from dagster import DagsterInstance; DagsterInstance.get().get_runs(limit=1)"
    subprocess.run([sys.executable, "-c", code], env=clean_env(DAGSTER_HOME=str(path)), check=True)


def run_variant(
    variant: Variant,
    api: SampleApi,
    workdir: Path,
    dagster_home: Path,
    expected: dict[str, int],
    timeout_s: float,
) -> Measurement:
    """One measured run in a fresh dir; the warehouse must hold every record afterwards."""
    workdir.mkdir(parents=True)
    ctx = RunContext(api_url=api.url, workdir=workdir, dagster_home=dagster_home)
    command, env, cwd = variant.build(ctx)
    log = workdir / "output.log"
    api.reset()
    measurement = run_measured(command, env, cwd, log, timeout_s)
    stats = api.stats()
    measurement.requests = stats["requests"]
    measurement.max_in_flight = stats.get("max_in_flight")
    if measurement.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        measurement.error = f"exit {measurement.returncode}: " + " / ".join(tail)[-400:]
    else:
        measurement.rows = warehouse_rows(ctx.duckdb_file, TABLES)
        if measurement.rows != expected:
            measurement.error = f"rows {measurement.rows}, expected {expected}"
    if measurement.error:
        kept = Path(tempfile.mkdtemp(prefix=f"bench-failed-{variant.key}-"))
        shutil.copy(log, kept / "output.log")
        measurement.error += f" (log: {kept / 'output.log'})"
    return measurement


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; `--quick` overrides sizes and runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="bench,bench10x", help="comma list: demo,bench,bench10x")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant (median), not 10x")
    parser.add_argument("--runs-10x", type=int, default=1, help="runs per variant at bench10x")
    parser.add_argument("--variants", default="a,b,c1,c2", help="comma list of a,b,c1,c2")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="sample API latency")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--output-dir", type=Path, help="where BENCHMARKS.md goes (repo root)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: demo size, 1 run, into a temp dir"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.runs = "demo", 1
        args.output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-quick-"))
    args.output_dir = (args.output_dir or REPO).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every variant at every size, print the tables and write BENCHMARKS.md and the plot."""
    args = parse_args(argv)
    keys = args.variants.split(",")
    variants = [v for v in VARIANTS if v.key in keys]
    labels = {v.key: v.label for v in variants}
    results: list[SizeResult] = []
    with scratch_dir("bench-") as scratch:
        dagster_home = scratch / "dagster_home"
        init_dagster_home(dagster_home)
        startup_runs = 1 if args.quick else STARTUP_RUNS
        startup_s = measure_startup(STARTUP_IMPORT, startup_runs)
        # The package may load Dagster lazily; what `dagster` and the UI wait for is the defs.
        defs_s = measure_startup(STARTUP_DEFS, startup_runs)
        print(f"start-up: `{STARTUP_IMPORT}` {startup_s:.2f} s, `{STARTUP_DEFS}` {defs_s:.2f} s")
        for size in args.sizes.split(","):
            counts, min_requests, min_with_total = account_facts(size)
            result = SizeResult(size, SCALES.get(size, size), counts, min_requests, min_with_total)
            runs = args.runs_10x if size == "bench10x" else args.runs
            measured: dict[str, list[Measurement]] = {v.key: [] for v in variants}
            with SampleApi(size, args.latency_ms, scratch) as api:
                for run in range(runs):  # interleaved, so drift hits every variant alike
                    for variant in variants:
                        workdir = scratch / f"{size}-{variant.key}-{run}"
                        m = run_variant(variant, api, workdir, dagster_home, counts, args.timeout)
                        shutil.rmtree(workdir, ignore_errors=True)
                        measured[variant.key].append(m)
                        status = f"FAILED {m.error}" if m.error else "ok"
                        print(
                            f"{size} run {run + 1}/{runs} {variant.label}: {m.wall_s:.2f} s, "
                            f"{m.requests} requests, {m.peak_rss_mb:.0f} MB peak ({status})",
                            flush=True,
                        )
            result.medians = {key: Median.of(ms) for key, ms in measured.items()}
            results.append(result)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.output_dir / "benchmarks.png"
    plotted = plot(results, labels, plot_path)
    if not plotted:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
    text = markdown(
        results,
        labels,
        {STARTUP_IMPORT: startup_s, STARTUP_DEFS: defs_s},
        args.latency_ms,
        plot_path.name if plotted else None,
    )
    (args.output_dir / "BENCHMARKS.md").write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"wrote {args.output_dir / 'BENCHMARKS.md'}" + (f" and {plot_path}" if plotted else ""))
    failed = any(m.failures for r in results for m in r.medians.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
