"""Load the analytics API into the configured warehouse with plain dlt: handy for debugging."""

from analytics_assets.sources.analytics import analytics
from analytics_assets.sources.analytics.pipeline import (
    loader_file_format,
    table_reports,
    warehouse_lock,
)


def main() -> None:
    """Run one full sync, as the Dagster assets do, and print dlt's load summary."""
    with warehouse_lock(print, progress="log") as pipeline:
        source = analytics()
        file_format = loader_file_format(pipeline)
        if file_format is None:
            load_info = pipeline.run(source)
        else:
            load_info = pipeline.run(source, loader_file_format=file_format)
        reports = table_reports(pipeline, list(source.selected_resources))
    print(load_info)  # noqa: T201
    for table, report in reports.items():
        print(f"{table}: {report}")  # noqa: T201


if __name__ == "__main__":
    main()
