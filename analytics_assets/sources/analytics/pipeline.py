"""The dlt pipeline that loads the analytics source, shared by Dagster and the command line."""

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dlt
from dlt.common.destination import Destination, TDestinationReferenceArg
from dlt.common.pipeline import get_dlt_pipelines_dir
from dlt.common.runtime.collector import Collector

from analytics_assets.sources.analytics.helpers import arrow
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DEFAULT_DESTINATION,
    DUCKDB_GLOBAL_CONFIG,
    PIPELINE_NAME,
    TESTS_PIPELINE_NAME,
)

DUCKDB = "dlt.destinations.duckdb"


def destination_type() -> str:
    """The warehouse: DuckDB unless dlt's `destination_type` setting names another destination."""
    return dlt.config.get("destination_type", str) or DEFAULT_DESTINATION


def analytics_pipeline(
    progress: Collector | str | None = None, pipeline_name: str = PIPELINE_NAME
) -> dlt.Pipeline:
    """A pipeline into the `analytics` dataset of the configured destination.

    Credentials come from dlt's config (`DESTINATION__DUCKDB__CREDENTIALS`, ...). Without any,
    DuckDB writes `analytics_assets.duckdb` in the working directory, whichever pipeline loads.
    """
    destination = Destination.from_reference(destination_type())
    if destination.destination_type != DUCKDB:
        return _pipeline(pipeline_name, destination, progress)
    # the main pipeline resolves the DuckDB file: by default it is named after that pipeline
    credentials = _pipeline(PIPELINE_NAME, destination).destination_client().config.credentials
    # keys the user sets under destination.duckdb.credentials.global_config win
    credentials.global_config = {**DUCKDB_GLOBAL_CONFIG, **(credentials.global_config or {})}
    return _pipeline(pipeline_name, dlt.destinations.duckdb(credentials=credentials), progress)


def _pipeline(
    name: str, destination: TDestinationReferenceArg, progress: Collector | str | None = None
) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=name, destination=destination, dataset_name=DATASET_NAME, progress=progress
    )


def tests_pipeline(progress: Collector | str | None = None) -> dlt.Pipeline:
    """The pipeline that loads `tests`, into the same dataset, from a package fetched earlier.

    Its own pipeline so the fetched tests survive the organizations/projects load in between,
    as a pending package. Nothing to restore from the destination: every sync is a full one,
    and a restore would replace the schema the pending package was extracted with.
    """
    pipeline = analytics_pipeline(progress, TESTS_PIPELINE_NAME)
    pipeline.config.restore_from_destination = False
    return pipeline


def is_duckdb(pipeline: dlt.Pipeline) -> bool:
    """DuckDB takes one writer process at a time, and keeps its data in a local file."""
    return pipeline.destination.destination_type == DUCKDB


def loader_file_format(pipeline: dlt.Pipeline) -> str | None:
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
    arrow()  # dlt writes parquet with Arrow: set up its memory pool before the first buffer
    return "parquet"


@contextmanager
def exclusive_sync(log: Callable[[str], None]) -> Iterator[None]:
    """Run one sync at a time per dlt pipeline dir and per DuckDB file, across processes.

    Two syncs sharing a pipeline dir would wipe each other's local state, and DuckDB admits one
    writer process at a time. OS file locks rather than only a Dagster pool: a killed process
    releases them at once, where a pool slot stays claimed until something marks the dead run
    failed. Other warehouses take concurrent writers and need no warehouse lock.
    """
    pipelines_dir = get_dlt_pipelines_dir()
    os.makedirs(pipelines_dir, exist_ok=True)
    with _flock(os.path.join(pipelines_dir, f"{PIPELINE_NAME}.lock"), "dlt pipeline dir", log):
        pipeline = analytics_pipeline()
        if not is_duckdb(pipeline):
            yield
            return
        database = pipeline.destination_client().config.credentials.database
        with _flock(f"{database}.lock", database, log):
            yield


@contextmanager
def _flock(path: str, what: str, log: Callable[[str], None]) -> Iterator[None]:
    with open(path, "a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"Another sync is using {what}; waiting for it to finish.")
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
