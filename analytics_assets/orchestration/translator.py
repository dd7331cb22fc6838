"""dagster-dlt's translator for the analytics source: the specs of `specs.py`, nothing else."""

from dagster import AssetSpec
from dagster_dlt import DagsterDltTranslator
from dagster_dlt.translator import DltResourceTranslatorData

from analytics_assets.orchestration.specs import spec_for


class AnalyticsTranslator(DagsterDltTranslator):
    """Keys `analytics/<table>`, real edges organizations -> projects -> tests, seed metadata.

    The default translator keys `dlt_<source>_<resource>` and hangs every resource off an external
    `<source>_<resource>` node; we want the three tables and their lineage, nothing else.
    """

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        """The spec of one table, built from the seed's contract rather than dlt's defaults."""
        return spec_for(data.resource.name)
