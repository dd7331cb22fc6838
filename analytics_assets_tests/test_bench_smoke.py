"""`scripts/bench.py --quick` still runs every variant end to end (no timing assertions).

Why: the benchmark harness is only run by hand (`make bench`); without this test a change to
an entry point, the sample API's control endpoints or the report would go unnoticed until then.
"""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (
    "(a) seed config, plain dlt",
    "(b) hand-written floor",
    "(c1) project: dagster asset materialize",
    "(c2) project: dlt step alone",
)


def test_quick_bench_writes_a_table_with_every_variant(tmp_path: Path) -> None:
    before = _repo_report_stamp()
    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--output-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    for label in VARIANTS:
        row = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \| (\d+) \|", report, re.MULTILINE)
        assert row, f"no row for {label} in:\n{report}"
        assert row.group(1).strip() != "failed"
        assert int(row.group(2)) > 0, f"{label} sent no request to the sample API"
    assert "## Targets" in report
    assert _repo_report_stamp() == before, "--output-dir was ignored: the repo's report changed"


def _repo_report_stamp() -> int | None:
    path = REPO / "BENCHMARKS.md"
    return path.stat().st_mtime_ns if path.exists() else None
