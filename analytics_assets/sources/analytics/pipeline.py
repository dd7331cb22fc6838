"""The dlt pipeline that loads the analytics source, shared by Dagster and the command line.

What a sync needs around dlt's own `pipeline.run`: the warehouse (DuckDB with a memory cap by
default), one sync at a time per host, and the removal of rows the API no longer serves.
"""

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dlt
from dlt.common.destination import Destination, TLoaderFileFormat
from dlt.common.pipeline import get_dlt_pipelines_dir
from dlt.common.runtime.collector import NULL_COLLECTOR
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.destinations.sql_client import SqlClientBase
from dlt.pipeline.progress import TCollectorArg

from analytics_assets.sources.analytics.helpers import use_system_memory_pool
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DEFAULT_DESTINATION,
    DUCKDB_GLOBAL_CONFIG,
    PIPELINE_NAME,
    SAMPLE_SIZE,
    SOURCE_NAME,
)

DUCKDB = "dlt.destinations.duckdb"


def destination_type() -> str:
    """The warehouse: DuckDB unless dlt's `destination_type` setting names another destination."""
    return dlt.config.get("destination_type", str) or DEFAULT_DESTINATION


def analytics_pipeline(
    progress: TCollectorArg | None = None, *, read_only: bool = False
) -> dlt.Pipeline:
    """A pipeline into the `analytics` dataset of the configured destination.

    Credentials come from dlt's config (`DESTINATION__DUCKDB__CREDENTIALS`, ...). Without any,
    DuckDB writes `analytics_assets.duckdb` in the working directory. A read-only DuckDB
    pipeline lets several readers (the checks) share the file.
    """
    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=Destination.from_reference(destination_type()),
        dataset_name=DATASET_NAME,
        progress=progress or NULL_COLLECTOR,
    )
    if not is_duckdb(pipeline):
        return pipeline
    # dlt resolves the DuckDB file (by default named after the pipeline); keys the user sets under
    # destination.duckdb.credentials.global_config win over the memory cap
    credentials = duckdb_credentials(pipeline)
    credentials.global_config = {**DUCKDB_GLOBAL_CONFIG, **(credentials.global_config or {})}
    # DuckDB opens a file that does not exist yet only to create it, read-write
    credentials.read_only = read_only and os.path.exists(credentials.database or "")
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=dlt.destinations.duckdb(credentials=credentials),
        dataset_name=DATASET_NAME,
        progress=progress or NULL_COLLECTOR,
    )


def duckdb_credentials(pipeline: dlt.Pipeline) -> DuckDbCredentials:
    """The DuckDB file and settings that dlt resolved for a DuckDB pipeline."""
    # a pipeline from `analytics_pipeline` carries them in its destination: no second resolution
    credentials = pipeline.destination.config_params.get("credentials")
    if credentials is None:
        credentials = pipeline.destination_client().config.credentials
    if not isinstance(credentials, DuckDbCredentials):
        raise TypeError(f"{pipeline.destination.destination_name} is not a DuckDB destination")
    return credentials


def declared_pipeline() -> dlt.Pipeline:
    """The pipeline the definitions describe, for its destination: in a working dir of its own.

    dlt wipes a pipeline's working dir when it creates the pipeline and finds no state there,
    which a running sync's dir has for a moment (dagster-dlt drops the local state first). The
    definitions load in other processes while a sync runs (a step process, a code server).
    """
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=os.path.join(get_dlt_pipelines_dir(), "definitions"),
        destination=Destination.from_reference(destination_type()),
        dataset_name=DATASET_NAME,
    )


def is_duckdb(pipeline: dlt.Pipeline) -> bool:
    """DuckDB takes one writer process at a time, and keeps its data in a local file."""
    return pipeline.destination.destination_type == DUCKDB


def loader_file_format(pipeline: dlt.Pipeline) -> TLoaderFileFormat | None:
    """Parquet where the destination takes it: about 3x faster and 6x leaner than insert_values.

    PostgreSQL lists parquet but loads it only through an ADBC driver; its format selector drops
    parquet when none is installed. Asking anyway costs two warnings per table and leaves a
    parquet hint that types JSON columns `json` instead of `jsonb`.
    """
    caps = pipeline.destination.capabilities()
    formats = caps.supported_loader_file_formats
    if caps.loader_file_format_selector is not None:
        _, formats = caps.loader_file_format_selector(
            caps.preferred_loader_file_format, formats, table_schema={}
        )
    if "parquet" not in formats:
        return None
    use_system_memory_pool()  # before dlt's first parquet buffer
    return "parquet"


@contextmanager
def warehouse_lock(
    log: Callable[[str], None], progress: TCollectorArg | None = None, *, shared: bool = False
) -> Iterator[dlt.Pipeline]:
    """The analytics pipeline, held by one sync at a time on this host (readers may share).

    A sync replaces dlt's local pipeline state, and DuckDB admits one writer process at a time
    (dagster#26848). OS file locks rather than only a Dagster pool: a killed process releases them
    at once, where a pool slot stays claimed until something marks the dead run failed.
    """
    pipelines_dir = get_dlt_pipelines_dir()
    os.makedirs(pipelines_dir, exist_ok=True)
    lock = os.path.join(pipelines_dir, f"{PIPELINE_NAME}.lock")
    with _flock(lock, "dlt's pipeline dir", log, shared):
        pipeline = analytics_pipeline(progress, read_only=shared)
        if not is_duckdb(pipeline):
            yield pipeline
            return
        database = str(duckdb_credentials(pipeline).database)  # resolved once, in the factory
        with _flock(f"{database}.lock", database, log, shared):
            yield pipeline


@contextmanager
def _flock(path: str, what: str, log: Callable[[str], None], shared: bool) -> Iterator[None]:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as lock_file:
        try:
            fcntl.flock(lock_file, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"Another sync is using {what}; waiting for it to finish.")
            fcntl.flock(lock_file, mode)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@dataclass(frozen=True)
class TableReport:
    """What a sync left in one table: its rows, how the API listed it, the ghosts it removed."""

    row_count: int
    listing: dict[str, Any]


def table_reports(pipeline: dlt.Pipeline, tables: Sequence[str]) -> dict[str, TableReport]:
    """After a run: each table's ghosts removed as its listing allows, then its rows counted.

    The source records each table's listing, and the rows a ghost removal keeps, in the
    resource's dlt state (`helpers.Listing`); this carries it out in the warehouse.
    """
    trace = pipeline.last_trace
    load_ids = trace.last_load_info.loads_ids if trace and trace.last_load_info else []
    resources = pipeline.state.get("sources", {}).get(SOURCE_NAME, {}).get("resources", {})
    reports = {}
    with pipeline.sql_client() as client:
        for table in tables:
            listing = resources.get(table, {}).get("listing")
            if listing is None or listing["load_id"] not in load_ids:
                listing = {"status": "not listed", "reason": "this run did not list the table"}
            ghosts: dict[str, Any] = {"ghosts_removed": 0}
            row_count = 0
            try:
                ghosts = remove_ghosts(client, table, listing.get("keep"))
                name = client.make_qualified_table_name(table)
                row_count = _scalar(client, f"SELECT COUNT(*) FROM {name}")
            except DatabaseUndefinedRelation:  # dlt creates no table for a list never served
                pass
            if listing.get("keep") is None:
                ghosts["ghosts_note"] = f"kept every row: {listing['reason']}"
            summary = {"rows_served": listing.get("rows", 0), "listing": listing["status"]}
            reports[table] = TableReport(row_count, {**summary, **ghosts})
    return reports


def remove_ghosts(client: SqlClientBase, table: str, keep: Sequence[str] | None) -> dict[str, Any]:
    """Delete the rows no load in `keep` wrote: merge alone would keep them forever.

    A row's `_dlt_load_id` is the last sync that served it, so these are the rows the API
    stopped serving; `keep` is None when the listing cannot be trusted to be whole.
    """
    if not keep:
        return {"ghosts_removed": 0}
    name = client.make_qualified_table_name(table)
    stale = "_dlt_load_id NOT IN ({})".format(", ".join(f"'{i}'" for i in keep))
    ghosts = _scalar(client, f"SELECT COUNT(*) FROM {name} WHERE {stale}")
    sample = (
        client.execute_sql(f"SELECT id FROM {name} WHERE {stale} ORDER BY id LIMIT {SAMPLE_SIZE}")
        or []
    )
    if ghosts:
        with client.begin_transaction():
            client.execute_sql(f"DELETE FROM {name} WHERE {stale}")
    return {"ghosts_removed": ghosts, "sample_ghost_ids": [row[0] for row in sample]}


def _scalar(client: SqlClientBase, sql: str) -> int:
    rows = client.execute_sql(sql)
    if not rows:
        raise RuntimeError(f"no result from {sql}")
    return int(rows[0][0])
