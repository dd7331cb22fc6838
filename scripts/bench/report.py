"""Turn medians into BENCHMARKS.md (tables, ratios, targets) and benchmarks.png.

Why one module: the console, the Markdown file and the plot must show the same numbers, so they
are all rendered from one `SizeResult` list (one per account size, API contract and cap).
"""

import contextlib
import datetime
import os
import platform
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.harness import TREE_SAMPLING, Measurement
from bench.variants import API_CAP, API_CAP_RETRY_AFTER_S, SYNC_STEP_KEY

RSS_LIMIT_1X_MB = 350.0
RSS_GROWTH_10X = 1.2
STARTUP_LIMIT_S = 2.0
# The target is importing the package *and building defs*; the package import alone is
# lazy (PEP 562) and would measure nothing.
STARTUP_TARGET = "from analytics_assets import defs"
# Requests in flight: the project's default SOURCES__ANALYTICS__CONCURRENCY and the floor's pool.
CONCURRENCY = 4
OVER_CAP_LIMIT = 1.5
# The targets per contract: (numerator, denominator, limit) of a time ratio; "work" is the
# floor's own timer or, for c2, Dagster's step time; "wall" is the whole process.
TIME_TARGETS = {
    "seed": (("c2", "b", "work", 1.2), ("c1", "b", "wall", 1.8)),
    "total": (("c1", "a", "wall", 0.5), ("c2", "b", "work", 1.5)),
}
CONTRACTS = {
    "seed": "without a total",
    "total": "with a total",
}
CONTRACT_NOTES = {
    "seed": "the seed's contract: no `meta.count`, sample API started without `--count`",
    "total": "`meta.count` on every paginated list, sample API started with `--count`",
}


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class Median:
    """Median figures of one variant at one size and contract over its runs (None: n/a)."""

    wall_s: float | None
    work_s: float | None
    requests: int
    throttled: int | None
    peak_rss_mb: float | None
    largest_process_mb: float | None
    max_in_flight: int | None
    runs: int
    failures: list[str]

    @classmethod
    def of(cls, runs: list[Measurement]) -> "Median":
        """Medians over the successful runs; failed runs are listed, never averaged in."""
        ok = [m for m in runs if not m.error]
        counted = ok or runs  # all failed: keep the figures for the log, but flag them
        in_flight = [m.max_in_flight for m in counted if m.max_in_flight is not None]
        throttled = _median(m.throttled for m in counted)
        return cls(
            wall_s=_median(m.wall_s for m in counted),
            work_s=_median(m.work_s for m in counted),
            requests=round(statistics.median(m.requests for m in counted)),
            throttled=None if throttled is None else round(throttled),
            peak_rss_mb=_median(m.peak_rss_mb for m in counted),
            largest_process_mb=_median(m.largest_process_mb for m in counted),
            max_in_flight=max(in_flight) if in_flight else None,
            runs=len(ok),
            failures=[m.error for m in runs if m.error],
        )

    @property
    def ok(self) -> bool:
        """At least one run succeeded, so the medians mean something."""
        return self.runs > 0

    def time(self, kind: str) -> float | None:
        """`wall` or `work` seconds."""
        return self.wall_s if kind == "wall" else self.work_s


@dataclass
class SizeResult:
    """Every variant's medians at one account size against one API contract (and cap)."""

    size: str
    scale: str  # "1x", "10x", or the size name for others
    contract: str  # "seed" (no total) or "total" (`meta.count`)
    counts: dict[str, int]
    min_requests: int  # the fewest the seed's contract allows: no total, so a full page asks on
    min_requests_with_total: int  # the fewest when the API's `meta.count` total is trusted
    lists: int  # paginated or not: organizations, one projects list per organization, tests
    cap: int | None = None  # the sample API's concurrency cap, for the over-cap variants
    medians: dict[str, Median] = field(default_factory=dict)

    @property
    def fewest(self) -> int:
        """The fewest requests this result's contract allows."""
        return self.min_requests_with_total if self.contract == "total" else self.min_requests

    @property
    def title(self) -> str:
        """`bench` (1x), without a total."""
        scale = f" ({self.scale})" if self.scale != self.size else ""
        cap = f", API capped at {self.cap} in flight" if self.cap else ""
        return f"`{self.size}`{scale}, {CONTRACTS[self.contract]}{cap}"


@dataclass
class Target:
    """One goal from the brief, evaluated."""

    name: str
    contract: str
    scale: str
    measured: str
    limit: str
    met: bool | None  # None: not measurable in this run


def _time_ratio(m: dict[str, Median], num: str, den: str, kind: str) -> float | None:
    """(num)/(den) on `kind` seconds; c2 only has work (its step), so its kind is work."""
    if num not in m or den not in m:
        return None
    top = m[num].work_s if num == "c2" else m[num].time(kind)
    bottom = m[den].time(kind)
    if top is None or not bottom:
        return None
    return top / bottom


def _ratio_name(num: str, den: str, kind: str) -> str:
    if kind == "work":
        top = "(c2) step" if num == "c2" else f"({num}) work"
        return f"time {top}/({den}) work"
    return f"time ({num})/({den}) wall"


def targets(results: list[SizeResult], startup_s: float | None) -> list[Target]:
    """Evaluate the brief's targets for every size and contract that was measured."""
    out: list[Target] = []
    peak_1x = {
        r.contract: r.medians["c1"].peak_rss_mb
        for r in results
        if r.scale == "1x" and not r.cap and "c1" in r.medians and r.medians["c1"].ok
    }
    for result in results:
        contract = CONTRACTS[result.contract]
        m = {key: median for key, median in result.medians.items() if median.ok}
        for key, median in result.medians.items():
            if not median.ok:
                out.append(
                    Target(f"{key} runs", contract, result.scale, "all failed", "succeeds", False)
                )
        if result.cap:
            if "d8" in m and "d3" in m and m["d3"].wall_s:
                ratio = (m["d8"].wall_s or 0.0) / m["d3"].wall_s
                out.append(
                    Target(
                        f"time (d8)/(d3) wall, concurrency 8 vs 3 at API cap {result.cap}",
                        contract,
                        result.scale,
                        f"{ratio:.2f}x",
                        f"<= {OVER_CAP_LIMIT:.2f}x",
                        ratio <= OVER_CAP_LIMIT,
                    )
                )
            continue
        for num, den, kind, limit in TIME_TARGETS.get(result.contract, ()):
            ratio = _time_ratio(m, num, den, kind)
            if ratio is not None:
                out.append(
                    Target(
                        _ratio_name(num, den, kind),
                        contract,
                        result.scale,
                        f"{ratio:.2f}x",
                        f"<= {limit:.2f}x",
                        ratio <= limit,
                    )
                )
        if "b" in m and "c1" in m:
            floor, project = m["b"].requests, m["c1"].requests
            if result.contract == "seed":
                limit = floor + CONCURRENCY * result.lists
                limit_text = f"<= {limit} (floor + {CONCURRENCY} x {result.lists} lists)"
            else:
                limit, limit_text = floor, f"<= {floor} (floor)"
            out.append(
                Target(
                    "requests (c1) vs floor (b)",
                    contract,
                    result.scale,
                    f"{project} vs {floor}",
                    limit_text,
                    project <= limit,
                )
            )
        if "c1" in m and m["c1"].peak_rss_mb is not None:
            peak = m["c1"].peak_rss_mb
            if result.scale == "10x":
                base = peak_1x.get(result.contract)
                limit = RSS_GROWTH_10X * (base if base is not None else RSS_LIMIT_1X_MB)
                basis = "1x peak" if base is not None else f"{RSS_LIMIT_1X_MB:.0f} MB"
                limit_text = f"<= {limit:.0f} MB ({RSS_GROWTH_10X}x {basis})"
            else:
                limit = RSS_LIMIT_1X_MB
                limit_text = f"<= {limit:.0f} MB"
            out.append(
                Target(
                    "peak RSS (c1)",
                    contract,
                    result.scale,
                    f"{peak:.0f} MB",
                    limit_text,
                    peak <= limit,
                )
            )
    if startup_s is not None:
        out.append(
            Target(
                f"start-up `{STARTUP_TARGET}`",
                "-",
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


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _table(result: SizeResult, labels: dict[str, str]) -> list[str]:
    """The Markdown table of one result; capped results add the API's 429 count."""
    header = ["variant", "wall (s)", "work (s)", "requests"]
    if result.cap:
        header.append("throttled (429)")
    header += ["peak RSS, tree (MB)", "largest process (MB)", "max in flight"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for key, m in result.medians.items():
        wall = "failed" if not m.ok else _num(m.wall_s, 2)
        cells = [labels[key], wall, _num(m.work_s, 2), str(m.requests)]
        if result.cap:
            cells.append(_num(m.throttled))
        cells += [_num(m.peak_rss_mb), _num(m.largest_process_mb), _num(m.max_in_flight)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratios(result: SizeResult) -> str:
    m = {key: median for key, median in result.medians.items() if median.ok}
    pairs = (
        (("d8", "d3", "wall"),)
        if result.cap
        else (("c1", "a", "wall"), ("c1", "b", "wall"), ("c2", "b", "work"))
    )
    found = []
    for num, den, kind in pairs:
        ratio = _time_ratio(m, num, den, kind)
        if ratio is not None:
            found.append(f"{_ratio_name(num, den, kind).removeprefix('time ')} = {ratio:.2f}x")
    return "Time ratios: " + "; ".join(found) + "." if found else ""


def markdown(
    results: list[SizeResult],
    labels: dict[str, str],
    startup: dict[str, float],
    startup_runs: int,
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
        f"- Sample API: a separate process per account size and contract, {latency_ms:g} ms "
        "latency per request, page size 32.",
        f"- API contracts: **{CONTRACTS['seed']}**, {CONTRACT_NOTES['seed']}, the headline; "
        f"**{CONTRACTS['total']}**, {CONTRACT_NOTES['total']}.",
        "- Generated by `scripts/bench.py`; every variant is a fresh subprocess with a fresh "
        "DuckDB file and dlt data dir.",
        "",
    ]
    for result in results:
        counts = ", ".join(f"{n:,} {t}" for t, n in result.counts.items())
        runs = max((m.runs for m in result.medians.values()), default=0)
        lines += [f"## {result.title}: {counts}", ""]
        if result.cap:
            lines += [
                f"Median of {runs} run(s). The sample API answers 429 with `Retry-After: "
                f"{API_CAP_RETRY_AFTER_S:g}` to a request that arrives while {result.cap} are "
                f"being handled; `SOURCES__ANALYTICS__CONCURRENCY` is 8 in (d8), 3 in (d3). "
                f"Requests include the 429s; work is Dagster's `{SYNC_STEP_KEY}` step.",
                "",
            ]
        else:
            lines += [
                f"Median of {runs} run(s). Fewest requests this contract allows: "
                f"{result.fewest} (without a total {result.min_requests}: a full last page asks "
                f"once more; with one {result.min_requests_with_total}); {result.lists} lists.",
                "",
            ]
        lines += _table(result, labels)
        failures = [(k, f) for k, m in result.medians.items() for f in m.failures]
        if failures:
            lines += ["", "Failed runs (left out of the medians):", ""]
            lines += [f"- {labels[k]}: {f}" for k, f in failures]
        ratios = _ratios(result)
        if ratios:
            lines += ["", ratios]
        lines.append("")
    lines += [
        "## Targets",
        "",
        "| target | contract | size | measured | limit | met |",
        "|---|---|---|---:|---|---|",
    ]
    startup_s = startup.get(STARTUP_TARGET)
    for target in targets(results, startup_s):
        met = "n/a" if target.met is None else ("met" if target.met else "**not met**")
        lines.append(
            f"| {target.name} | {target.contract} | {target.scale} | {target.measured} "
            f"| {target.limit} | {met} |"
        )
    lines += [
        "",
        "## Method",
        "",
        "- **Contracts**: each account size runs once per contract, each against its own "
        "sample API process: *" + CONTRACTS["seed"] + "* (the seed's contract and the "
        "headline: a client learns a list has ended only from a short or empty page) and *"
        + CONTRACTS["total"]
        + "* (`--count`: `meta.count` on every paginated list, which a client may use to stop "
        "at the last page). Fewest requests: without a total a list of n items costs "
        "n // 32 + 1 pages, with one max(1, ceil(n / 32)); the organizations list is one "
        "request either way.",
        "- **Wall time**: from spawning the variant's process to reaping it (imports included).",
        "- **Work**: time without interpreter start-up. For (b) the floor's own timer, from "
        "after its imports to the end (it prints `work_s=` last). For (c2) and (d8)/(d3) "
        f"Dagster's own timing of the sync step: after each project run the bench process opens "
        "the run's Dagster instance (`DagsterInstance.from_config(DAGSTER_HOME)`, sqlite), takes "
        f"the latest run and the difference of the timestamps of its `STEP_START` and "
        f"`STEP_SUCCESS` events for step `{SYNC_STEP_KEY}`: the whole dlt sync (extract, "
        "normalize, load into DuckDB), without start-up, loading `defs`, run set-up or the "
        "check step. (c2)'s requests and max in flight are (c1)'s: only the sync step talks "
        "to the API, the checks read the warehouse. Its peak RSS is n/a: the step runs inside "
        "(c1)'s process (the in-process executor), so its memory is part of (c1)'s figures.",
        "- **Requests**: the sample API's own count (`GET /_control/stats`) after a "
        "`POST /_control/reset` before each run, 429s included. **Max in flight**: the most "
        "requests the API held at once, including those it answered at once with 429. "
        "**Throttled**: the API's 429s for its concurrency cap.",
        "- **Peak RSS, tree**: psutil sums the RSS of the process and all its descendants every "
        "50 ms; the maximum of that and the largest single process is shown"
        + ("" if TREE_SAMPLING else " (**psutil was not installed: largest process only**)")
        + ". A tree sum is "
        "what a machine must hold: a Dagster run keeps helper processes next to its own "
        "(`tail -F` and `watch_orphans.py` for compute logs; with the multiprocess executor, "
        "a process per step). `os.wait4`'s `ru_maxrss` (the *largest process*) only gives the "
        "largest single process, so it would under-report a multi-process run; a 50 ms poll "
        "can miss a shorter spike, so the larger of the two is the figure.",
        f"- **Start-up**: `python -c CODE` from the repo root, median of {startup_runs} after "
        "one warm-up: "
        + "; ".join(f"`{code}` {seconds:.2f} s" for code, seconds in startup.items())
        + f". The target is on `{STARTUP_TARGET}`: importing the package and building "
        "`defs`, what `dagster` waits for before it can do anything (the package's "
        "`__init__` builds `defs`, so the two measure the same work).",
        "- Each run's warehouse is checked afterwards: all three tables must hold every record "
        "the sample API serves, or the run counts as failed.",
        "- dlt's and Dagster's telemetry is off for every variant: phoning home measures the "
        "network, not the code.",
        "- (a) is `scripts/bench/seed_plain_dlt.py`: the seed's `rest_api_source` config, "
        "corrected only as far as dlt 1.31 needs (page-number paginator with `base_page: 1`, "
        "`total_path: None`, `page_size` as a param; `organization_id` as a resolve param), "
        "default file format and nesting (so `test_run_ids` becomes a child table). It stops "
        "on an empty page and ignores a total, so both contracts cost it the same requests.",
        f"- (b) is `scripts/bench/floor.py`: {CONCURRENCY} threads with a session each; each "
        "organization's projects paged one after another until a short page; tests pages "
        f"fetched speculatively up to {CONCURRENCY} in flight until the first short page; a "
        "total, when sent, only stops a list sooner. Arrow batches bulk-inserted into DuckDB. "
        "No retries, checks or merge.",
        "- (c1) is `dagster asset materialize -m analytics_assets --select '*'` (every asset and "
        "check, with the repo's `deploy/local/dagster.yaml` in a Dagster instance initialized "
        "before timing), at the default concurrency of 4.",
        f"- (d8) and (d3) are (c1) with `SOURCES__ANALYTICS__CONCURRENCY` 8 and 3, against a "
        f"sample API of their own started with `--concurrency-cap {API_CAP} --cap-retry-after "
        f"{API_CAP_RETRY_AFTER_S:g}`, at 1x without a total only: asking for more than the API "
        "allows should cost little over asking for just enough.",
        f"- **Targets**: without a total the project may spend up to {CONCURRENCY} requests "
        "(its concurrency) more than the floor on each list, for pages in flight when a short "
        "page ends it; lists = 1 organizations list + one projects list per organization + 1 "
        "tests list. With a total it must not spend more than the floor. At 10x, memory must "
        f"stay flat: peak RSS (c1) <= {RSS_GROWTH_10X}x the same contract's 1x peak; the time "
        "ratios are evaluated against the same limits as at 1x. Sizes other than 1x and 10x "
        "(the demo account of `--quick`) are held to the 1x limits, which they are not sized "
        "for.",
        "",
    ]
    if plot_name:
        lines += [f"![time and peak memory against account size]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: list[SizeResult], labels: dict[str, str], path: Path) -> bool:
    """Time and peak RSS against account size, a line per variant and contract.

    Solid lines are without a total, dashed with one; (c2)'s time is its step. False without
    matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        return False
    uncapped = [r for r in results if not r.cap]
    if not uncapped:
        return False
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 5.2))
    styles = {"seed": "-", "total": "--"}
    colors = {key: f"C{i}" for i, key in enumerate(labels)}
    drawn: set[str] = set()
    for key in labels:
        for contract, style in styles.items():
            results_here = [r for r in uncapped if r.contract == contract]
            points = [
                (r.counts.get("tests", 0), r.medians[key])
                for r in results_here
                if key in r.medians and r.medians[key].ok
            ]
            times = [(x, m.work_s if key == "c2" else m.wall_s) for x, m in points]
            times = [(x, t) for x, t in times if t is not None]
            memory = [(x, m.peak_rss_mb) for x, m in points if m.peak_rss_mb is not None]
            for axis, series in ((time_axis, times), (memory_axis, memory)):
                if series:
                    xs, ys = zip(*series, strict=True)
                    axis.plot(xs, ys, marker="o", linestyle=style, color=colors[key])
                    drawn.add(key)
    sizes = sorted({r.counts.get("tests", 0) for r in uncapped})
    scale_of = {r.counts.get("tests", 0): r.scale for r in uncapped}
    for axis, title, unit in (
        (time_axis, "Wall time ((c2): its step)", "seconds"),
        (memory_axis, "Peak RSS of the process tree", "MB"),
    ):
        axis.set_title(title)
        axis.set_xlabel("account size (tests in the account)")
        axis.set_ylabel(unit)
        if len(sizes) > 1:
            axis.set_xscale("log")
            axis.set_yscale("log")
        axis.set_xticks(sizes, [f"{scale_of[n]}\n{n:,}" for n in sizes])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
    memory_axis.axhline(RSS_LIMIT_1X_MB, color="grey", linestyle=":", linewidth=1)
    memory_axis.annotate(
        f"{RSS_LIMIT_1X_MB:.0f} MB target at 1x",
        (0.01, RSS_LIMIT_1X_MB),
        fontsize=7,
        xycoords=("axes fraction", "data"),
        va="bottom",
        color="grey",
    )
    handles = [
        Line2D([], [], color=colors[key], marker="o", label=label)
        for key, label in labels.items()
        if key in drawn
    ]
    handles += [
        Line2D([], [], color="black", linestyle=style, label=CONTRACTS[contract])
        for contract, style in styles.items()
        if any(r.contract == contract for r in uncapped)
    ]
    figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
