"""Variant (b): a hand-written floor, to show how fast this sync can be at all.

Why: a ratio against plain dlt says how much better the project is than the obvious code; a
ratio against this floor says how much is left. It needs no total, as the seed's contract has
none: a short page ends a list (only an exactly full last page costs one empty page), each
organization's projects are paged one after another, and the tests pages go out speculatively,
up to 4 in flight, until the first short page. When the API does send `meta.count`, it is used
only to stop sooner (no empty page after a full last one, no speculative page past the total),
so the floor stays the fewest requests either contract allows. It keeps 4 requests in flight (a
thread pool, one `requests.Session` per thread), turns each page into an Arrow batch as it
arrives, and bulk-inserts Arrow tables into DuckDB. The warehouse has the project's shape:
three tables in `analytics`, seed types, `test_run_ids` as JSON. No retries, no checks, no
merge: a fresh load into an empty file. A 404 past the end (as DRF answers) reads as an empty page.

Its last stdout line is `work_s=SECONDS`, timed from after its imports to the end, so the
report can hold the project's sync step (timed by Dagster, imports excluded) against it.

Usage: python scripts/bench/floor.py BASE_URL DUCKDB_FILE (token from API_TOKEN).
"""

import json
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import NamedTuple

import duckdb
import pyarrow as pa
import requests

WORK_START = time.perf_counter()  # after the imports: what `work_s` leaves out is start-up
WORKERS = 4
PAGE_SIZE = 32
TIMEOUT_S = 60

ORGANIZATIONS_PATH = "/v3/organizations"
PROJECTS_PATH = "/v3/organizations/{}/projects"
TESTS_PATH = "/loadtests/v2/tests"

_TS = pa.string()  # ISO text from the API; cast to TIMESTAMPTZ by DuckDB in the bulk insert
SCHEMAS = {
    "organizations": pa.schema(
        [
            ("billing_address", pa.string()),
            ("billing_country", pa.string()),
            ("billing_email", pa.string()),
            ("created", _TS),
            ("description", pa.string()),
            ("id", pa.int64()),
            ("is_default", pa.bool_()),
            ("is_saml_org", pa.bool_()),
            ("name", pa.string()),
            ("owner_id", pa.int64()),
            ("updated", _TS),
            ("vat_number", pa.string()),
        ]
    ),
    "projects": pa.schema(
        [
            ("created", _TS),
            ("description", pa.string()),
            ("id", pa.int64()),
            ("is_default", pa.bool_()),
            ("name", pa.string()),
            ("organization_id", pa.int64()),
            ("updated", _TS),
        ]
    ),
    "tests": pa.schema(
        [
            ("created", _TS),
            ("id", pa.int64()),
            ("last_test_run_id", pa.string()),
            ("name", pa.string()),
            ("project_id", pa.int64()),
            ("script", pa.string()),
            ("test_run_ids", pa.string()),  # JSON text; cast to DuckDB's JSON type on insert
            ("updated", _TS),
            ("user_id", pa.int64()),
        ]
    ),
}

_local = threading.local()


class Page(NamedTuple):
    """One answered page: its item count, the items as Arrow, and `meta.count` if sent."""

    count: int
    batch: pa.RecordBatch
    total: int | None


class Task(NamedTuple):
    """One request: which list, its path, and the page (None for the unpaginated list)."""

    table: str
    path: str
    page: int | None


class Floor:
    """Fetch every page with at most `WORKERS` requests in flight, then load the three tables."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.batches: dict[str, list[pa.RecordBatch]] = {name: [] for name in SCHEMAS}

    def _get(self, table: str, path: str, page: int | None) -> Page:
        """One request on this thread's session; the page becomes an Arrow batch right away."""
        session = getattr(_local, "session", None)
        if session is None:
            session = _local.session = requests.Session()
        params = None if page is None else {"page": page, "page_size": PAGE_SIZE}
        response = session.get(
            self.base_url + path, params=params, headers=self.headers, timeout=TIMEOUT_S
        )
        if response.status_code == 404 and (page or 1) > 1:  # DRF's "Invalid page." past the end
            return Page(0, pa.RecordBatch.from_pylist([], schema=SCHEMAS[table]), None)
        response.raise_for_status()
        body = response.json()
        items = body[table]
        meta = body.get("meta")
        total = meta.get("count") if isinstance(meta, dict) else None
        if table == "tests":
            for item in items:
                run_ids = item.get("test_run_ids")
                item["test_run_ids"] = None if run_ids is None else json.dumps(run_ids)
        batch = pa.RecordBatch.from_pylist(items, schema=SCHEMAS[table])
        return Page(len(items), batch, total if isinstance(total, int) else None)

    def fetch(self) -> None:
        """Schedule pages as earlier ones answer, keeping the pool full.

        Project pages are requested one after another per organization (page n+1 only when
        page n was full and, with a total, the total is not reached yet), so they cost exactly
        the minimum. The tests pages go out speculatively, up to `WORKERS` at a time (fewer
        while project pages are due); the first short page stops them, and at most
        `WORKERS - 1` pages already in flight turn out to be wasted. A total, once page 1 has
        brought it, caps the tests pages at ceil(total / page size) instead.
        """
        ready: deque[Task] = deque([Task("organizations", ORGANIZATIONS_PATH, None)])
        pending: dict[Future[Page], Task] = {}
        tests_pages: dict[int, pa.RecordBatch] = {}
        tests_last_page: int | None = None  # the first short page, or the total's last page
        next_tests_page = 1
        with ThreadPoolExecutor(WORKERS) as pool:
            while True:
                while len(pending) < WORKERS:
                    if ready:
                        task = ready.popleft()
                    elif tests_last_page is None or next_tests_page <= tests_last_page:
                        task = Task("tests", TESTS_PATH, next_tests_page)
                        next_tests_page += 1
                    else:
                        break
                    pending[pool.submit(self._get, *task)] = task
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    answer = future.result()
                    page = task.page or 1
                    if task.table == "organizations":
                        self.batches["organizations"].append(answer.batch)
                        ready.extend(
                            Task("projects", PROJECTS_PATH.format(org_id), 1)
                            for org_id in answer.batch.column("id").to_pylist()
                        )
                    elif task.table == "projects":
                        self.batches["projects"].append(answer.batch)
                        more = answer.total is None or page * PAGE_SIZE < answer.total
                        if answer.count == PAGE_SIZE and more:
                            ready.append(task._replace(page=page + 1))
                    else:
                        tests_pages[page] = answer.batch
                        last = None
                        if answer.count < PAGE_SIZE:
                            last = page
                        elif answer.total is not None:
                            last = max(1, math.ceil(answer.total / PAGE_SIZE))
                        if last is not None:
                            tests_last_page = min(last, tests_last_page or last)
        last = tests_last_page or 0
        self.batches["tests"] = [tests_pages[p] for p in sorted(tests_pages) if p <= last]

    def load(self, duckdb_file: str) -> dict[str, int]:
        """Bulk-insert each table from Arrow; seed types via casts in the same statement."""
        casts: dict[str, Callable[[str], str]] = {
            "created": lambda c: f"{c}::TIMESTAMPTZ",
            "updated": lambda c: f"{c}::TIMESTAMPTZ",
            "test_run_ids": lambda c: f"{c}::JSON",
        }
        counts = {}
        with duckdb.connect(duckdb_file) as con:
            # Row order means nothing in a warehouse; keeping it costs DuckDB ~2x the memory.
            con.execute("SET preserve_insertion_order = false")
            con.execute("CREATE SCHEMA IF NOT EXISTS analytics")
            for table, schema in SCHEMAS.items():
                arrow_table = pa.Table.from_batches(self.batches[table], schema=schema)
                columns = ", ".join(
                    f"{casts[name](name)} AS {name}" if name in casts else name
                    for name in schema.names
                )
                con.register("arrow_table", arrow_table)
                con.execute(
                    f"CREATE OR REPLACE TABLE analytics.{table} AS "
                    f"SELECT {columns} FROM arrow_table"
                )
                con.unregister("arrow_table")
                counts[table] = arrow_table.num_rows
        return counts


def main(argv: list[str]) -> None:
    """Fetch everything, load it, print the row counts and, last, `work_s=` since the imports."""
    base_url, duckdb_file = argv
    floor = Floor(base_url, os.environ["API_TOKEN"])
    floor.fetch()
    print(floor.load(duckdb_file))
    print(f"work_s={time.perf_counter() - WORK_START:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
