"""How each table of the analytics source looks in Dagster: key, lineage, group, kinds, freshness.

Built without dlt or dagster-dlt, so loading the definitions stays quick (`dagster dev`, every
code-server start, every run's launch): dlt is only imported once a step runs.
"""

import os
import tomllib
from datetime import timedelta
from pathlib import Path

from dagster import AssetKey, AssetSpec, FreshnessPolicy, TableColumn, TableSchema
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet

from analytics_assets.sources.analytics.settings import (
    DATASET_NAME,
    DEFAULT_DESTINATION,
    DESCRIPTIONS,
    ORGANIZATIONS,
    PROJECTS,
    RESOURCE_NAMES,
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


def spec_for(name: str) -> AssetSpec:
    """The spec of a table by name, from the seed's contract rather than dlt's defaults."""
    upstream = UPSTREAM.get(name)
    return AssetSpec(
        key=asset_key(name),
        deps=[asset_key(upstream)] if upstream else [],
        description=DESCRIPTIONS[name],
        group_name=GROUP_NAME,
        kinds={"dlt", destination_kind()},
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


def destination_kind() -> str:
    """Dlt's `destination_type` setting, looked up where dlt's standard providers keep it.

    Read without dlt, whose import alone costs ~0.5 s of every start-up: the environment, then
    `secrets.toml` and `config.toml` in the project's and the global `.dlt` folder. It only
    labels the assets; the run itself resolves the destination with dlt.
    """
    if os.environ.get("DESTINATION_TYPE"):
        return os.environ["DESTINATION_TYPE"]
    project = Path(os.environ.get("DLT_PROJECT_DIR") or Path.cwd()) / ".dlt"
    global_dir = Path(os.environ.get("DLT_DATA_DIR") or Path.home() / ".dlt")
    for folder in (project, global_dir):
        for name in ("secrets.toml", "config.toml"):
            path = folder / name
            if path.is_file():
                value = tomllib.loads(path.read_text(encoding="utf-8")).get("destination_type")
                if value:
                    return str(value)
    return DEFAULT_DESTINATION


SPECS = {name: spec_for(name) for name in RESOURCE_NAMES}
