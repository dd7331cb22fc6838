"""Process-level measurement for the benchmark: the sample API, wall time, requests, peak RSS.

Why processes: every variant pays its own imports, threads and child processes, as a user's
command would, and nothing of one variant (caches, pools, dlt state) can help the next.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # in the `bench` extra; without it only wait4's largest process is measured
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

TREE_SAMPLING = psutil is not None
SAMPLE_INTERVAL_S = 0.05
MB = 1024 * 1024
# Settings that must not leak from the caller's shell into a variant (the conftest's list).
_LEAKY_PREFIXES = ("SOURCES__", "DESTINATION__", "RUNTIME__", "NORMALIZE__", "LOAD__", "EXTRACT__")
_LEAKY_NAMES = {"API_TOKEN", "BASE_URL", "DESTINATION_TYPE", "DAGSTER_HOME"}


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without dlt/Dagster settings (make exports some), plus extra."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_LEAKY_PREFIXES)
        and not name.startswith("DLT_")
        and name not in _LEAKY_NAMES
    }
    env.update(extra)
    return env


class SampleApi:
    """The bundled sample API as a separate process, so its CPU is not the variant's.

    `script_kb` is the size of each test's script in KiB (0: one-line sample scripts);
    `count` opts in to `meta.count` totals (the seed's contract has none); `concurrency_cap`
    makes it answer 429 with `Retry-After: cap_retry_after` beyond that many requests in flight.
    """

    def __init__(
        self,
        size: str,
        latency_ms: float,
        workdir: Path,
        *,
        script_kb: float = 0,
        count: bool = False,
        concurrency_cap: int | None = None,
        cap_retry_after: float = 1.0,
    ) -> None:
        self.size = size
        self.latency_ms = latency_ms
        self.workdir = workdir
        self.script_kb = script_kb
        self.count = count
        self.concurrency_cap = concurrency_cap
        self.cap_retry_after = cap_retry_after
        self.name = (  # one ready file and log per API process of a bench run
            f"api-{size}-kb{script_kb:g}"
            + ("-count" if count else "")
            + (f"-cap{concurrency_cap}" if concurrency_cap else "")
        )
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "SampleApi":
        ready = self.workdir / f"{self.name}.url"
        ready.unlink(missing_ok=True)  # a stale URL would point at a process that has ended
        log_path = self.workdir / f"{self.name}.log"
        log = log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "analytics_assets.sample_api",
            "--size",
            self.size,
            "--latency-ms",
            str(self.latency_ms),
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--script-kb",
            f"{self.script_kb:g}",
        ]
        if self.count:
            command.append("--count")
        if self.concurrency_cap:
            command += [
                "--concurrency-cap",
                str(self.concurrency_cap),
                "--cap-retry-after",
                str(self.cap_retry_after),
            ]
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 300  # bench10x: 130k records, 20 s with 5 KB scripts
        while not ready.exists():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the sample API exited with {self._process.returncode}: "
                    f"{log_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError("the sample API did not start within 300 s")
            time.sleep(0.05)
        self.url = ready.read_text().strip()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def reset(self) -> None:
        """Forget the request log (and faults) before a variant runs."""
        self._control("POST", "reset")

    def stats(self) -> dict[str, Any]:
        """Since the last reset: `requests` (429s included), `max_in_flight`, `throttled`, ..."""
        return self._control("GET", "stats")

    def _control(self, method: str, name: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/_control/{name}", method=method, data=None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


class _TreeSampler(threading.Thread):
    """Sum the RSS of a process and all its descendants every 50 ms; keep the maximum.

    Why a sum: the Dagster CLI runs each step in a child process next to its own, so the
    memory a machine needs is the tree's total at one instant, not its largest process.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        if psutil is None:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            total = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop_event.wait(SAMPLE_INTERVAL_S)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Measurement:
    """One run of one variant; None where a figure was not measured (see the report)."""

    wall_s: float | None
    peak_rss_mb: float | None  # max(tree sum sampled every 50 ms, largest single process)
    largest_process_mb: float | None  # wait4's ru_maxrss: the child or its largest descendant
    returncode: int
    requests: int = 0
    max_in_flight: int | None = None
    throttled: int | None = None  # the API's 429s for its concurrency cap
    work_s: float | None = None  # the variant's own `work_s=` (floor) or Dagster's step time
    step_s: float | None = None  # Dagster's STEP_START..STEP_SUCCESS of the sync step
    rows: dict[str, int] = field(default_factory=dict)
    error: str = ""


def run_measured(
    command: list[str], env: Mapping[str, str], cwd: Path, log_path: Path, timeout_s: float
) -> Measurement:
    """Run a command to completion; measure wall time and peak memory of its process tree."""
    with log_path.open("wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout can end the whole tree
        )
    sampler = _TreeSampler(process.pid)
    sampler.start()
    timer = threading.Timer(timeout_s, _kill_group, args=(process.pid,))
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    wall_s = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    tree_peak = sampler.stop()
    largest = usage.ru_maxrss * 1024  # kilobytes on Linux
    return Measurement(
        wall_s=wall_s,
        peak_rss_mb=max(tree_peak, largest) / MB,
        largest_process_mb=largest / MB,
        returncode=process.returncode,
    )


def reported_work_s(log_path: Path) -> float | None:
    """The `work_s=SECONDS` a variant prints as its last line (the floor does), if any.

    Why: a process's wall time includes interpreter start-up and imports; its own timer says
    what the work itself took, the figure to hold the project's step time against.
    """
    lines = log_path.read_text(errors="replace").strip().splitlines()
    if not lines or not lines[-1].startswith("work_s="):
        return None
    try:
        return float(lines[-1].removeprefix("work_s="))
    except ValueError:
        return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def warehouse_rows(duckdb_file: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts in `analytics.<table>`, so a fast but incomplete load cannot pass unnoticed."""
    import duckdb

    counts = {}
    with duckdb.connect(str(duckdb_file), read_only=True) as con:
        for table in tables:
            try:
                counts[table] = con.execute(f"SELECT COUNT(*) FROM analytics.{table}").fetchone()[0]
            except duckdb.Error:
                counts[table] = -1
    return counts


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temp dir that is removed afterwards, even when a run fails."""
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)
