"""The dlt pipeline of a sync, for Dagster and the command line: warehouse, lock, errors, ghosts."""

import fcntl  # Linux and macOS; the code location is not meant to run on Windows
import gc
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Self

import dlt
import duckdb
import pyarrow as pa
from dlt.common.pipeline import get_dlt_pipelines_dir
from dlt.common.runtime.collector import NULL_COLLECTOR, LogCollector
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.pipeline.progress import TCollectorArg

from analytics_assets.sources.analytics import settings as s
from analytics_assets.sources.analytics.helpers import ApiError, ContractViolation, SettingError

# DuckDB holds a table's new rows in memory until a row group fills: 4,096 of them, not 122,880
ROW_GROUP_SIZE = 4096


class WarehouseLimitReached(Exception):
    """The warehouse ran out of memory or disk; the message names the setting to raise."""


def analytics_pipeline(
    progress: TCollectorArg = NULL_COLLECTOR, destination: Any = None, pipelines_dir: Any = None
) -> Any:
    """The pipeline into `destination`, by default dlt's `destination_type` (else DuckDB)."""
    destination = destination or dlt.config.get("destination_type", str) or s.DEFAULT_DESTINATION
    return dlt.pipeline(
        s.PIPELINE_NAME,
        pipelines_dir=pipelines_dir,
        destination=destination,
        dataset_name=s.DATASET_NAME,
        progress=progress,
    )


def declared_pipeline() -> Any:
    """The pipeline the definitions describe, in a dir of its own.

    dlt wipes a pipeline's dir it finds without state, as a running sync's is for a moment. This
    one has none until it is first made: processes that load the definitions take turns at it.
    """
    pipelines_dir = os.path.join(get_dlt_pipelines_dir(), "definitions")
    os.makedirs(pipelines_dir, exist_ok=True)
    with _flock(os.path.join(pipelines_dir, f"{s.PIPELINE_NAME}.lock"), lambda _: None, False):
        return analytics_pipeline(pipelines_dir=pipelines_dir)


class SyncProgress(LogCollector):
    """dlt's progress log, headed `Normalize analytics, the sync of <UTC time>`, not a load id."""

    def __call__(self, step: str) -> Self:
        """`Normalize analytics in 1796170436.817694` becomes `..., the sync of <UTC time>`."""
        name, _, load_id = step.partition(" in ")
        with suppress(ValueError):
            step = f"{name}, the sync of {datetime.fromtimestamp(float(load_id), UTC):%F %T} UTC"
        return super().__call__(step)


def duckdb_credentials(pipeline: Any) -> Any:
    """The DuckDB file and settings of a DuckDB pipeline (as dlt resolved them), else None."""
    if pipeline.destination.destination_type != "dlt.destinations.duckdb":
        return None
    return pipeline.destination_client().config.credentials


def loader_file_format(pipeline: Any) -> Any:
    """Parquet where the destination loads it (PostgreSQL only with an ADBC driver), else dlt's.

    Arrow items (the tests) go to parquet anyway; for the others, parquet loads faster and in
    less memory than DuckDB's default, insert_values (docs/performance.md).
    """
    caps = pipeline.destination.capabilities()
    formats = caps.supported_loader_file_formats
    if caps.loader_file_format_selector is not None:
        _, formats = caps.loader_file_format_selector(
            caps.preferred_loader_file_format, formats, table_schema={}
        )
    return "parquet" if "parquet" in formats else None


@contextmanager
def warehouse_lock(
    log: Callable[[str], None], progress: TCollectorArg = NULL_COLLECTOR, *, shared: bool = False
) -> Iterator[Any]:
    """The pipeline, held by one sync at a time on this host (readers may share).

    A sync replaces dlt's local state, and DuckDB admits one writer process (dagster#26848). OS
    file locks, unlike a Dagster pool slot, go the moment their process is killed.
    """
    os.makedirs(get_dlt_pipelines_dir(), exist_ok=True)
    with _flock(os.path.join(get_dlt_pipelines_dir(), f"{s.PIPELINE_NAME}.lock"), log, shared):
        pipeline = analytics_pipeline(progress)
        if (credentials := duckdb_credentials(pipeline)) is None:
            yield pipeline
            return
        with _flock(f"{credentials.database}.lock", log, shared):
            yield from _one_connection(credentials, shared, progress, log)


def _one_connection(
    credentials: Any, read_only: bool, progress: TCollectorArg, log: Callable[[str], None]
) -> Iterator[Any]:
    """The pipeline on one DuckDB connection, which dlt's clients share (else they open seven).

    The file is attached with small row groups: DuckDB then writes a load's rows to disk as they
    come instead of holding up to 122,880 of them in memory (docs/performance.md, *Memory*). The
    user's settings go over our defaults; their `statements` run once.
    """
    path = credentials.database
    config = {"temp_directory": f"{path}.tmp", **s.DUCKDB_GLOBAL_CONFIG}
    config.update(credentials.global_config or {})
    # DuckDB opens a file that does not exist yet only to create it, read-write
    mode = ", READ_ONLY" if read_only and os.path.exists(path) else ""
    # what DuckDB takes only when it opens (as dlt's pool); the rest after the extensions load
    opening = {key: config[key] for key in ("custom_user_agent",) if key in config}
    connection = duckdb.connect(config=opening)
    try:
        # attached, the file takes storage options; DuckDB names it as when it opens it, but
        # `memory` is taken here: memory_db, as DuckDB's own temp_db and system_db
        stem = os.path.basename(path).split(".")[0].lower()
        alias = " AS memory_db" if stem == "memory" else ""
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}{mode}"
        connection.execute(f"ATTACH $1{alias} ({options})", [path])
        sql = "SELECT database_name FROM duckdb_databases() WHERE path IS NOT NULL"
        ((name,),) = connection.execute(sql).fetchall()
        escaped = name.replace('"', '""')
        connection.execute(f'USE "{escaped}"')
        connection.execute("DETACH memory")  # dlt's clients, copies of this one, start in the file
        for extension in credentials.extensions or ():
            connection.load_extension(extension)
        # the rest before the user's statements, as dlt's pool does; dlt's clients set them again
        settings = {key: value for key, value in config.items() if key not in opening}
        for key, value in settings.items():
            connection.execute(f"SET GLOBAL {key} = ?", [value])
        for statement in credentials.statements or ():
            connection.execute(statement)
        held = type(credentials)(
            connection,
            extensions=[],
            statements=[],  # not None: dlt would read them from the settings and run them again
            global_config=settings,
            pragmas=credentials.pragmas,
            local_config=credentials.local_config,
            session_timezone=credentials.session_timezone,
        )
        yield analytics_pipeline(progress, dlt.destinations.duckdb(credentials=held))
    except BaseException:
        try:  # DuckDB will not close under a job a 2nd Ctrl-C left running: the error is the news
            connection.close()
        except Exception as error:
            log(f"{path} may stay open until this process ends: {error}")
        raise
    connection.close()


@contextmanager
def _flock(path: str, log: Callable[[str], None], shared: bool) -> Iterator[None]:
    with open(path, "a") as lock_file:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(lock_file, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"Another sync is using {path.removesuffix('.lock')}; waiting for it to finish.")
            fcntl.flock(lock_file, mode)
        yield


class _NoArrowHintNotice(logging.Filter):
    """dlt warns, on every Arrow item, that the `json` hint beat the Arrow type: as meant."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "when merging arrow schema with dlt schema" not in record.getMessage()


@contextmanager
def sync_settings() -> Iterator[None]:
    """Settings of dlt for one sync: `_dlt_load_id` on Arrow rows too, no notice of the hint.

    Python's full collections would walk the ~280,000 objects of the imports each time: frozen
    for the sync, they are skipped (0.15 s of a 1x sync). For the ~2 MB of Arrow tables a sync
    holds at once, Arrow's default pool, mimalloc, keeps ~10 MB more than malloc's does
    (docs/performance.md).
    """
    notice, dlt_logger = _NoArrowHintNotice(), logging.getLogger("dlt")
    dlt_logger.addFilter(notice)
    freeze = gc.get_freeze_count() == 0  # a host's own freeze is not ours to undo
    if freeze:
        gc.freeze()
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        with dlt.config.values({"normalize.parquet_normalizer.add_dlt_load_id": True}):
            yield
    finally:
        pa.set_memory_pool(pool)
        if freeze:
            gc.unfreeze()
        dlt_logger.removeFilter(notice)


def user_error(error: BaseException, pipeline: Any) -> Exception | None:
    """The error under `error` a user can act on, anew: no wrapper's trace follows its line.

    dlt wraps a source's error twice and requests chains urllib3's; a CLI would print them all.
    """
    cause, memory = error, None
    while cause is not None:
        if isinstance(cause, ApiError | SettingError | ContractViolation):
            return type(cause)(*cause.args)
        memory = cause if "Out of Memory Error" in str(cause) else memory  # the innermost
        cause = cause.__cause__ or cause.__context__
    if memory is None or (credentials := duckdb_credentials(pipeline)) is None:
        return None
    return WarehouseLimitReached(
        f"DuckDB ran out of memory: {str(memory).splitlines()[0][:200]} A table whose load "
        f"failed keeps its rows of the last good sync. Raise memory_limit in "
        f"{s.DUCKDB_CONFIG_SETTING} (now {credentials.global_config}), e.g. "
        f'{s.DUCKDB_CONFIG_SETTING}=\'{{"memory_limit": "1GB"}}\'.'
    )


def remove_ghosts(pipeline: Any, tables: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The rows the run's load did not write go: neither of the source's two listings served them.

    A table served empty keeps every row: an outage would look the same.
    """
    info = pipeline.last_trace and pipeline.last_trace.last_load_info
    load_id = info.loads_ids[-1] if info and info.loads_ids else ""
    reports: dict[str, dict[str, Any]] = {}
    with pipeline.sql_client() as client:
        for table in tables:
            name = client.make_qualified_table_name(table)
            # rows loaded before dlt added load ids to Arrow rows have none: stale too
            stale = f"FROM {name} WHERE _dlt_load_id <> %s OR _dlt_load_id IS NULL"
            count = f"SELECT COUNT(*), COUNT(CASE WHEN _dlt_load_id = %s THEN 1 END) FROM {name}"
            try:
                ((rows, served),) = client.execute_sql(count, load_id)
            except DatabaseUndefinedRelation:  # dlt creates no table for a list never served
                rows = served = 0
            report = reports[table] = {"rows_served": served, "ghosts_removed": 0}
            if served and rows > served:
                with client.execute_query(f"SELECT id {stale} ORDER BY id", load_id) as cursor:
                    report["sample_ghost_ids"] = [row[0] for row in cursor.fetchmany(s.SAMPLE_SIZE)]
                with client.begin_transaction():
                    client.execute_sql(f"DELETE {stale}", load_id)
                report["ghosts_removed"], rows = rows - served, served
            elif rows and not served:
                report["ghosts_note"] = "kept every row: the API served none, as an outage would"
            report["dagster/row_count"] = rows
    return reports
