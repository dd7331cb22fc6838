"""Load the analytics API into the configured warehouse with plain dlt: handy for debugging."""

from analytics_assets.sources.analytics import analytics, from_config
from analytics_assets.sources.analytics.pipeline import (
    SyncProgress,
    loader_file_format,
    remove_ghosts,
    sync_settings,
    warehouse_lock,
)

if __name__ == "__main__":
    with warehouse_lock(print, SyncProgress()) as pipeline, sync_settings():
        source = from_config(analytics)
        print(pipeline.run(source, loader_file_format=loader_file_format(pipeline)))  # noqa: T201
        for table, report in remove_ghosts(pipeline, list(source.selected_resources)).items():
            print(f"{table}: {report}")  # noqa: T201
