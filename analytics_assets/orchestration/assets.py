"""The three analytics tables as Dagster assets: one dlt run per sync, with dagster-dlt.

dlt extracts every selected list before it loads any, so a fault in one list fails the run with
every table as the last good run left it. The checks are separate steps (`checks.py`).
"""

from collections.abc import Iterator
from datetime import timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    FreshnessPolicy,
    MaterializeResult,
    TableColumn,
    TableSchema,
)
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.common.runtime.collector import LogCollector

from analytics_assets.sources.analytics import ApiSettings, analytics
from analytics_assets.sources.analytics.pipeline import (
    analytics_pipeline,
    loader_file_format,
    table_reports,
    warehouse_lock,
)
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DESCRIPTIONS,
    ORGANIZATIONS,
    PROJECTS,
    SCHEMA,
    TESTS,
)

GROUP_NAME = "analytics"
# One warehouse step at a time across hosts where the instance limits this pool (deploy/).
WAREHOUSE_POOL = "analytics_warehouse"
# A daily sync: WARN once a table is more than a day old, FAIL after two (with an hour of slack
# for a slow or retried run).
FRESHNESS = FreshnessPolicy.time_window(
    warn_window=timedelta(hours=25), fail_window=timedelta(hours=49)
)
# Lineage of the API: projects belong to organizations, tests belong to projects.
UPSTREAM = {PROJECTS: ORGANIZATIONS, TESTS: PROJECTS}
PROGRESS_LOG_PERIOD_S = 5.0


def asset_key(table: str) -> AssetKey:
    """`analytics/<table>`: the key mirrors the warehouse's `<dataset>.<table>`."""
    return AssetKey([DATASET_NAME, table])


class AnalyticsTranslator(DagsterDltTranslator):
    """Each table's key, lineage, description, columns and freshness, from the seed's contract."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        """dagster-dlt's spec (kinds `dlt` and the destination), keyed and described our way."""
        spec = super().get_asset_spec(data)
        table = data.resource.name
        columns = [TableColumn(name, hints["data_type"]) for name, hints in SCHEMA[table].items()]
        return spec.replace_attributes(
            key=asset_key(table),
            deps=[asset_key(UPSTREAM[table])] if table in UPSTREAM else [],
            description=DESCRIPTIONS[table],
            group_name=GROUP_NAME,
            freshness_policy=FRESHNESS,
            metadata={
                **spec.metadata,
                "dagster/table_name": f"{DATASET_NAME}.{table}",
                "dagster/column_schema": TableSchema(columns),
            },
        )


@dlt_assets(
    # The specs need only the resources' names; each run builds its own source from the
    # configured settings, so the code location loads before a token is set.
    dlt_source=analytics(ApiSettings()),
    dlt_pipeline=analytics_pipeline(),
    name="analytics_dlt",
    dagster_dlt_translator=AnalyticsTranslator(),
    pool=WAREHOUSE_POOL,
)
def analytics_tables(
    context: AssetExecutionContext, dlt: DagsterDltResource
) -> Iterator[MaterializeResult]:
    """One dlt run over the selected tables, then each table's ghosts and row count."""
    progress = LogCollector(PROGRESS_LOG_PERIOD_S, context.log, dump_system_stats=False)
    with warehouse_lock(context.log.info, progress) as pipeline:
        # a fresh source per run: dagster-dlt's metadata mutates a source's schema (dagster#34052)
        source = analytics()
        results = list(
            dlt.run(
                context=context,
                dlt_source=source,
                dlt_pipeline=pipeline,
                loader_file_format=loader_file_format(pipeline),
            )
        )
        # dagster-dlt's fetch_row_count() raises for a table the API served no rows for
        reports = table_reports(pipeline, [r.asset_key.path[-1] for r in results])
    for result in results:
        table = result.asset_key.path[-1]
        metadata = {
            # `first_run` is always true: dagster-dlt drops the local state before every run
            **{k: v for k, v in (result.metadata or {}).items() if k != "first_run"},
            # dagster-dlt names the table `<destination>.<schema>.<table>`; a query needs this
            "dagster/table_name": f"{DATASET_NAME}.{table}",
            "dagster/row_count": reports[table].row_count,
            **reports[table].listing,
        }
        yield result._replace(metadata=metadata)
