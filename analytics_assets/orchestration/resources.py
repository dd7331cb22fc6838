"""The dagster-dlt resource, with two upstream bugs worked around at their source."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, OpExecutionContext
from dagster._core.definitions.metadata.table import TableSchema
from dagster_dlt import DagsterDltResource
from dlt.common.pipeline import LoadInfo
from dlt.common.schema import Schema
from dlt.extract.resource import DltResource
from dlt.pipeline.pipeline import Pipeline


class AnalyticsDltResource(DagsterDltResource):
    """`DagsterDltResource` that survives repeated and empty runs in one process."""

    def _extract_table_schema_metadata(self, table_name: str, schema: Schema) -> TableSchema:
        # dagster-dlt pops keys off the live schema's columns (dagster#34052): hand it a copy.
        return super()._extract_table_schema_metadata(table_name, schema.clone())

    def extract_resource_metadata(
        self,
        context: OpExecutionContext | AssetExecutionContext,
        resource: DltResource,
        load_info: LoadInfo,
        dlt_pipeline: Pipeline,
    ) -> Mapping[str, Any]:
        """Skip dlt's row counts when nothing was normalized (dagster#33572 raises there)."""
        trace = dlt_pipeline.last_trace
        if trace is None or trace.last_normalize_info is None:
            return {"rows_loaded": 0, "dataset_name": dlt_pipeline.dataset_name}
        return super().extract_resource_metadata(context, resource, load_info, dlt_pipeline)
