"""Turn medians into BENCHMARKS.md (tables, ratios, targets) and benchmarks.png.

Why one module: the console, the Markdown file and the plot must show the same numbers, so they
are all rendered from one `SizeResult` list (one per account size, script shape, API contract
and cap).
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
from typing import Any

from bench.harness import TREE_SAMPLING, Measurement
from bench.variants import API_CAP, API_CAP_RETRY_AFTER_S, SYNC_STEP_KEY

# Peak RSS, tree of (c1) at 1x: 350 MB with one-line scripts, 600 MB with 5 KB scripts (the
# issue's two limits); other shapes get the line through them, 50 MB more per KiB of script.
RSS_LIMIT_ONE_LINE_MB = 350.0
RSS_LIMIT_PER_SCRIPT_KIB_MB = 50.0
RSS_GROWTH_10X = 1.2
# Issue 4's start-up: "importing analytics_assets and building defs takes <= 1.5 s", timed until
# `defs` is built; the interpreter's teardown after it is reported beside it.
STARTUP_LIMIT_S = 1.5
STARTUP_TARGET = "from analytics_assets import defs"
STARTUP_BUILT = "until `defs` is built"
STARTUP_EXITED = "until the process has exited"
# Requests in flight: the project's default SOURCES__ANALYTICS__CONCURRENCY and the floor's pool.
CONCURRENCY = 4
OVER_CAP_LIMIT = 1.3
# The time ratios of every table that is not capped: (numerator, denominator, kind, limit); a
# limit of None is reported only. "work" is the floor's own timer or, for c2, Dagster's step
# time; "wall" is the whole process, and (c1)'s includes Dagster's start-up, hence no limit.
TIME_TARGETS = (("c2", "b", "work", 1.2), ("c1", "b", "wall", None), ("c2", "e", "work", 1.05))
# The time ratios each table's "Time ratios" line shows (targets or not).
RATIO_LINES = (("c1", "a", "wall"), ("c1", "b", "wall"), ("c2", "b", "work"))
CONTRACTS = {
    "seed": "without a total",
    "total": "with a total",
}
CONTRACT_NOTES = {
    "seed": "the seed's contract: no `meta.count`, sample API started without `--count`",
    "total": "`meta.count` on every paginated list, sample API started with `--count`",
}


def shape_name(script_kb: float) -> str:
    """How tables, targets and the plot name a script shape: `one-line scripts`, `5 KB scripts`."""
    return "one-line scripts" if not script_kb else f"{script_kb:g} KB scripts"


def rss_limit_1x_mb(script_kb: float) -> float:
    """The 1x limit on (c1)'s peak RSS for a script shape (350 MB one-line, 600 MB at 5 KB)."""
    return RSS_LIMIT_ONE_LINE_MB + RSS_LIMIT_PER_SCRIPT_KIB_MB * script_kb


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
    """Every variant's medians at one account size, script shape and API contract (and cap).

    `not_run` holds the variants the bench skipped on purpose for this table, with the reason
    the table shows in their row, so that no skipped variant goes missing silently.
    """

    size: str
    scale: str  # "1x", "10x", or the size name for others
    script_kb: float  # each test's script in KiB; 0: one-line sample scripts
    contract: str  # "seed" (no total) or "total" (`meta.count`)
    counts: dict[str, int]
    min_requests: int  # the fewest the seed's contract allows: no total, so a full page asks on
    min_requests_with_total: int  # the fewest when the API's `meta.count` total is trusted
    lists: int  # paginated or not: organizations, one projects list per organization, tests
    cap: int | None = None  # the sample API's concurrency cap, for the over-cap variants
    medians: dict[str, Median] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def fewest(self) -> int:
        """The fewest requests this result's contract allows."""
        return self.min_requests_with_total if self.contract == "total" else self.min_requests

    @property
    def shape(self) -> str:
        """`one-line scripts` or `5 KB scripts`."""
        return shape_name(self.script_kb)

    @property
    def title(self) -> str:
        """`bench` (1x), one-line scripts, without a total."""
        scale = f" ({self.scale})" if self.scale != self.size else ""
        cap = f", API capped at {self.cap} in flight" if self.cap else ""
        return f"`{self.size}`{scale}, {self.shape}, {CONTRACTS[self.contract]}{cap}"

    @property
    def ok_medians(self) -> dict[str, Median]:
        """The medians of variants with at least one successful run."""
        return {key: median for key, median in self.medians.items() if median.ok}


@dataclass
class Target:
    """One goal from the brief, evaluated; `met` is None for a row that is only reported."""

    name: str
    scripts: str
    contract: str
    scale: str
    measured: str
    limit: str
    met: bool | None


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


def _target(result: SizeResult, name: str, measured: str, limit: str, met: bool | None) -> Target:
    """A target row labelled with the result's shape, contract and scale."""
    return Target(
        name, result.shape, CONTRACTS[result.contract], result.scale, measured, limit, met
    )


def _failed_runs(result: SizeResult) -> list[Target]:
    """A not-met row per variant whose every run failed: no figure of it can be trusted."""
    return [
        _target(result, f"{key} runs", "all failed", "succeeds", False)
        for key, median in result.medians.items()
        if not median.ok
    ]


def _over_cap(result: SizeResult) -> list[Target]:
    """(d8)/(d3): asking for more than the API's cap must cost little over asking for enough."""
    m = result.ok_medians
    if "d8" not in m or "d3" not in m or not m["d3"].wall_s:
        return []
    ratio = (m["d8"].wall_s or 0.0) / m["d3"].wall_s
    name = f"time (d8)/(d3) wall, concurrency 8 vs 3 at API cap {result.cap}"
    limit = f"<= {OVER_CAP_LIMIT:.2f}x"
    return [_target(result, name, f"{ratio:.2f}x", limit, ratio <= OVER_CAP_LIMIT)]


def _time_ratios(result: SizeResult) -> list[Target]:
    """The step against the floor's work (a limit) and (c1)'s wall against the floor's (none)."""
    out = []
    for num, den, kind, limit in TIME_TARGETS:
        ratio = _time_ratio(result.ok_medians, num, den, kind)
        if ratio is None:
            continue
        if limit is None:
            out.append(_target(result, _ratio_name(num, den, kind), f"{ratio:.2f}x", "-", None))
        else:
            name, measured = _ratio_name(num, den, kind), f"{ratio:.2f}x"
            out.append(_target(result, name, measured, f"<= {limit:.2f}x", ratio <= limit))
    return out


def _requests(result: SizeResult) -> list[Target]:
    """Without a total: the floor plus the project's concurrency per list; with one: the floor."""
    m = result.ok_medians
    if "b" not in m or "c1" not in m:
        return []
    floor, project = m["b"].requests, m["c1"].requests
    if result.contract == "seed":
        limit = floor + CONCURRENCY * result.lists
        limit_text = f"<= {limit} (floor + {CONCURRENCY} x {result.lists} lists)"
    else:
        limit, limit_text = floor, f"<= {floor} (floor)"
    measured = f"{project} vs {floor}"
    return [_target(result, "requests (c1) vs floor (b)", measured, limit_text, project <= limit)]


def _peak_rss(result: SizeResult, peak_1x: dict[tuple[str, float], float]) -> list[Target]:
    """Under the shape's absolute limit; at 10x also within 1.2x of the same table's 1x peak."""
    m = result.ok_medians
    if "c1" not in m or m["c1"].peak_rss_mb is None:
        return []
    peak = m["c1"].peak_rss_mb
    absolute = rss_limit_1x_mb(result.script_kb)
    limit, limit_text = absolute, f"<= {absolute:.0f} MB"
    base = peak_1x.get((result.contract, result.script_kb))
    if result.scale == "10x" and base is not None:
        growth = RSS_GROWTH_10X * base
        limit = min(absolute, growth)
        limit_text = f"<= {growth:.0f} MB ({RSS_GROWTH_10X}x 1x peak) and {limit_text}"
    elif result.scale == "10x":
        limit_text += " (no 1x peak measured to grow from)"
    return [_target(result, "peak RSS, tree (c1)", f"{peak:.0f} MB", limit_text, peak <= limit)]


def _step_seconds(result: SizeResult) -> list[Target]:
    """(c2)'s seconds with long scripts at 1x, reported only.

    Why no limit: the issue's "no slower than 14.9 s" was measured against an API without
    latency; (e), the same run with DuckDB at 256MB on this API, is the comparison instead.
    """
    m = result.ok_medians
    if not result.script_kb or result.scale == "10x" or "c2" not in m or m["c2"].work_s is None:
        return []
    return [_target(result, "time (c2) step, seconds", f"{m['c2'].work_s:.2f} s", "-", None)]


def targets(results: list[SizeResult], startup_s: float | None) -> list[Target]:
    """Evaluate the brief's targets for every size, shape and contract that was measured."""
    peak_1x = {
        (r.contract, r.script_kb): r.medians["c1"].peak_rss_mb
        for r in results
        if r.scale == "1x" and not r.cap and "c1" in r.ok_medians
    }
    peak_1x = {key: peak for key, peak in peak_1x.items() if peak is not None}
    out: list[Target] = []
    for result in results:
        out += _failed_runs(result)
        if result.cap:
            out += _over_cap(result)
            continue
        out += _time_ratios(result)
        out += _requests(result)
        out += _peak_rss(result, peak_1x)
        out += _step_seconds(result)
    if startup_s is not None:
        out.append(
            Target(
                f"start-up `{STARTUP_TARGET}`, {STARTUP_BUILT}",
                "-",
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


def _project_duckdb_settings() -> str:
    """The project's own DuckDB settings, read from its code so the report cannot go stale."""
    try:
        from analytics_assets.sources.analytics.settings import DUCKDB_GLOBAL_CONFIG
    except ImportError:
        return "(DUCKDB_GLOBAL_CONFIG not found in analytics_assets.sources.analytics.settings)"
    return ", ".join(f"`{name}={value}`" for name, value in DUCKDB_GLOBAL_CONFIG.items())


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _table(result: SizeResult, labels: dict[str, str]) -> list[str]:
    """The Markdown table of one result, in variant order; capped results add the 429 count.

    A variant skipped on purpose keeps its row, saying why, so a reader never has to guess
    whether it was left out or forgotten.
    """
    header = ["variant", "wall (s)", "work (s)", "requests"]
    if result.cap:
        header.append("throttled (429)")
    header += ["peak RSS, tree (MB)", "largest process (MB)", "max in flight"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for key, label in labels.items():
        if key in result.not_run:
            cells = [label, f"not run: {result.not_run[key]}"] + ["-"] * (len(header) - 2)
        elif key in result.medians:
            m = result.medians[key]
            wall = "failed" if not m.ok else _num(m.wall_s, 2)
            cells = [label, wall, _num(m.work_s, 2), str(m.requests)]
            if result.cap:
                cells.append(_num(m.throttled))
            cells += [_num(m.peak_rss_mb), _num(m.largest_process_mb), _num(m.max_in_flight)]
        else:
            continue
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratios(result: SizeResult) -> str:
    """The table's time ratios, targets or not; one of a skipped variant says so."""
    pairs = (("d8", "d3", "wall"),) if result.cap else RATIO_LINES
    found = []
    for num, den, kind in pairs:
        name = _ratio_name(num, den, kind).removeprefix("time ")
        skipped = [key for key in (num, den) if key in result.not_run]
        ratio = _time_ratio(result.ok_medians, num, den, kind)
        if skipped:
            found.append(f"{name}: n/a, ({skipped[0]}) not run")
        elif ratio is not None:
            found.append(f"{name} = {ratio:.2f}x")
    return "Time ratios: " + "; ".join(found) + "." if found else ""


def _section(result: SizeResult, labels: dict[str, str]) -> list[str]:
    """One `## title` section: what the table's API served, the table, failures, ratios."""
    counts = ", ".join(f"{n:,} {t}" for t, n in result.counts.items())
    runs = max((m.runs for m in result.medians.values()), default=0)
    lines = [f"## {result.title}: {counts}", ""]
    if result.cap:
        lines += [
            f"Median of {runs} run(s). The sample API answers 429 with `Retry-After: "
            f"{API_CAP_RETRY_AFTER_S:g}` to a request that arrives while {result.cap} are "
            f"being handled; `SOURCES__ANALYTICS__CONCURRENCY` is 8 in (d8), 3 in (d3). "
            f"Requests include the 429s; work is Dagster's `{SYNC_STEP_KEY}` step. Fewest "
            f"requests without a total: {result.min_requests}; {result.lists} lists.",
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
    return lines


def _targets_table(results: list[SizeResult], startup_s: float | None) -> list[str]:
    lines = [
        "## Targets",
        "",
        "| target | scripts | contract | size | measured | limit | met |",
        "|---|---|---|---|---:|---|---|",
    ]
    for target in targets(results, startup_s):
        met = "n/a" if target.met is None else ("met" if target.met else "**not met**")
        lines.append(
            f"| {target.name} | {target.scripts} | {target.contract} | {target.scale} "
            f"| {target.measured} | {target.limit} | {met} |"
        )
    return [*lines, ""]


def _shapes_of(results: list[SizeResult], contract: str, capped: bool = False) -> str:
    """The shapes that ran with a contract (or capped), in words: `one-line scripts`, ..."""
    kbs = sorted({r.script_kb for r in results if r.contract == contract and bool(r.cap) == capped})
    return " and ".join(shape_name(kb) for kb in kbs) or "none"


def _sizes_of(results: list[SizeResult], capped: bool) -> str:
    sizes = dict.fromkeys(f"`{r.size}`" for r in results if bool(r.cap) == capped)
    return " and ".join(sizes) or "none"


def _method_runs(results: list[SizeResult]) -> list[str]:
    """Method: what ran against what (shapes, contracts, the small capped account)."""
    return [
        "- **Script shapes**: every size runs with *one-line scripts* (the sample's short "
        "scripts, `--script-kb 0`) and with *5 KB scripts* (`--script-kb 5`, lines of a k6 "
        "script with values of each test's own), each against a sample API process of its own; "
        "`--shapes` picks them. They exist because real load-test scripts are kilobytes: a "
        "sync that is fast and small on one-line scripts can still be slow or run out of "
        "memory on a real account (5 KB x 12,000 tests is 60 MB of script text at 1x, 600 MB "
        f"at 10x). Shapes run here without a total: {_shapes_of(results, 'seed')}.",
        "- **Contracts**: each size and shape runs against its own sample API process per "
        f"contract: *{CONTRACTS['seed']}* (the seed's contract and the headline: a client "
        f"learns a list has ended only from a short or empty page) and *{CONTRACTS['total']}* "
        "(`--count`: `meta.count` on every paginated list, which a client may use to stop "
        "at the last page). *With a total* runs only with one-line scripts unless "
        "`--shapes-total` names more shapes, to bound the bench's duration; here it ran with: "
        f"{_shapes_of(results, 'total')}. Fewest requests: without a total a list of n items "
        "costs n // 32 + 1 pages, with one max(1, ceil(n / 32)); the organizations list is "
        "one request either way.",
        "- **(a) at 10x** runs with one-line scripts only, unless `--plain-10x-all` is given: "
        "it took 185 s and 5 GB there, and longer scripts only add to both. Where it is "
        "skipped, its row says `not run`.",
        f"- **Over the cap**: (d8) and (d3) run on {_sizes_of(results, capped=True)}, with "
        f"{_shapes_of(results, 'seed', capped=True)} and without a total. `small` (18 "
        "organizations, 150 projects, 1,950 tests: 20 lists, 80 requests) is where a sync's "
        "fixed costs, such as starting each list and backing off after a 429, weigh most.",
    ]


def _method_measures(startup: dict[str, float], startup_runs: int) -> list[str]:
    """Method: how each column and figure is measured."""
    return [
        "- **Wall time**: from spawning the variant's process to reaping it (imports included).",
        "- **Work**: time without interpreter start-up. For (b) the floor's own timer, from "
        "after its imports to the end (it prints `work_s=` last). For (c2) and (d8)/(d3) "
        "Dagster's own timing of the sync step: after each project run the bench process opens "
        "the run's Dagster instance (`DagsterInstance.from_config(DAGSTER_HOME)`, sqlite), takes "
        "the latest run and the difference of the timestamps of its `STEP_START` and "
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
        f"- **Start-up**: `python -c '{STARTUP_TARGET}'` from the repo root, median of "
        f"{startup_runs} after one warm-up, timed from spawning it: "
        + "; ".join(f"{until} {seconds:.2f} s" for until, seconds in startup.items())
        + ". The target is on the first: importing the package and building `defs`, what "
        "`dagster` waits for before it can do anything (the child prints a line once `defs` "
        "exists). The second adds the interpreter's teardown of the modules of Dagster, dlt "
        "and their dependencies, which no code of the package runs.",
        "- Each run's warehouse is checked afterwards: all three tables must hold every record "
        "the sample API serves, or the run counts as failed.",
        "- dlt's and Dagster's telemetry is off for every variant: phoning home measures the "
        "network, not the code.",
    ]


def _method_variants() -> list[str]:
    """Method: what each variant is, including whose DuckDB settings it loads with."""
    return [
        "- (a) is `scripts/bench/seed_plain_dlt.py`: the seed's `rest_api_source` config, "
        "corrected only as far as dlt 1.31 needs (page-number paginator with `base_page: 1`, "
        "`total_path: None`, `page_size` as a param; `organization_id` as a resolve param), "
        "default file format and nesting (so `test_run_ids` becomes a child table). It stops "
        "on an empty page and ignores a total, so both contracts cost it the same requests.",
        f"- (b) is `scripts/bench/floor.py`: {CONCURRENCY} threads with a session each; each "
        "organization's projects paged one after another until a short page; tests pages "
        f"fetched speculatively up to {CONCURRENCY} in flight until the first short page; a "
        "total, when sent, only stops a list sooner. Each page becomes an Arrow batch as it "
        "arrives; all of them are held until the end, then bulk-inserted into DuckDB. No "
        "retries, checks or merge. It loads as a user would write it by hand: DuckDB's "
        "default settings (memory limit 80% of RAM, a thread per core, DuckDB's own choice of "
        "compression), except that it turns off `preserve_insertion_order`.",
        "- (c1) is `dagster asset materialize -m analytics_assets --select '*'` (every asset and "
        "check, with the repo's `deploy/local/dagster.yaml` in a Dagster instance initialized "
        "before timing), at the default concurrency of 4. The project sets DuckDB defaults of "
        f"its own ({_project_duckdb_settings()}: `DUCKDB_GLOBAL_CONFIG` in "
        "`analytics_assets/sources/analytics/settings.py`), and attaches the file with row "
        "groups of 4,096 rows (`ROW_GROUP_SIZE` in `analytics_assets/pipeline.py`), so a "
        "comparison with (b) includes those choices: a capped, one-thread load holds less "
        "memory and may take longer.",
        "- (e) is (c1) with DuckDB's `memory_limit` at 256MB, the setting kilobyte scripts "
        "once needed, run at 1x with long scripts and without a total only: the default must "
        "be no slower (its step within 1.05x of (e)'s, the runs' noise).",
        f"- (d8) and (d3) are (c1) with `SOURCES__ANALYTICS__CONCURRENCY` 8 and 3, against a "
        f"sample API of their own started with `--concurrency-cap {API_CAP} --cap-retry-after "
        f"{API_CAP_RETRY_AFTER_S:g}`: asking for more than the API allows should cost little "
        "over asking for just enough.",
    ]


def _method_targets() -> list[str]:
    """Method: what each row of the Targets table means and how it is judged."""
    one_line, five_kb = rss_limit_1x_mb(0), rss_limit_1x_mb(5)
    return [
        "- **Targets**, one row per table and target (scripts, contract and size say which "
        "table); *met* is `n/a` for a row that is reported without a limit:",
        "  - *time (c2) step/(b) work* <= 1.20x, for every size and shape, with and without a "
        "total: the project's sync as Dagster times it against the floor's own timer, both "
        "without start-up. The headline.",
        "  - *time (c1)/(b) wall*, no limit: the whole `dagster asset materialize` process "
        "against the floor's, so it includes Dagster's start-up (CLI, `defs`, run set-up, the "
        "check step), which start-up's own row holds to its limit.",
        f"  - *requests (c1) vs floor (b)*: without a total at most the floor + {CONCURRENCY} "
        "(the project's concurrency) per list, for pages in flight when a short page ends a "
        "list; lists = 1 organizations list + one projects list per organization + 1 tests "
        "list. With a total no more than the floor.",
        f"  - *peak RSS, tree (c1)*: at 1x <= {one_line:.0f} MB with one-line scripts and "
        f"<= {five_kb:.0f} MB with 5 KB scripts ({RSS_LIMIT_ONE_LINE_MB:.0f} MB + "
        f"{RSS_LIMIT_PER_SCRIPT_KIB_MB:.0f} MB per KiB of script for any other shape). At 10x "
        f"memory must stay flat: <= {RSS_GROWTH_10X}x the same shape's and contract's 1x peak, "
        "and under the absolute limit of its shape as well.",
        f"  - *time (d8)/(d3) wall* <= {OVER_CAP_LIMIT:.2f}x on every capped account.",
        "  - *time (c2) step, seconds*, no limit: the step with long scripts at 1x. The "
        "issue's 14.9 s was measured against an API without latency; *time (c2) step/(e) "
        "work* compares the default with the 256MB setting it was measured with, on this run's "
        "API: <= 1.05x.",
        f"  - *start-up `{STARTUP_TARGET}`, {STARTUP_BUILT}* <= {STARTUP_LIMIT_S} s (issue 4).",
        "  - *runs*: a variant whose every run failed is a row of its own, not met.",
        "- (c1)/(a) ratios have no target; each table's *Time ratios* line shows them. Sizes "
        "other than 1x and 10x (`small`, and the demo account of `--quick`) are held to the 1x "
        "limits, which the demo account is not sized for.",
    ]


def markdown(
    results: list[SizeResult],
    labels: dict[str, str],
    startup: dict[str, float],
    startup_runs: int,
    latency_ms: float,
    plot_name: str | None,
) -> str:
    """The whole BENCHMARKS.md: set-up, a section per table, the targets, the method."""
    lines = [
        "# Benchmarks",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {_machine()}",
        f"- Software: {_versions()}",
        f"- Sample API: a separate process per account size, script shape and contract, "
        f"{latency_ms:g} ms latency per request, page size 32.",
        f"- Script shapes: **{shape_name(0)}** and **{shape_name(5)}** (see Method).",
        f"- API contracts: **{CONTRACTS['seed']}**, {CONTRACT_NOTES['seed']}, the headline; "
        f"**{CONTRACTS['total']}**, {CONTRACT_NOTES['total']}.",
        "- Generated by `scripts/bench.py`; every variant is a fresh subprocess with a fresh "
        "DuckDB file and dlt data dir.",
        "",
    ]
    for result in results:
        lines += _section(result, labels)
    lines += _targets_table(results, startup.get(STARTUP_BUILT))
    lines += ["## Method", ""]
    lines += _method_runs(results)
    lines += _method_measures(startup, startup_runs)
    lines += _method_variants()
    lines += _method_targets()
    lines.append("")
    if plot_name:
        lines += [f"![time and peak memory against account size, per script shape]({plot_name})"]
        lines.append("")
    return "\n".join(lines)


Points = list[tuple[int, float]]


def _series(results: list[SizeResult], key: str, contract: str) -> tuple[Points, Points]:
    """(tests, seconds) and (tests, MB) points of one variant and contract; (c2): its step."""
    points = [
        (r.counts.get("tests", 0), r.medians[key])
        for r in results
        if r.contract == contract and key in r.medians and r.medians[key].ok
    ]
    times = [(x, m.work_s if key == "c2" else m.wall_s) for x, m in points]
    memory = [(x, m.peak_rss_mb) for x, m in points]
    return (
        [(x, t) for x, t in times if t is not None],
        [(x, mb) for x, mb in memory if mb is not None],
    )


def _plot_shape(
    axes: Any, results: list[SizeResult], labels: dict[str, str], styles: dict[str, str]
) -> set[str]:
    """One row of the figure: time and memory of one script shape; returns the keys drawn."""
    from matplotlib.ticker import LogLocator, ScalarFormatter

    time_axis, memory_axis = axes
    drawn: set[str] = set()
    for index, key in enumerate(labels):
        for contract, style in styles.items():
            for axis, series in zip(axes, _series(results, key, contract), strict=True):
                if series:
                    xs, ys = zip(*series, strict=True)
                    axis.plot(xs, ys, marker="o", linestyle=style, color=f"C{index}")
                    drawn.add(key)
    shape = results[0].shape
    sizes = sorted({r.counts.get("tests", 0) for r in results})
    scale_of = {r.counts.get("tests", 0): r.scale for r in results}
    for axis, title, unit in (
        (time_axis, f"Wall time ((c2): its step), {shape}", "seconds"),
        (memory_axis, f"Peak RSS of the process tree, {shape}", "MB"),
    ):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("account size (tests in the account)")
        axis.set_ylabel(unit)
        if len(sizes) > 1:
            axis.set_xscale("log")
            axis.set_yscale("log")
            # ticks at 1, 2 and 5 of each decade, in plain numbers: a panel may span less
            # than one decade, which would leave log ticks without a single label
            axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.set_xticks(sizes, [f"{scale_of[n]}\n{n:,}" for n in sizes])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
    limit = rss_limit_1x_mb(results[0].script_kb)
    memory_axis.axhline(limit, color="grey", linestyle=":", linewidth=1)
    memory_axis.annotate(
        f"{limit:.0f} MB target at 1x",
        (0.01, limit),
        fontsize=7,
        xycoords=("axes fraction", "data"),
        va="bottom",
        color="grey",
    )
    return drawn


def plot(results: list[SizeResult], labels: dict[str, str], path: Path) -> bool:
    """Time and peak RSS against account size: a row of two panels per script shape.

    A line per variant and contract: solid without a total, dashed with one; (c2)'s time is
    its step. The capped tables are left out (one size each). False without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        return False
    uncapped = [r for r in results if not r.cap]
    shapes = sorted({r.script_kb for r in uncapped})
    if not shapes:
        return False
    height = 4.2 * len(shapes) + 1.0
    figure, axes = plt.subplots(len(shapes), 2, figsize=(11, height), squeeze=False)
    styles = {"seed": "-", "total": "--"}
    drawn: set[str] = set()
    for row, kb in zip(axes, shapes, strict=True):
        drawn |= _plot_shape(row, [r for r in uncapped if r.script_kb == kb], labels, styles)
    handles = [
        Line2D([], [], color=f"C{index}", marker="o", label=label)
        for index, (key, label) in enumerate(labels.items())
        if key in drawn
    ]
    handles += [
        Line2D([], [], color="black", linestyle=style, label=CONTRACTS[contract])
        for contract, style in styles.items()
        if any(r.contract == contract for r in uncapped)
    ]
    figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 1.0 / height, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
