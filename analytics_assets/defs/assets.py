"""The three analytics tables as Dagster assets, loaded by one dlt run."""

from collections.abc import Iterator

from dagster import AssetExecutionContext, MaterializeResult, multi_asset
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.common.runtime.collector import LogCollector

from analytics_assets.defs.resources import AnalyticsDltResource
from analytics_assets.defs.translator import AnalyticsTranslator
from analytics_assets.sources.analytics import analytics, analytics_source
from analytics_assets.sources.analytics.pipeline import analytics_pipeline, loader_file_format
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DEFAULT_BASE_URL,
    RESOURCE_NAMES,
)

# One dlt load at a time per warehouse: DuckDB takes a single writer (dagster#26848).
WAREHOUSE_POOL = "analytics_warehouse"
PROGRESS_LOG_PERIOD_S = 5.0

translator = AnalyticsTranslator()

# The graph is built from the source's shape alone: no token is needed to load the definitions.
_shape = analytics(base_url=DEFAULT_BASE_URL, api_token="unused")
specs = [
    translator.get_asset_spec(DltResourceTranslatorData(resource=resource, pipeline=None))
    for resource in _shape.selected_resources.values()
]


@multi_asset(specs=specs, name="analytics_dlt", can_subset=True, pool=WAREHOUSE_POOL)
def analytics_dlt_assets(
    context: AssetExecutionContext, dlt: AnalyticsDltResource
) -> Iterator[MaterializeResult]:
    """Sync the selected tables in one dlt run, with progress in the run log."""
    pipeline = analytics_pipeline(
        progress=LogCollector(
            log_period=PROGRESS_LOG_PERIOD_S, logger=context.log, dump_system_stats=False
        )
    )
    # A fresh source per run: config is resolved now, and the definition's source stays untouched.
    results = dlt.run(
        context=context,
        dlt_source=analytics_source(),
        dlt_pipeline=pipeline,
        dagster_dlt_translator=translator,
        loader_file_format=loader_file_format(pipeline),
    )
    # dlt lists transformers (projects) after plain resources (tests); Dagster wants lineage order.
    ordered = sorted(results, key=lambda r: RESOURCE_NAMES.index(r.asset_key.path[-1]))
    # dagster-dlt's fetch_row_count() raises for a table that received no rows; count here.
    loaded = set(pipeline.default_schema.data_table_names(seen_data_only=True))
    with pipeline.sql_client() as client:
        for result in ordered:
            table = result.asset_key.path[-1]
            row_count = (
                client.execute_sql(
                    f"SELECT COUNT(*) FROM {client.make_qualified_table_name(table)}"
                )[0][0]
                if table in loaded
                else 0
            )
            yield result._replace(
                metadata={
                    **(result.metadata or {}),
                    **TableMetadataSet(row_count=row_count, table_name=f"{DATASET_NAME}.{table}"),
                }
            )
