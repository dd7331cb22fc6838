"""The three analytics tables as Dagster assets: one dlt run per sync, with dagster-dlt.

dlt extracts every selected list before it loads any, so a fault in one list fails the run with
every table as the last good run left it. The checks run in a step of their own (`checks.py`).
"""

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
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
    declared_pipeline,
    loader_file_format,
    table_reports,
    warehouse_lock,
)
from analytics_assets.sources.analytics.settings import (
    COLUMN_DESCRIPTIONS,
    DATASET_NAME,
    DESCRIPTIONS,
    ORGANIZATIONS,
    PROJECTS,
    SEED_TYPES,
    TESTS,
)

GROUP_NAME = "analytics"
# One warehouse step at a time across hosts where the instance limits this pool (deploy/).
WAREHOUSE_POOL = "analytics_warehouse"
# A daily sync: WARN once a daily run was missed (a table 2 days old), FAIL after two missed. Whole
# days, because the UI says "2 days" for anything from 36 to 59 hours; a 1-day WARN would flash
# yellow whenever a healthy run finished a little later than the day before.
FRESHNESS = FreshnessPolicy.time_window(
    warn_window=timedelta(days=2), fail_window=timedelta(days=3)
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
        columns = [
            TableColumn(name, data_type, description=COLUMN_DESCRIPTIONS[table][name])
            for name, data_type in SEED_TYPES[table].items()
        ]
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
    dlt_pipeline=declared_pipeline(),
    name="analytics_dlt",
    dagster_dlt_translator=AnalyticsTranslator(),
    pool=WAREHOUSE_POOL,
)
def analytics_tables(
    context: AssetExecutionContext, dlt: DagsterDltResource
) -> Iterator[MaterializeResult | AssetMaterialization]:
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
        reports = table_reports(pipeline, [table_of(r) for r in results])
    for result in results:
        table = table_of(result)
        metadata = {
            # `first_run` is always true: dagster-dlt drops the local state before every run
            **{k: v for k, v in (result.metadata or {}).items() if k != "first_run"},
            # dagster-dlt names the table `<destination>.<schema>.<table>`; a query needs this
            "dagster/table_name": f"{DATASET_NAME}.{table}",
            "dagster/row_count": reports[table].row_count,
            **reports[table].listing,
        }
        columns = described(table, result.metadata)
        if columns is not None:
            metadata["dagster/column_schema"] = columns
        yield result._replace(metadata=metadata)


def table_of(result: MaterializeResult | AssetMaterialization) -> str:
    """The warehouse table a dagster-dlt result is about."""
    if result.asset_key is None:
        raise ValueError("dagster-dlt yielded a result without an asset key")
    return result.asset_key.path[-1]


def column_schema(metadata: Mapping[str, Any] | None) -> TableSchema | None:
    """The `dagster/column_schema` of a materialization's metadata, raw or as a metadata value."""
    value = (metadata or {}).get("dagster/column_schema")
    schema = getattr(value, "schema", value)
    return schema if isinstance(schema, TableSchema) else None


def described(table: str, metadata: Mapping[str, Any] | None) -> TableSchema | None:
    """dagster-dlt's column schema of a materialization, with each seed column's description.

    The catalog shows the latest materialization's columns, and dlt's schema has no words.
    """
    schema = column_schema(metadata)
    if schema is None:
        return None
    words = COLUMN_DESCRIPTIONS[table]
    columns = [
        TableColumn(c.name, c.type, words.get(c.name, c.description), c.constraints, c.tags)
        for c in schema.columns
    ]
    return TableSchema(columns, schema.constraints)
