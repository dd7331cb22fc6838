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

from analytics_assets.sources.analytics import analytics, from_config
from analytics_assets.sources.analytics.pipeline import (
    declared_pipeline,
    loader_file_format,
    remove_ghosts,
    sync_settings,
    user_error,
    warehouse_lock,
)
from analytics_assets.sources.analytics.settings import (
    COLUMN_DESCRIPTIONS,
    CONCURRENCY,
    DATASET_NAME,
    DEFAULT_BASE_URL,
    DEFAULT_DIALECT,
    DESCRIPTIONS,
    ORGANIZATIONS,
    PAGE_SIZE,
    PROJECTS,
    RATE_LIMIT_MAX_WAIT,
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


# Only its resources' names and hints matter: each run builds its source from dlt's config. Every
# argument is given, so the code location loads whatever is (or is not yet) configured.
DECLARED_SOURCE = analytics(
    base_url=DEFAULT_BASE_URL,
    api_token="",
    page_size=PAGE_SIZE,
    concurrency=CONCURRENCY,
    dialect=DEFAULT_DIALECT,
    rate_limit_max_wait=RATE_LIMIT_MAX_WAIT,
)


@dlt_assets(
    dlt_source=DECLARED_SOURCE,
    dlt_pipeline=declared_pipeline(),
    name="analytics_dlt",
    dagster_dlt_translator=AnalyticsTranslator(),
    pool=WAREHOUSE_POOL,
)
def analytics_tables(
    context: AssetExecutionContext, dlt: DagsterDltResource
) -> Iterator[MaterializeResult | AssetMaterialization]:
    """One dlt run over the selected tables; then the rows the API no longer serves go."""
    progress = LogCollector(PROGRESS_LOG_PERIOD_S, context.log, dump_system_stats=False)
    with warehouse_lock(context.log.info, progress) as pipeline, sync_settings():
        try:
            results = list(
                dlt.run(
                    context=context,
                    dlt_source=from_config(analytics),
                    dlt_pipeline=pipeline,
                    loader_file_format=loader_file_format(pipeline),
                )
            )
        except Exception as error:
            if (clear := user_error(error, pipeline)) is not None:
                raise clear from None
            raise
        reports = remove_ghosts(pipeline, [table_of(result) for result in results])
    for result in results:
        yield with_report(result, reports[table_of(result)])


# dagster-dlt workarounds, each to delete when its issue closes:
# - dagster#34052: its metadata mutates a source's schema, so each run builds a fresh source;
# - dagster#33572: `fetch_row_count()` raises for a table the API served no rows for, so the
#   row count comes from `remove_ghosts`;
# - the `dagster/table_name` it reports is `<destination>.<schema>.<table>`, not queryable;
# - the column schema it reports has no descriptions, and the catalog shows the latest one's.
def with_report(
    result: MaterializeResult | AssetMaterialization, report: Mapping[str, Any]
) -> MaterializeResult | AssetMaterialization:
    """A dagster-dlt result with the sync's report, a queryable table name, described columns."""
    table = table_of(result)
    metadata = {
        **{k: v for k, v in (result.metadata or {}).items() if k != "first_run"},
        **report,
        "dagster/table_name": f"{DATASET_NAME}.{table}",
    }
    columns = described(table, result.metadata)
    if columns is not None:
        metadata["dagster/column_schema"] = columns
    return result._replace(metadata=metadata)


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
    """dagster-dlt's column schema of a materialization, with each seed column's description."""
    schema = column_schema(metadata)
    if schema is None:
        return None
    words = COLUMN_DESCRIPTIONS[table]
    columns = [
        TableColumn(c.name, c.type, words.get(c.name, c.description), c.constraints, c.tags)
        for c in schema.columns
    ]
    return TableSchema(columns, schema.constraints)
