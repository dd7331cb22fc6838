"""The code location: assembles the analytics assets, resources and jobs into `defs`."""

from dagster import AssetSelection, Definitions, define_asset_job

from analytics_assets.defs.assets import analytics_dlt_assets
from analytics_assets.defs.resources import AnalyticsDltResource
from analytics_assets.defs.translator import GROUP_NAME

analytics_sync = define_asset_job(
    "analytics_sync",
    selection=AssetSelection.groups(GROUP_NAME),
    description="Sync organizations, projects and tests from the analytics API.",
)

defs = Definitions(
    assets=[analytics_dlt_assets],
    jobs=[analytics_sync],
    resources={"dlt": AnalyticsDltResource()},
)
