"""Variant (b): a hand-written floor, to show how fast this sync can be at all.

Why: a ratio against plain dlt says how much better the project is than the obvious code; a
ratio against this floor says how much is left. It spends the fewest requests the seed's
contract allows without a total (a short page ends a list; only an exactly full last page costs
one empty page), keeps 4 requests in flight (a thread pool, one `requests.Session` per thread),
turns each page into an Arrow batch as it arrives, and bulk-inserts Arrow tables into DuckDB.
The warehouse has the project's shape: three tables in `analytics`, seed types, `test_run_ids`
as JSON. No retries, no checks, no merge: a fresh load into an empty file.

Usage: python scripts/bench/floor.py BASE_URL DUCKDB_FILE (token from API_TOKEN).
"""

import json
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import NamedTuple

import duckdb
import pyarrow as pa
import requests

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

    def _get(self, table: str, path: str, page: int | None) -> tuple[int, pa.RecordBatch]:
        """One request on this thread's session; the page becomes an Arrow batch right away."""
        session = getattr(_local, "session", None)
        if session is None:
            session = _local.session = requests.Session()
        params = None if page is None else {"page": page, "page_size": PAGE_SIZE}
        response = session.get(
            self.base_url + path, params=params, headers=self.headers, timeout=TIMEOUT_S
        )
        response.raise_for_status()
        items = response.json()[table]
        if table == "tests":
            for item in items:
                run_ids = item.get("test_run_ids")
                item["test_run_ids"] = None if run_ids is None else json.dumps(run_ids)
        return len(items), pa.RecordBatch.from_pylist(items, schema=SCHEMAS[table])

    def fetch(self) -> None:
        """Schedule pages as earlier ones answer, keeping the pool full.

        Project pages are requested one after another per organization (page n+1 only when
        page n was full), so they cost exactly the minimum. The tests list has no total, so its
        pages go out speculatively, up to `WORKERS` at a time; the first short page stops it,
        and at most `WORKERS - 1` pages already in flight turn out to be wasted.
        """
        ready: deque[Task] = deque([Task("organizations", ORGANIZATIONS_PATH, None)])
        pending: dict[Future[tuple[int, pa.RecordBatch]], Task] = {}
        tests_pages: dict[int, pa.RecordBatch] = {}
        tests_last_page: int | None = None  # the first short page, once seen
        next_tests_page = 1
        with ThreadPoolExecutor(WORKERS) as pool:
            while True:
                while len(pending) < WORKERS:
                    if ready:
                        task = ready.popleft()
                    elif tests_last_page is None:
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
                    count, batch = future.result()
                    if task.table == "organizations":
                        self.batches["organizations"].append(batch)
                        ready.extend(
                            Task("projects", PROJECTS_PATH.format(org_id), 1)
                            for org_id in batch.column("id").to_pylist()
                        )
                    elif task.table == "projects":
                        self.batches["projects"].append(batch)
                        if count == PAGE_SIZE:
                            ready.append(task._replace(page=(task.page or 1) + 1))
                    else:
                        page = task.page or 1
                        tests_pages[page] = batch
                        if count < PAGE_SIZE:
                            tests_last_page = min(page, tests_last_page or page)
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
    """Fetch everything, load it, and print the row counts."""
    base_url, duckdb_file = argv
    floor = Floor(base_url, os.environ["API_TOKEN"])
    floor.fetch()
    print(floor.load(duckdb_file))


if __name__ == "__main__":
    main(sys.argv[1:])
