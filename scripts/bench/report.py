"""Turn medians into BENCHMARKS.md (tables, ratios, targets) and benchmarks.png.

Why one module: the console, the Markdown file and the plot must show the same numbers, so they
are all rendered from one `SizeResult` list.
"""

import contextlib
import datetime
import os
import platform
import statistics
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.harness import TREE_SAMPLING, Measurement

RSS_LIMIT_1X_MB = 350.0
RSS_GROWTH_10X = 1.2
STARTUP_LIMIT_S = 1.5
# The target is importing the package *and building defs*; the package import alone is
# lazy (PEP 562) and would measure nothing.
STARTUP_TARGET = "from analytics_assets import defs"


@dataclass
class Median:
    """Median figures of one variant at one size over its runs."""

    wall_s: float
    requests: int
    peak_rss_mb: float
    largest_process_mb: float
    max_in_flight: int | None
    runs: int
    failures: list[str]

    @classmethod
    def of(cls, runs: list[Measurement]) -> "Median":
        """Medians over the successful runs; failed runs are listed, never averaged in."""
        ok = [m for m in runs if not m.error]
        counted = ok or runs  # all failed: keep the figures for the log, but flag them
        in_flight = [m.max_in_flight for m in counted if m.max_in_flight is not None]
        return cls(
            wall_s=statistics.median(m.wall_s for m in counted),
            requests=round(statistics.median(m.requests for m in counted)),
            peak_rss_mb=statistics.median(m.peak_rss_mb for m in counted),
            largest_process_mb=statistics.median(m.largest_process_mb for m in counted),
            max_in_flight=max(in_flight) if in_flight else None,
            runs=len(ok),
            failures=[m.error for m in runs if m.error],
        )

    @property
    def ok(self) -> bool:
        """At least one run succeeded, so the medians mean something."""
        return self.runs > 0


@dataclass
class SizeResult:
    """Every variant's medians at one account size, with what the account holds."""

    size: str
    scale: str  # "1x", "10x", or the size name for others
    counts: dict[str, int]
    min_requests: int  # the fewest the seed's contract allows: no total, so a full page asks on
    min_requests_with_total: int  # the fewest when the API's `meta.count` total is trusted
    medians: dict[str, Median] = field(default_factory=dict)


@dataclass
class Target:
    """One goal from the brief, evaluated."""

    name: str
    scale: str
    measured: str
    limit: str
    met: bool | None  # None: not measurable in this run


def targets(results: list[SizeResult], startup_s: float | None) -> list[Target]:
    """Evaluate the brief's targets for every size that was measured."""
    out: list[Target] = []
    peak_1x = {}
    for result in results:
        if result.scale == "1x":
            peak_1x = {k: m.peak_rss_mb for k, m in result.medians.items() if m.ok}
    for result in results:
        m = {key: median for key, median in result.medians.items() if median.ok}
        for key, median in result.medians.items():
            if not median.ok:
                out.append(Target(f"{key} runs", result.scale, "all failed", "succeeds", False))
        if "a" in m and "c1" in m:
            ratio = m["c1"].wall_s / m["a"].wall_s
            out.append(
                Target("time (c1)/(a)", result.scale, f"{ratio:.2f}x", "<= 0.50x", ratio <= 0.5)
            )
        if "b" in m and "c2" in m:
            ratio = m["c2"].wall_s / m["b"].wall_s
            out.append(
                Target("time (c2)/(b)", result.scale, f"{ratio:.2f}x", "<= 1.50x", ratio <= 1.5)
            )
            out.append(
                Target(
                    "requests (c2) vs floor (b)",
                    result.scale,
                    f"{m['c2'].requests} vs {m['b'].requests}",
                    "<= floor",
                    m["c2"].requests <= m["b"].requests,
                )
            )
        for key in ("c1", "c2"):
            if key not in m:
                continue
            peak = m[key].peak_rss_mb
            if result.scale == "10x":
                base = peak_1x.get(key)
                limit = RSS_GROWTH_10X * (base if base is not None else RSS_LIMIT_1X_MB)
                basis = "1x peak" if base is not None else f"{RSS_LIMIT_1X_MB:.0f} MB"
                limit_text = f"<= {limit:.0f} MB ({RSS_GROWTH_10X}x {basis})"
            else:
                limit = RSS_LIMIT_1X_MB
                limit_text = f"<= {limit:.0f} MB"
            out.append(
                Target(
                    f"peak RSS ({key})", result.scale, f"{peak:.0f} MB", limit_text, peak <= limit
                )
            )
    if startup_s is not None:
        out.append(
            Target(
                f"start-up `{STARTUP_TARGET}`",
                "-",
                f"{startup_s:.2f} s",
                f"<= {STARTUP_LIMIT_S} s",
                startup_s <= STARTUP_LIMIT_S,
            )
        )
    return out


def _machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM"


def _versions() -> str:
    names = ("dlt", "dagster", "dagster-dlt", "duckdb", "pyarrow")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def markdown(
    results: list[SizeResult],
    labels: dict[str, str],
    startup: dict[str, float],
    latency_ms: float,
    plot_name: str | None,
) -> str:
    """The whole BENCHMARKS.md."""
    lines = [
        "# Benchmarks",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {_machine()}",
        f"- Software: {_versions()}",
        f"- Sample API: a separate process, {latency_ms:g} ms latency per request, page size 32.",
        "- Generated by `scripts/bench.py`; every variant is a fresh subprocess with a fresh "
        "DuckDB file and dlt data dir.",
        "",
    ]
    for result in results:
        counts = ", ".join(f"{n:,} {t}" for t, n in result.counts.items())
        runs = max((m.runs for m in result.medians.values()), default=0)
        scale = f" ({result.scale})" if result.scale != result.size else ""
        lines += [
            f"## `{result.size}`{scale}: {counts}",
            "",
            f"Median of {runs} run(s). Fewest requests the seed's contract allows (no total): "
            f"{result.min_requests}; trusting the API's `meta.count` total: "
            f"{result.min_requests_with_total}.",
            "",
            "| variant | wall (s) | requests | peak RSS, tree (MB) | largest process (MB) "
            "| max in flight |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, m in result.medians.items():
            flight = "" if m.max_in_flight is None else str(m.max_in_flight)
            if not m.ok:
                lines.append(f"| {labels[key]} | failed | {m.requests} | | | {flight} |")
                continue
            lines.append(
                f"| {labels[key]} | {m.wall_s:.2f} | {m.requests} | {m.peak_rss_mb:.0f} "
                f"| {m.largest_process_mb:.0f} | {flight} |"
            )
        failures = [(k, f) for k, m in result.medians.items() for f in m.failures]
        if failures:
            lines += ["", "Failed runs (left out of the medians):", ""]
            lines += [f"- {labels[k]}: {f}" for k, f in failures]
        ratios = []
        m = {key: median for key, median in result.medians.items() if median.ok}
        if "a" in m and "c1" in m:
            ratios.append(f"(c1)/(a) = {m['c1'].wall_s / m['a'].wall_s:.2f}x")
        if "b" in m and "c2" in m:
            ratios.append(f"(c2)/(b) = {m['c2'].wall_s / m['b'].wall_s:.2f}x")
        if ratios:
            lines += ["", "Wall-time ratios: " + "; ".join(ratios) + "."]
        lines.append("")
    lines += [
        "## Targets",
        "",
        "| target | size | measured | limit | met |",
        "|---|---|---:|---|---|",
    ]
    startup_s = startup.get(STARTUP_TARGET)
    for target in targets(results, startup_s):
        met = "n/a" if target.met is None else ("met" if target.met else "**not met**")
        lines.append(
            f"| {target.name} | {target.scale} | {target.measured} | {target.limit} | {met} |"
        )
    lines += [
        "",
        "## Method",
        "",
        "- **Wall time**: from spawning the variant's process to reaping it (imports included).",
        "- **Requests**: the sample API's own count (`GET /_control/stats`) after a "
        "`POST /_control/reset` before each run.",
        "- **Peak RSS, tree**: psutil sums the RSS of the process and all its descendants every "
        "50 ms; the maximum of that and the largest single process is shown"
        + ("" if TREE_SAMPLING else " (**psutil was not installed: largest process only**)")
        + ". A tree sum is "
        "what a machine must hold: a Dagster run keeps helper processes next to its own "
        "(`tail -F` and `watch_orphans.py` for compute logs; with the multiprocess executor, "
        "a process per step). `os.wait4`'s `ru_maxrss` (the *largest process*) only gives the "
        "largest single process, so it would under-report a multi-process run; a 50 ms poll "
        "can miss a shorter spike, so the larger of the two is the figure.",
        "- **Start-up**: `python -c CODE` from the repo root, median of 5 after one warm-up: "
        + "; ".join(f"`{code}` {seconds:.2f} s" for code, seconds in startup.items())
        + f". The target is on `{STARTUP_TARGET}`: importing the package and building "
        "`defs`, what `dagster` waits for before it can do anything. The package import "
        "alone is lazy and measures nothing.",
        "- Each run's warehouse is checked afterwards: all three tables must hold every record "
        "the sample API serves, or the run counts as failed.",
        "- dlt's and Dagster's telemetry is off for every variant: phoning home measures the "
        "network, not the code.",
        "- (a) is `scripts/bench/seed_plain_dlt.py`: the seed's `rest_api_source` config, "
        "corrected only as far as dlt 1.31 needs (page-number paginator with `base_page: 1`, "
        "`total_path: None`, `page_size` as a param; `organization_id` as a resolve param), "
        "default file format and nesting (so `test_run_ids` becomes a child table).",
        "- (b) is `scripts/bench/floor.py`: 4 threads with a session each, stop on a short "
        "page, tests pages fetched speculatively up to 4 in flight, Arrow batches bulk-inserted "
        "into DuckDB. No retries, checks or merge.",
        "- (c1) is `dagster asset materialize -m analytics_assets --select '*'` (every asset and "
        "check, with the repo's `dagster.yaml` in a Dagster instance initialized before timing); "
        "(c2) is `python -m analytics_assets.sources.analytics`.",
        "",
    ]
    if plot_name:
        lines += [f"![time and peak memory against account size]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: list[SizeResult], labels: dict[str, str], path: Path) -> bool:
    """Time and peak RSS against account size, a line per variant; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    sizes = [r.counts.get("tests", 0) for r in results]
    for key, label in labels.items():
        points = [
            (s, r.medians[key])
            for s, r in zip(sizes, results, strict=True)
            if key in r.medians and r.medians[key].ok
        ]
        if not points:
            continue
        xs = [s for s, _ in points]
        time_axis.plot(xs, [m.wall_s for _, m in points], marker="o", label=label)
        memory_axis.plot(xs, [m.peak_rss_mb for _, m in points], marker="o", label=label)
    for axis, title, unit in (
        (time_axis, "Wall time", "seconds"),
        (memory_axis, "Peak RSS of the process tree", "MB"),
    ):
        axis.set_title(title)
        axis.set_xlabel("account size (tests in the account)")
        axis.set_ylabel(unit)
        if len(set(sizes)) > 1:
            axis.set_xscale("log")
            axis.set_yscale("log")
        axis.set_xticks(sizes, [f"{r.scale}\n{n:,}" for r, n in zip(results, sizes, strict=True)])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
    memory_axis.axhline(RSS_LIMIT_1X_MB, color="grey", linestyle="--", linewidth=1)
    memory_axis.annotate(
        f"{RSS_LIMIT_1X_MB:.0f} MB target at 1x",
        (0.01, RSS_LIMIT_1X_MB),
        fontsize=7,
        xycoords=("axes fraction", "data"),
        va="bottom",
        color="grey",
    )
    time_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
