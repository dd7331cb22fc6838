"""The analytics tables as Dagster assets: one dlt run per sync, with dagster-dlt.

dlt extracts every selected list before it loads any, so a fault in one list fails the run with
every table as the last good run left it. The checks run in a step of their own (`checks.py`).
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from analytics_assets import pipeline as sync
from analytics_assets.sources.analytics import analytics, from_config, settings

GROUP_NAME = "analytics"
# One warehouse step at a time across hosts where the instance limits this pool (deploy/).
WAREHOUSE_POOL = "analytics_warehouse"
# A daily sync: WARN after one missed run, FAIL after two. Whole days, because the UI says "2 days"
# for 36 to 59 hours: a 1-day WARN would flash whenever a run finished later than the day before.
FRESHNESS = dg.FreshnessPolicy.time_window(
    warn_window=timedelta(days=2), fail_window=timedelta(days=3)
)
# Lineage of the API: projects belong to organizations, tests belong to projects.
UPSTREAM = {settings.PROJECTS: settings.ORGANIZATIONS, settings.TESTS: settings.PROJECTS}
Materialized = dg.MaterializeResult | dg.AssetMaterialization


def asset_key(table: str) -> dg.AssetKey:
    """`analytics/<table>`: the key mirrors the warehouse's `<dataset>.<table>`."""
    return dg.AssetKey([settings.DATASET_NAME, table])


class AnalyticsTranslator(DagsterDltTranslator):
    """Each table's key, lineage, description, columns and freshness, from the seed's contract."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        """dagster-dlt's spec (kinds `dlt` and the destination), keyed and described our way."""
        spec = super().get_asset_spec(data)
        table = data.resource.name
        words = settings.COLUMN_DESCRIPTIONS[table]
        columns = [dg.TableColumn(c, t, words[c]) for c, t in settings.SEED_TYPES[table].items()]
        return spec.replace_attributes(  # the description: the resource's docstring, dagster-dlt's
            key=asset_key(table),
            deps=[asset_key(UPSTREAM[table])] if table in UPSTREAM else [],
            description=" ".join((spec.description or "").split()) or None,  # on one line
            group_name=GROUP_NAME,
            freshness_policy=FRESHNESS,
            metadata={
                **spec.metadata,
                "dagster/table_name": f"{settings.DATASET_NAME}.{table}",
                "dagster/column_schema": dg.TableSchema(columns),
            },
        )


# Only its resources' names and hints matter: each run builds its source from dlt's config. Every
# argument is given, so the code location loads whatever is (or is not yet) configured.
DECLARED_SOURCE = analytics(
    settings.DEFAULT_BASE_URL, "", settings.PAGE_SIZE, settings.CONCURRENCY,
    settings.DEFAULT_DIALECT, settings.RATE_LIMIT_MAX_WAIT,
)  # fmt: skip


@dlt_assets(
    dlt_source=DECLARED_SOURCE,
    dlt_pipeline=sync.declared_pipeline(),
    name="analytics_dlt",
    dagster_dlt_translator=AnalyticsTranslator(),
    pool=WAREHOUSE_POOL,
)
def analytics_tables(
    context: dg.AssetExecutionContext, dlt: DagsterDltResource
) -> Iterator[Materialized]:
    """One dlt run over the selected tables; then the rows the API no longer serves go."""
    progress = sync.SyncProgress(5.0, context.log, dump_system_stats=False)
    with sync.warehouse_lock(context.log.info, progress) as pipeline, sync.sync_settings():
        try:
            results = list(
                dlt.run(
                    context=context,
                    dlt_source=from_config(analytics),  # a fresh source: dagster#34052, below
                    dlt_pipeline=pipeline,
                    loader_file_format=sync.loader_file_format(pipeline),
                )
            )
        except Exception as error:
            if (clear := sync.user_error(error, pipeline)) is not None:
                raise clear from None  # raised here, so it ends the CLI's output
            raise
        done = list(after_load(context, pipeline, results))
    yield from done  # after the locks are released


# The dagster-dlt workarounds, each to delete when its issue closes:
# - dagster#34052: its metadata mutates a source's schema, so each run builds a fresh source;
# - dagster#33572: `fetch_row_count()` raises for a table the API served no rows for, so the
#   row count comes from `remove_ghosts`;
# - the `dagster/table_name` it reports, `<destination>.<schema>.<table>`, is not queryable, its
#   column schema has no descriptions (the catalog shows the latest one's), and `first_run` is
#   always true (it drops the local state before each run): the translator's spec says better.
def after_load(
    context: dg.AssetExecutionContext, pipeline: Any, results: list[Materialized]
) -> Iterator[Materialized]:
    """Ghost removal; then dagster-dlt's results with its report and the translator's look."""
    reports = sync.remove_ghosts(pipeline, [key.path[-1] for key in context.selected_asset_keys])
    for result in results:
        table = result.asset_key.path[-1] if result.asset_key else ""
        metadata = {**(result.metadata or {}), **reports[table]}
        metadata["dagster/table_name"] = f"{settings.DATASET_NAME}.{table}"
        metadata.pop("first_run", None)
        if isinstance(loaded := metadata.get("dagster/column_schema"), dg.TableSchema):
            words = settings.COLUMN_DESCRIPTIONS[table]
            columns = [
                dg.TableColumn(c.name, c.type, words.get(c.name), c.constraints, c.tags)
                for c in loaded.columns
            ]
            metadata["dagster/column_schema"] = dg.TableSchema(columns, loaded.constraints)
        yield result._replace(metadata=metadata)
