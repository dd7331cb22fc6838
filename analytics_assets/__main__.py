"""`python -m analytics_assets`: one sync with plain dlt, no Dagster run: handy to debug."""

from analytics_assets.pipeline import (
    SyncProgress,
    loader_file_format,
    remove_ghosts,
    sync_settings,
    user_error,
    warehouse_lock,
)
from analytics_assets.sources.analytics import analytics, from_config

with warehouse_lock(print, SyncProgress()) as pipeline, sync_settings():
    try:
        source = from_config(analytics)
        print(pipeline.run(source, loader_file_format=loader_file_format(pipeline)))  # noqa: T201
    except Exception as error:
        if (clear := user_error(error, pipeline)) is None:
            raise
        raise SystemExit(f"{type(clear).__name__}: {clear}") from None
    for table, report in remove_ghosts(pipeline, list(source.selected_resources)).items():
        print(f"{table}: {report}")  # noqa: T201
