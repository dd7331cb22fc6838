"""`scripts/bench.py --quick` still runs every variant end to end (no timing assertions).

Why: the benchmark harness is only run by hand (`make bench`); without this test a change to
an entry point, the sample API's control endpoints or flags (`--count`, `--concurrency-cap`,
`--script-kb`), Dagster's step events or the report would go unnoticed until then. The quick
run measures the demo account with one-line and 5 KB scripts without a total, with one-line
scripts and a total, and the `small` account against the capped API: about 80 s on 2 cores.
"""

import re
import subprocess
import sys
from pathlib import Path

from analytics_assets_tests.conftest import REPO

# Rows of the tables without a total and with one.
VARIANTS = (
    "(a) seed config, plain dlt",
    "(b) hand-written floor",
    "(c1) project: dagster asset materialize",
    "(c2) project: the sync step (analytics_dlt, timed by Dagster inside c1)",
)
# Rows of the capped API's table (without a total only).
OVER_CAP_VARIANTS = (
    "(d8) project (c1), concurrency 8 vs API cap 3",
    "(d3) project (c1), concurrency 3 vs API cap 3",
)
# Only with 5 KB scripts and without a total: the default against DuckDB at 256MB.
LONG_SCRIPTS_VARIANT = "(e) project (c1), DuckDB memory_limit 256MB"
# Variants whose own timing must be in the work column: the floor's `work_s=`, Dagster's step.
TIMED_WORK = {VARIANTS[1], VARIANTS[3], LONG_SCRIPTS_VARIANT, *OVER_CAP_VARIANTS}


def test_quick_bench_writes_a_table_with_every_variant(tmp_path: Path) -> None:
    before = _repo_report_stamp()
    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--output-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    sections = _variant_tables(report)
    contracts = {title: rows for title, rows in sections.items() if "API capped" not in title}
    capped = {title: rows for title, rows in sections.items() if "API capped" in title}
    shapes = sorted(
        ("5 KB scripts" in title, "with a total" in title)
        for title in contracts
        if "one-line scripts" in title or "5 KB scripts" in title
    )
    assert shapes == [(False, False), (False, True), (True, False)], report
    assert len(contracts) == 3, report
    assert [title.startswith("`small`") for title in capped] == [True], report
    for tables, labels in ((contracts, VARIANTS), (capped, OVER_CAP_VARIANTS)):
        for title, rows in tables.items():
            long_scripts = "5 KB scripts" in title and "without a total" in title
            for label in (*labels, LONG_SCRIPTS_VARIANT) if long_scripts else labels:
                row = rows.get(label)
                assert row, f"no row for {label} under {title} in:\n{report}"
                assert row["wall (s)"] != "failed", f"{label} failed under {title}:\n{report}"
                assert int(row["requests"]) > 0, f"{label} sent no request to the sample API"
                if label in TIMED_WORK:
                    float(row["work (s)"])  # measured, not n/a
    assert "## Targets" in report
    assert "(d8)/(d3)" in report.split("## Targets")[1]
    assert "time (c2) step/(e) work" in report.split("## Targets")[1]
    assert _repo_report_stamp() == before, "--output-dir was ignored: the repo's report changed"


def _variant_tables(report: str) -> dict[str, dict[str, dict[str, str]]]:
    """Each `## ...` section with a `| variant |` table: its rows by label, cells by header."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    for section in re.split(r"^## ", report, flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        lines = [line for line in body.splitlines() if line.startswith("|")]
        if not lines or not lines[0].startswith("| variant |"):
            continue
        header = _cells(lines[0])
        tables[title] = {
            cells[0]: dict(zip(header, cells, strict=True)) for cells in map(_cells, lines[2:])
        }
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _repo_report_stamp() -> int | None:
    path = REPO / "BENCHMARKS.md"
    return path.stat().st_mtime_ns if path.exists() else None
