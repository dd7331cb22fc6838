"""The `dlt` resource: dagster-dlt's `DagsterDltResource`, with the upstream bugs a sync meets."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, OpExecutionContext
from dagster_dlt import DagsterDltResource
from dlt.common.pipeline import LoadInfo
from dlt.extract.resource import DltResource
from dlt.pipeline.pipeline import Pipeline


class AnalyticsDltResource(DagsterDltResource):
    """`DagsterDltResource` that also reports a table the API served no rows for."""

    def extract_resource_metadata(
        self,
        context: OpExecutionContext | AssetExecutionContext,
        resource: DltResource,
        load_info: LoadInfo,
        dlt_pipeline: Pipeline,
    ) -> Mapping[str, Any]:
        """Dlt's load metadata of one table, without the keys that mislead in this project."""
        trace = dlt_pipeline.last_trace
        if trace is None or trace.last_normalize_info is None:
            # dagster#33572: with nothing normalized, the base class raises reading row counts
            return {"rows_loaded": 0, "dataset_name": dlt_pipeline.dataset_name}
        metadata = dict(
            super().extract_resource_metadata(context, resource, load_info, dlt_pipeline)
        )
        # `first_run` is always true: `run()` drops the local state before every run
        metadata.pop("first_run", None)
        return metadata
