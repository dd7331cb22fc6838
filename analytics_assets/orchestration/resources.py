"""The `dlt` resource of the code location: dagster-dlt's, loaded when a step first uses it."""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, ConfigurableResource

if TYPE_CHECKING:
    from analytics_assets.orchestration.sync import PatchedDagsterDltResource


class AnalyticsDltResource(ConfigurableResource):
    """`DagsterDltResource` (with two upstream bugs worked around), behind a lazy import.

    dagster_dlt imports dlt, ~0.8 s that every load of the definitions would pay otherwise
    (`dagster dev`, each code-server start, each run's launch); a step pays it once.
    """

    def dagster_dlt(self) -> "PatchedDagsterDltResource":
        """The dagster-dlt resource that does the work."""
        from analytics_assets.orchestration.sync import PatchedDagsterDltResource

        return PatchedDagsterDltResource()

    def extract_resource_metadata(
        self, context: AssetExecutionContext, resource: Any, load_info: Any, dlt_pipeline: Any
    ) -> Mapping[str, Any]:
        """dagster-dlt's metadata of one resource's load: rows, jobs, column schema, table."""
        return self.dagster_dlt().extract_resource_metadata(
            context, resource, load_info, dlt_pipeline
        )
