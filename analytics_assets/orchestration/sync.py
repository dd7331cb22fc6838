"""What a load step does when it runs: dlt and dagster-dlt, imported only once a step starts.

Nothing is written before every list of the run has been fetched. When the run materializes
tests too, the first step fetches them on a second thread while it fetches organizations and
projects, into a pending package of the tests' own dlt pipeline; only then does it load
organizations and projects, and the second step loads the tests' package. A fault in any list
fails the run with the warehouse exactly as the last good run left it.

So the steps drive dlt's pipeline themselves (extract, then normalize and load what was
fetched) and take the materialization metadata from dagster-dlt's resource: its `run()`
extracts and loads in one call, with no point at which to wait for another list.
"""

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    OpExecutionContext,
)
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet
from dagster._core.definitions.metadata.table import TableSchema
from dagster_dlt import DagsterDltResource
from dlt.common.pipeline import LoadInfo
from dlt.common.schema import Schema
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.sql_client import SqlClientBase
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource
from dlt.pipeline.pipeline import Pipeline

from analytics_assets.orchestration.checks import CHECKS, SAMPLE_SIZE, open_warehouse
from analytics_assets.orchestration.resources import AnalyticsDltResource
from analytics_assets.orchestration.specs import SPECS
from analytics_assets.sources.analytics import analytics_source
from analytics_assets.sources.analytics.helpers import (
    ConcurrentLogCollector,
    arrow,
    counting_pages,
)
from analytics_assets.sources.analytics.pipeline import (
    analytics_pipeline,
    exclusive_sync,
    loader_file_format,
    tests_pipeline,
)
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    TESTS,
    TESTS_SCHEMA_NAME,
)

PROGRESS_LOG_PERIOD_S = 5.0
# Local state of the tests' pipeline: which Dagster run its pending package was fetched for.
FETCHED_FOR_RUN = "fetched_for_run"


def run_step(
    context: AssetExecutionContext, dlt: AnalyticsDltResource, tables: Sequence[str]
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Load the step's selected tables, if any, then evaluate its selected checks."""
    selected = [t for t in tables if SPECS[t].key in context.selected_asset_keys]
    load = load_tests if TESTS in tables else load_organizations_projects
    with exclusive_sync(context.log.info):
        if selected:
            yield from load(context, dlt, selected)
        yield from _check(context, tables)


def _progress(context: AssetExecutionContext) -> ConcurrentLogCollector:
    """Progress of dlt (rows, pages, files) in the run log every few seconds."""
    return ConcurrentLogCollector(
        log_period=PROGRESS_LOG_PERIOD_S, logger=context.log, dump_system_stats=False
    )


def _run_materializes(context: AssetExecutionContext, table: str) -> bool:
    """Whether this run materializes `table`, in this step or in a later one."""
    return SPECS[table].key in context.job_def.asset_layer.selected_asset_keys


def load_organizations_projects(
    context: AssetExecutionContext, dlt: AnalyticsDltResource, tables: Sequence[str]
) -> Iterator[MaterializeResult]:
    """Fetch every list of the run, then load organizations and projects.

    When the run loads tests too, they are fetched on a second thread meanwhile (the fetch is
    most of a sync, and it waits on the API, not the CPU); a fault there fails this step
    before anything is written.
    """
    # both pipelines are set up here: dlt pipelines must not be created or dropped concurrently
    tests = _fresh_tests_pipeline(context) if _run_materializes(context, TESTS) else None
    pipeline = analytics_pipeline(progress=_progress(context))
    # as dagster-dlt's run does: local state comes back from the destination, a stale package goes
    pipeline.drop()
    pipeline.sync_destination()
    source = analytics_source().with_resources(*tables)
    file_format = loader_file_format(pipeline)
    arrow()  # tests arrive as Arrow on the second thread: two first imports of pyarrow race
    with ThreadPoolExecutor(1, thread_name_prefix="analytics-tests-fetch") as pool:
        fetched = pool.submit(fetch_tests, context, tests) if tests is not None else None
        with counting_pages(pipeline.collector, tables):
            pipeline.extract(source, loader_file_format=file_format)
        if fetched is not None:
            fetched.result()
    # synced before the extract, as dlt's run() does; syncing again would drop what was fetched
    pipeline.config.restore_from_destination = False
    # dagster-dlt's run() extracts and loads in one call, with no point to wait for the tests
    yield from _load_fetched(context, dlt, pipeline, source, tables)


def _fresh_tests_pipeline(context: AssetExecutionContext) -> Pipeline:
    pipeline = tests_pipeline(progress=_progress(context))
    pipeline.drop()  # a package left by an earlier run that failed is stale
    return pipeline


def fetch_tests(context: AssetExecutionContext, pipeline: Pipeline) -> Pipeline:
    """Fetch the whole tests list into a pending package of the tests' pipeline, for this run."""
    pipeline.activate()  # dlt's active pipeline is per thread, and this may run on another one
    source = analytics_source().with_resources(TESTS).clone(with_name=TESTS_SCHEMA_NAME)
    with counting_pages(pipeline.collector, [TESTS]):
        # the file format is chosen at extract time: the package keeps it until its load
        pipeline.extract(source, loader_file_format=loader_file_format(pipeline))
    pipeline.set_local_state_val(FETCHED_FOR_RUN, context.run.run_id)
    return pipeline


def load_tests(
    context: AssetExecutionContext, dlt: AnalyticsDltResource, tables: Sequence[str]
) -> Iterator[MaterializeResult]:
    """Load the tests fetched by this run's first step; fetch them now if it did not."""
    pipeline = tests_pipeline(progress=_progress(context))
    if not _fetched_for(pipeline, context.run.run_id):
        pipeline = fetch_tests(context, _fresh_tests_pipeline(context))
    yield from _load_fetched(context, dlt, pipeline, analytics_source(), tables)


def _load_fetched(
    context: AssetExecutionContext,
    dlt: AnalyticsDltResource,
    pipeline: Pipeline,
    source: DltSource,
    tables: Sequence[str],
) -> Iterator[MaterializeResult]:
    """Normalize and load the pipeline's fetched package: a result per table, rows counted."""
    # With a pending package and no data, dlt's run normalizes and loads just that package.
    load_info = pipeline.run() if pipeline.has_pending_data else None
    if load_info is not None:
        load_info.raise_on_failed_jobs()
    results = []
    for table in tables:
        if load_info is None:  # the API served nothing: dlt normalized no rows, loaded nothing
            metadata = {"rows_loaded": 0, "dataset_name": pipeline.dataset_name}
        else:
            resource = source.resources[table]
            metadata = dlt.extract_resource_metadata(context, resource, load_info, pipeline)
        results.append(MaterializeResult(asset_key=SPECS[table].key, metadata=metadata))
    yield from _with_row_counts(pipeline, results)


def _fetched_for(pipeline: Pipeline, run_id: str) -> bool:
    """Whether the tests were fetched by this run: a package left by another is never loaded."""
    try:
        return pipeline.get_local_state_val(FETCHED_FOR_RUN) == run_id
    except KeyError:
        return False


def _with_row_counts(
    pipeline: Pipeline, results: Sequence[MaterializeResult]
) -> Iterator[MaterializeResult]:
    """Each result after removing the table's ghosts, with its row count and ghost report."""
    trace = pipeline.last_trace
    load_ids = trace.last_load_info.loads_ids if trace and trace.last_load_info else []
    served = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    with pipeline.sql_client() as client:
        for result in results:
            table = result.asset_key.path[-1]
            try:
                ghosts = remove_ghosts(client, table, load_ids, served.get(table, 0))
                # dagster-dlt's fetch_row_count() raises for a table that received no rows
                name = client.make_qualified_table_name(table)
                row_count = client.execute_sql(f"SELECT COUNT(*) FROM {name}")[0][0]
            except DatabaseUndefinedRelation:  # dlt creates no table for a list never served
                ghosts, row_count = {}, 0
            yield result._replace(
                metadata={**(result.metadata or {}), **_table_metadata(table, row_count), **ghosts}
            )


def _table_metadata(table: str, row_count: int) -> TableMetadataSet:
    return TableMetadataSet(row_count=row_count, table_name=f"{DATASET_NAME}.{table}")


def remove_ghosts(
    client: SqlClientBase, table: str, load_ids: Sequence[str], served: int
) -> dict[str, Any]:
    """Delete rows the API no longer serves: merge alone would keep them forever.

    Every served row was just written with this run's load id; any other row is a ghost. An
    empty list from an API that had rows looks like an outage, not a deletion: nothing goes.
    """
    if not load_ids or served == 0:
        return {"ghosts_removed": 0, "ghosts_note": "kept all rows: the API served none"}
    name = client.make_qualified_table_name(table)
    stale = "_dlt_load_id NOT IN ({})".format(", ".join(f"'{i}'" for i in load_ids))
    ghosts = client.execute_sql(f"SELECT COUNT(*) FROM {name} WHERE {stale}")[0][0]
    sample = client.execute_sql(
        f"SELECT id FROM {name} WHERE {stale} ORDER BY id LIMIT {SAMPLE_SIZE}"
    )
    if ghosts:
        with client.begin_transaction():
            client.execute_sql(f"DELETE FROM {name} WHERE {stale}")
    return {"ghosts_removed": ghosts, "sample_ghost_ids": [row[0] for row in sample]}


def _check(context: AssetExecutionContext, tables: Sequence[str]) -> Iterator[AssetCheckResult]:
    """Evaluate the selected checks of these tables against what is in the warehouse now."""
    selected = context.selected_asset_check_keys
    checks = [c for t in tables for c in CHECKS[t] if c.spec.key in selected]
    if not checks:
        return
    pipeline = analytics_pipeline()
    with open_warehouse(pipeline) as warehouse:
        for check in checks:
            result = check.evaluate(warehouse)
            yield result._replace(asset_key=check.spec.asset_key, check_name=check.name)


class PatchedDagsterDltResource(DagsterDltResource):
    """`DagsterDltResource` that survives repeated and empty runs in one process."""

    def _extract_table_schema_metadata(self, table_name: str, schema: Schema) -> TableSchema:
        # dagster-dlt pops keys off the live schema's columns (dagster#34052): hand it a copy.
        return super()._extract_table_schema_metadata(table_name, schema.clone())

    def extract_resource_metadata(
        self,
        context: OpExecutionContext | AssetExecutionContext,
        resource: DltResource,
        load_info: LoadInfo,
        dlt_pipeline: Pipeline,
    ) -> Mapping[str, Any]:
        """Skip dlt's row counts when nothing was normalized (dagster#33572 raises there)."""
        trace = dlt_pipeline.last_trace
        if trace is None or trace.last_normalize_info is None:
            return {"rows_loaded": 0, "dataset_name": dlt_pipeline.dataset_name}
        return super().extract_resource_metadata(context, resource, load_info, dlt_pipeline)
