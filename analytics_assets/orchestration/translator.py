"""The single place that decides how a dlt resource of the analytics source looks in Dagster."""

from datetime import timedelta

from dagster import AssetKey, AssetSpec, FreshnessPolicy, TableColumn, TableSchema
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet
from dagster_dlt import DagsterDltTranslator
from dagster_dlt.translator import DltResourceTranslatorData

from analytics_assets.sources.analytics.pipeline import destination_type
from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DESCRIPTIONS,
    ORGANIZATIONS,
    PROJECTS,
    SCHEMA,
    TESTS,
)

GROUP_NAME = "analytics"
# A daily sync: WARN once a table is more than a day old, FAIL after two (with an hour of slack
# for a slow or retried run).
FRESHNESS = FreshnessPolicy.time_window(
    warn_window=timedelta(hours=25), fail_window=timedelta(hours=49)
)
# Lineage of the API: projects belong to organizations, tests belong to projects.
UPSTREAM = {PROJECTS: ORGANIZATIONS, TESTS: PROJECTS}


def asset_key(resource_name: str) -> AssetKey:
    """`analytics/<table>`: the key mirrors the warehouse's `<dataset>.<table>`."""
    return AssetKey([DATASET_NAME, resource_name])


class AnalyticsTranslator(DagsterDltTranslator):
    """Keys `analytics/<table>`, real edges organizations -> projects -> tests, seed metadata.

    The default translator keys `dlt_<source>_<resource>` and hangs every resource off an external
    `<source>_<resource>` node; we want the three tables and their lineage, nothing else.
    """

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        """The spec of one table, built from the seed's contract rather than dlt's defaults."""
        return self.spec_for(data.resource.name)

    def spec_for(self, name: str) -> AssetSpec:
        """The spec of a table by name: the graph needs no dlt source (nor token) to load."""
        upstream = UPSTREAM.get(name)
        return AssetSpec(
            key=asset_key(name),
            deps=[asset_key(upstream)] if upstream else [],
            description=DESCRIPTIONS[name],
            group_name=GROUP_NAME,
            kinds={"dlt", destination_type()},
            freshness_policy=FRESHNESS,
            metadata={
                **TableMetadataSet(
                    table_name=f"{DATASET_NAME}.{name}",
                    column_schema=TableSchema(
                        columns=[
                            TableColumn(name=column, type=hints["data_type"])
                            for column, hints in SCHEMA[name].items()
                        ]
                    ),
                ),
            },
        )
