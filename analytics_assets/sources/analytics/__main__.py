"""Load the analytics API into the configured warehouse with plain dlt: handy for debugging."""

from analytics_assets.sources.analytics import analytics, from_config
from analytics_assets.sources.analytics import pipeline as sync

if __name__ == "__main__":
    with sync.warehouse_lock(print, "log") as pipeline, sync.sync_settings():
        source = from_config(analytics)
        try:
            print(pipeline.run(source, loader_file_format=sync.loader_file_format(pipeline)))  # noqa: T201
        except Exception as error:
            if (clear := sync.user_error(error, pipeline)) is None:
                raise
            raise SystemExit(f"{type(clear).__name__}: {clear}") from None
        for table, report in sync.remove_ghosts(pipeline, list(source.selected_resources)).items():
            print(f"{table}: {report}")  # noqa: T201
