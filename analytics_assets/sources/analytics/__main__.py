"""Load the analytics API into the configured warehouse with plain dlt: handy for debugging."""

from analytics_assets.sources.analytics import analytics_source
from analytics_assets.sources.analytics.pipeline import (
    analytics_pipeline,
    exclusive_sync,
    loader_file_format,
)


def main() -> None:
    """Run one full sync and print dlt's load summary."""
    with exclusive_sync(print):
        pipeline = analytics_pipeline(progress="log")
        load_info = pipeline.run(
            analytics_source(), loader_file_format=loader_file_format(pipeline)
        )
    print(load_info)  # noqa: T201


if __name__ == "__main__":
    main()
