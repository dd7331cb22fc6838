"""`make bench`: plain dlt, a hand-written floor and this project, side by side on one API.

Why: "faster" needs a baseline a user recognizes (the seed's config on plain dlt) and a floor
that says how much is left to win. Every variant runs as its own fresh process against the
sample API (a separate process, 30 ms per request), so imports, threads and child processes all
count, and nothing one variant caches helps the next. Each account size runs with two script
shapes, one-line scripts and 5 KB scripts (real load-test scripts are kilobytes), and against
both API contracts: without a total (the seed's contract, the headline) and with a `meta.count`
total (one-line scripts only, unless `--shapes-total` says more), since what a client can skip
depends on it. Each combination gets a sample API process of its own. The project's sync step
is also timed on its own, by Dagster inside the `dagster asset materialize` run, since no other
entry point into the package leaves Dagster's imports out. Last, the project runs above and at
an API's concurrency cap, on `bench` and on the `small` account, since asking for too much must
not cost much more than asking for enough.

    python scripts/bench.py                      # 1x (3 runs) and 10x (1 run); BENCHMARKS.md
    python scripts/bench.py --sizes bench --runs 1
    python scripts/bench.py --shapes 0           # one-line scripts only
    python scripts/bench.py --contracts seed     # without a total only
    python scripts/bench.py --quick              # smoke run on the demo account, into a temp dir
"""

import argparse
import functools
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    Measurement,
    SampleApi,
    clean_env,
    reported_work_s,
    run_measured,
    scratch_dir,
    warehouse_rows,
)
from bench.report import (
    CONTRACTS,
    STARTUP_BUILT,
    STARTUP_EXITED,
    STARTUP_TARGET,
    Median,
    SizeResult,
    markdown,
    plot,
    shape_name,
)
from bench.variants import (
    API_CAP,
    API_CAP_RETRY_AFTER_S,
    REPO,
    SYNC_STEP_KEY,
    TABLES,
    VARIANTS,
    RunContext,
    Variant,
)

SCALES = {"bench": "1x", "bench10x": "10x"}
TEN_X = "bench10x"
# What (a) says at 10x where it is skipped: 185 s and 5 GB with one-line scripts, worse beyond.
PLAIN_10X_SKIPPED = "at 10x only with one-line scripts (see Method; `--plain-10x-all`)"
PAGE_SIZE = 32
STARTUP_RUNS = 5


@functools.cache
def account_facts(size: str) -> tuple[dict[str, int], int, int, int]:
    """Record counts, the fewest requests possible (without and with a total) and the lists.

    From the same deterministic account the sample API serves. Without a total, a list of n
    items costs n // 32 + 1 pages (a full last page asks once more); with one, ceil(n / 32)
    pages and at least one. The lists: the organizations list, one projects list per
    organization and the tests list. Built with one-line scripts whatever the shape: a
    script's size changes no count (scripts draw from a random generator of their own), and
    bench10x with 5 KB scripts would take 20 s and 2 GB here. Should that ever change, every
    run's row check against these counts fails loudly.
    """
    from analytics_assets.sample_api.server import ACCOUNT_SIZES

    account = ACCOUNT_SIZES[size](0)
    per_org = Counter(project["organization_id"] for project in account.projects)
    lists = [per_org.get(org["id"], 0) for org in account.organizations] + [len(account.tests)]
    counts = {
        "organizations": len(account.organizations),
        "projects": len(account.projects),
        "tests": len(account.tests),
    }
    without_total = 1 + sum(n // PAGE_SIZE + 1 for n in lists)
    with_total = 1 + sum(max(1, math.ceil(n / PAGE_SIZE)) for n in lists)
    return counts, without_total, with_total, 1 + len(lists)


def measure_startup(code: str, runs: int) -> tuple[float, float]:
    """Median seconds of `python -c CODE` from spawning it until CODE has run, and until exit.

    From the repo root, after one warm-up; the child says on stdout when CODE has run. The
    first is the issue's start-up, what `dagster` waits for; the second adds the interpreter's
    teardown, which no code of the package runs.
    """
    command = [sys.executable, "-c", f"{code}\nprint('ran', flush=True)"]
    env = clean_env(DLT_PROJECT_DIR=str(REPO))
    ran, exited = [], []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE) as child:
            assert child.stdout is not None
            said = child.stdout.readline()
            ran_s = time.perf_counter() - start
            child.stdout.read()
        exited_s = time.perf_counter() - start
        if child.returncode or said.strip() != b"ran":
            raise RuntimeError(f"{code!r} failed (exit code {child.returncode}, said {said!r})")
        if attempt:  # the first run only warms the page cache
            ran.append(ran_s)
            exited.append(exited_s)
    return statistics.median(ran), statistics.median(exited)


def init_dagster_home(path: Path) -> None:
    """A Dagster instance whose storage exists before timing, as on any machine past day one.

    It takes the repo's `deploy/local/dagster.yaml` (as `make demo` does), with telemetry
    off.
    """
    import yaml

    path.mkdir(parents=True)
    settings_file = REPO / "deploy" / "local" / "dagster.yaml"
    settings = yaml.safe_load(settings_file.read_text()) if settings_file.exists() else None
    settings = {**(settings or {}), "telemetry": {"enabled": False}}
    (path / "dagster.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    code = "from dagster import DagsterInstance; DagsterInstance.get().get_runs(limit=1)"
    subprocess.run([sys.executable, "-c", code], env=clean_env(DAGSTER_HOME=str(path)), check=True)


def sync_step_seconds(dagster_home: Path) -> float:
    """Dagster's own duration of the sync step in the latest run: STEP_START to STEP_SUCCESS.

    Why from the instance: the step's time leaves out interpreter start-up, loading `defs`, run
    set-up and the check step, which the run's wall time includes. Read in this process after
    the run has ended, so it costs the measured run nothing.
    """
    from dagster import DagsterEventType, DagsterInstance

    wanted = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            raise LookupError(f"no run in the Dagster instance at {dagster_home}")
        events = instance.all_logs(runs[0].run_id, of_type=wanted)
    stamps = {
        event.dagster_event.event_type: event.timestamp
        for event in events
        if event.step_key == SYNC_STEP_KEY and event.dagster_event is not None
    }
    if stamps.keys() != wanted:
        found = sorted(str(kind) for kind in stamps)
        raise LookupError(f"run {runs[0].run_id}: {SYNC_STEP_KEY} events {found}, not both")
    return stamps[DagsterEventType.STEP_SUCCESS] - stamps[DagsterEventType.STEP_START]


def run_variant(
    variant: Variant,
    api: SampleApi,
    workdir: Path,
    dagster_home: Path,
    expected: dict[str, int],
    timeout_s: float,
) -> Measurement:
    """One measured run in a fresh dir; the warehouse must hold every record afterwards."""
    assert variant.build is not None, f"{variant.key} is read out of {variant.derived_from}"
    workdir.mkdir(parents=True)
    ctx = RunContext(api_url=api.url, workdir=workdir, dagster_home=dagster_home)
    command, env, cwd = variant.build(ctx)
    log = workdir / "output.log"
    api.reset()
    measurement = run_measured(command, env, cwd, log, timeout_s)
    stats = api.stats()
    measurement.requests = stats["requests"]
    measurement.max_in_flight = stats.get("max_in_flight")
    measurement.throttled = stats.get("throttled")
    measurement.work_s = reported_work_s(log)
    if measurement.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        measurement.error = f"exit {measurement.returncode}: " + " / ".join(tail)[-400:]
    else:
        measurement.rows = warehouse_rows(ctx.duckdb_file, TABLES)
        if measurement.rows != expected:
            measurement.error = f"rows {measurement.rows}, expected {expected}"
    if variant.dagster_run and measurement.returncode == 0:
        try:
            measurement.step_s = sync_step_seconds(dagster_home)
        except LookupError as exc:
            print(f"{variant.key}: no sync step timing: {exc}", flush=True)
        if variant.capped or variant.long_scripts_1x:  # the step goes in their work column
            measurement.work_s = measurement.step_s
    if measurement.error:
        kept = Path(tempfile.mkdtemp(prefix=f"bench-failed-{variant.key}-"))
        shutil.copy(log, kept / "output.log")
        measurement.error += f" (log: {kept / 'output.log'})"
    return measurement


def step_measurement(run: Measurement) -> Measurement:
    """(c2) out of one (c1) run: its sync step's time as work; wall and memory are n/a."""
    error = "its (c1) run failed" if run.error else ""
    if not error and run.step_s is None:
        error = f"the (c1) run left no STEP_START/STEP_SUCCESS of {SYNC_STEP_KEY}"
    return Measurement(
        wall_s=None,
        peak_rss_mb=None,
        largest_process_mb=None,
        returncode=run.returncode,
        requests=run.requests,
        max_in_flight=run.max_in_flight,
        throttled=run.throttled,
        work_s=run.step_s,
        step_s=run.step_s,
        rows=run.rows,
        error=error,
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def measure(
    variants: list[Variant],
    api: SampleApi,
    runs: int,
    tag: str,
    scratch: Path,
    dagster_home: Path,
    counts: dict[str, int],
    timeout_s: float,
) -> dict[str, list[Measurement]]:
    """Every variant's runs against one API, interleaved so drift hits every variant alike."""
    measured: dict[str, list[Measurement]] = {v.key: [] for v in variants}
    for run in range(runs):
        for variant in variants:
            if variant.build is None:
                continue
            workdir = scratch / f"{tag}-{variant.key}-{run}"
            m = run_variant(variant, api, workdir, dagster_home, counts, timeout_s)
            shutil.rmtree(workdir, ignore_errors=True)
            measured[variant.key].append(m)
            status = f"FAILED {m.error}" if m.error else "ok"
            throttled = f", {m.throttled} throttled" if m.throttled else ""
            if m.step_s is not None:
                work = f", sync step {_seconds(m.step_s)}"
            else:
                work = f", work {_seconds(m.work_s)}" if m.work_s is not None else ""
            print(
                f"{tag} run {run + 1}/{runs} {variant.label}: {_seconds(m.wall_s)}{work}, "
                f"{m.requests} requests{throttled}, {m.peak_rss_mb or 0:.0f} MB peak ({status})",
                flush=True,
            )
    for variant in variants:
        if variant.derived_from is not None:
            measured[variant.key] = [step_measurement(m) for m in measured[variant.derived_from]]
    return measured


@dataclass(frozen=True)
class Group:
    """One sample API process and the variants run against it: one table of the report.

    `not_run` names variants skipped on purpose for this table, with the reason its row shows.
    """

    size: str
    script_kb: float
    contract: str
    variants: tuple[Variant, ...]
    cap: int | None = None
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """How the console names the group: `bench 5 KB scripts seed cap 3`."""
        cap = f" cap {self.cap}" if self.cap else ""
        return f"{self.size} {shape_name(self.script_kb)} {self.contract}{cap}"

    def api(self, latency_ms: float, scratch: Path) -> SampleApi:
        """The sample API this group's variants talk to, serving its shape and contract."""
        options: dict[str, Any] = {"script_kb": self.script_kb, "count": self.contract == "total"}
        if self.cap:
            options |= {"concurrency_cap": self.cap, "cap_retry_after": API_CAP_RETRY_AFTER_S}
        return SampleApi(self.size, latency_ms, scratch, **options)


def plan(args: argparse.Namespace, variants: list[Variant]) -> list[Group]:
    """Every table the run will produce, in the order the groups run.

    Per size and shape: without a total, then with one if the shape is in `--shapes-total`;
    (a) is skipped at 10x except with one-line scripts (or `--plain-10x-all`), with a row that
    says so. Last, the capped API on each `--cap-sizes` account, one-line scripts, no total.
    """
    plain = tuple(v for v in variants if not v.capped)
    plain_keys = {v.key for v in plain}
    capped = tuple(v for v in variants if v.capped)
    contracts = [c for c in CONTRACTS if c in args.contracts]  # the headline first
    groups = []
    for size in args.sizes:
        for kb in args.shapes:
            skip_plain = size == TEN_X and kb != 0 and not args.plain_10x_all
            not_run = {"a": PLAIN_10X_SKIPPED} if skip_plain and "a" in plain_keys else {}
            run = tuple(v for v in plain if not (skip_plain and v.key == "a"))
            run = tuple(v for v in run if not v.long_scripts_1x or (size != TEN_X and kb))
            for contract in contracts:
                if contract == "total" and kb not in args.shapes_total:
                    continue
                here = tuple(v for v in run if not v.long_scripts_1x or contract == "seed")
                if here:
                    groups.append(Group(size, kb, contract, here, not_run=not_run))
    if capped and "seed" in contracts:
        groups += [Group(size, 0, "seed", capped, cap=API_CAP) for size in args.cap_sizes]
    return groups


def run_group(
    group: Group, args: argparse.Namespace, scratch: Path, dagster_home: Path
) -> SizeResult:
    """Start the group's sample API, run its variants, and keep their medians."""
    counts, min_requests, min_with_total, lists = account_facts(group.size)
    result = SizeResult(
        size=group.size,
        scale=SCALES.get(group.size, group.size),
        script_kb=group.script_kb,
        contract=group.contract,
        counts=counts,
        min_requests=min_requests,
        min_requests_with_total=min_with_total,
        lists=lists,
        cap=group.cap,
        not_run=dict(group.not_run),
    )
    if not any(v.build is not None for v in group.variants):
        return result  # every variant of this table was skipped: nothing to start an API for
    runs = args.runs_10x if group.size == TEN_X else args.runs
    with group.api(args.latency_ms, scratch) as api:
        measured = measure(
            list(group.variants), api, runs, group.tag, scratch, dagster_home, counts, args.timeout
        )
    result.medians = {key: Median.of(ms) for key, ms in measured.items()}
    return result


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _shapes(parser: argparse.ArgumentParser, text: str, option: str) -> list[float]:
    """Script sizes in KiB from a comma list; 0 is the one-line scripts."""
    try:
        shapes = [float(item) for item in _comma_list(text)]
    except ValueError:
        parser.error(f"{option}: expected KiB numbers such as 0,5, got {text!r}")
    if any(kb < 0 for kb in shapes):
        parser.error(f"{option}: script sizes must be >= 0, got {text!r}")
    return list(dict.fromkeys(shapes))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the comma lists split; `--quick` overrides sizes and runs."""
    from analytics_assets.sample_api.server import ACCOUNT_SIZES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    keys = ",".join(v.key for v in VARIANTS)
    sizes = ",".join(sorted(ACCOUNT_SIZES))
    parser.add_argument("--sizes", default="bench,bench10x", help=f"comma list of {sizes}")
    parser.add_argument(
        "--shapes",
        default="0,5",
        help="comma list of script sizes in KiB, each against its own sample API "
        "(`--script-kb`); 0 is one-line scripts (default: %(default)s)",
    )
    parser.add_argument(
        "--shapes-total",
        help="the shapes that also run with a total (`--contracts total`); default: 0 only, "
        "to bound the bench's duration",
    )
    parser.add_argument(
        "--contracts",
        default=",".join(CONTRACTS),
        help="comma list: seed (no total, the seed's contract) and/or total (`--count`)",
    )
    parser.add_argument(
        "--plain-10x-all",
        action="store_true",
        help="run (a), plain dlt, at 10x for every shape, not only one-line scripts (slow, GBs)",
    )
    parser.add_argument(
        "--cap-sizes",
        help="comma list of sizes (d8)/(d3) run on against a capped API, one-line scripts, "
        "no total; '' for none (default: bench,small; --quick: small)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per variant (median), not 10x")
    parser.add_argument("--runs-10x", type=int, default=1, help="runs per variant at bench10x")
    parser.add_argument(
        "--variants",
        default=keys,
        help=f"comma list of {keys}; c2 is read out of c1's runs, d8/d3 run on --cap-sizes",
    )
    parser.add_argument("--latency-ms", type=float, default=30.0, help="sample API latency")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--output-dir", type=Path, help="where BENCHMARKS.md goes (repo root)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: demo size, every shape, 1 run, both contracts and the cap on small, "
        "into a temp dir",
    )
    args = parser.parse_args(argv)
    args.contracts = _comma_list(args.contracts)
    unknown = set(args.contracts) - set(CONTRACTS)
    if unknown:
        parser.error(f"unknown contract(s) {sorted(unknown)}: choose from {list(CONTRACTS)}")
    args.variants = _comma_list(args.variants)
    unknown = set(args.variants) - {v.key for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}: choose from {keys}")
    if args.quick:
        args.sizes, args.runs = "demo", 1
        args.cap_sizes = "small" if args.cap_sizes is None else args.cap_sizes
        args.output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-quick-"))
    args.sizes = _comma_list(args.sizes)
    args.cap_sizes = _comma_list("bench,small" if args.cap_sizes is None else args.cap_sizes)
    unknown = set(args.sizes + args.cap_sizes) - set(ACCOUNT_SIZES)
    if unknown:
        parser.error(f"unknown size(s) {sorted(unknown)}: choose from {sizes}")
    args.shapes = _shapes(parser, args.shapes, "--shapes")
    if args.shapes_total is None:
        args.shapes_total = [kb for kb in args.shapes if kb == 0]
    else:
        args.shapes_total = _shapes(parser, args.shapes_total, "--shapes-total")
        extra = set(args.shapes_total) - set(args.shapes)
        if extra:
            parser.error(f"--shapes-total {sorted(extra)} not in --shapes {args.shapes}")
    args.output_dir = (args.output_dir or REPO).resolve()
    return args


def _sort_key(contracts: list[str], shapes: list[float]) -> Callable[[SizeResult], tuple]:
    """Without a total first (the headline), then the capped APIs, then with a total.

    Within a contract one shape after another, sizes in the order they ran.
    """
    return lambda r: (contracts.index(r.contract), r.cap is not None, shapes.index(r.script_kb))


def main(argv: list[str] | None = None) -> int:
    """Run every planned group, print the tables, write the report and the plot."""
    args = parse_args(argv)
    keys = set(args.variants)
    keys |= {v.derived_from for v in VARIANTS if v.key in keys and v.derived_from}
    variants = [v for v in VARIANTS if v.key in keys]
    labels = {v.key: v.label for v in variants}
    groups = plan(args, variants)
    print("plan: " + "; ".join(g.tag for g in groups), flush=True)
    results: list[SizeResult] = []
    with scratch_dir("bench-") as scratch:
        dagster_home = scratch / "dagster_home"
        init_dagster_home(dagster_home)
        startup_runs = 1 if args.quick else STARTUP_RUNS
        built_s, exited_s = measure_startup(STARTUP_TARGET, startup_runs)
        print(f"start-up: `{STARTUP_TARGET}` {built_s:.2f} s, {exited_s:.2f} s to the exit")
        for group in groups:
            results.append(run_group(group, args, scratch, dagster_home))

    contracts = [c for c in CONTRACTS if c in args.contracts]
    results.sort(key=_sort_key(contracts, [*args.shapes, 0]))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.output_dir / "benchmarks.png"
    plotted = plot(results, labels, plot_path)
    if not plotted:
        print("no plot written: matplotlib is not installed (pip install -e '.[bench]')")
    text = markdown(
        results,
        labels,
        {STARTUP_BUILT: built_s, STARTUP_EXITED: exited_s},
        startup_runs,
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
