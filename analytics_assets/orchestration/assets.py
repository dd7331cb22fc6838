"""The three analytics tables as Dagster assets, each step one dlt run followed by its checks.

Two steps, not one: `projects.organization_id_references_organizations` is blocking, and a
blocking check can only stop assets of *later* steps. So organizations and projects load
together, and tests load in a second step that runs only when that check passed.
"""

from collections.abc import Iterator, Sequence

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    multi_asset,
)
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.common.runtime.collector import LogCollector

from analytics_assets.orchestration.checks import CHECKS, open_warehouse
from analytics_assets.orchestration.resources import AnalyticsDltResource
from analytics_assets.orchestration.translator import AnalyticsTranslator
from analytics_assets.sources.analytics import analytics, analytics_source
from analytics_assets.sources.analytics.pipeline import analytics_pipeline, loader_file_format
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DEFAULT_BASE_URL,
    ORGANIZATIONS,
    PROJECTS,
    RESOURCE_NAMES,
    TESTS,
)

# One dlt load at a time per warehouse: DuckDB takes a single writer (dagster#26848).
WAREHOUSE_POOL = "analytics_warehouse"
PROGRESS_LOG_PERIOD_S = 5.0

translator = AnalyticsTranslator()

# The graph is built from the source's shape alone: no token is needed to load the definitions.
_shape = analytics(base_url=DEFAULT_BASE_URL, api_token="unused")
SPECS = {
    resource.name: translator.get_asset_spec(
        DltResourceTranslatorData(resource=resource, pipeline=None)
    )
    for resource in _shape.selected_resources.values()
}


def _load(
    context: AssetExecutionContext, dlt: AnalyticsDltResource, tables: Sequence[str]
) -> Iterator[MaterializeResult]:
    """One dlt run of the selected tables, with progress in the run log and row counts."""
    pipeline = analytics_pipeline(
        progress=LogCollector(
            log_period=PROGRESS_LOG_PERIOD_S, logger=context.log, dump_system_stats=False
        )
    )
    # A fresh source per run: config is resolved now, and the definition's source stays untouched.
    results = dlt.run(
        context=context,
        dlt_source=analytics_source().with_resources(*tables),
        dlt_pipeline=pipeline,
        dagster_dlt_translator=translator,
        loader_file_format=loader_file_format(pipeline),
    )
    # dlt lists transformers (projects) after plain resources; Dagster wants lineage order.
    ordered = sorted(results, key=lambda r: RESOURCE_NAMES.index(r.asset_key.path[-1]))
    # dagster-dlt's fetch_row_count() raises for a table that received no rows; count here.
    loaded = set(pipeline.default_schema.data_table_names(seen_data_only=True))
    with pipeline.sql_client() as client:
        for result in ordered:
            table = result.asset_key.path[-1]
            row_count = 0
            if table in loaded:
                name = client.make_qualified_table_name(table)
                row_count = client.execute_sql(f"SELECT COUNT(*) FROM {name}")[0][0]
            yield result._replace(
                metadata={
                    **(result.metadata or {}),
                    **TableMetadataSet(row_count=row_count, table_name=f"{DATASET_NAME}.{table}"),
                }
            )


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


def dlt_step(name: str, tables: Sequence[str]) -> AssetsDefinition:
    """A multi-asset over some tables and their checks; any subset, checks alone included."""

    @multi_asset(
        name=name,
        specs=[SPECS[t] for t in tables],
        check_specs=[c.spec for t in tables for c in CHECKS[t]],
        can_subset=True,
        pool=WAREHOUSE_POOL,
    )
    def _step(
        context: AssetExecutionContext, dlt: AnalyticsDltResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        selected = [t for t in tables if SPECS[t].key in context.selected_asset_keys]
        if selected:
            yield from _load(context, dlt, selected)
        yield from _check(context, tables)

    return _step


organizations_and_projects = dlt_step("analytics_organizations_projects", (ORGANIZATIONS, PROJECTS))
tests = dlt_step("analytics_tests", (TESTS,))
analytics_assets = [organizations_and_projects, tests]
