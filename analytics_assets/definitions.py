"""The code location: assembles the analytics assets, jobs, schedule, sensors and resources."""

from dagster import Definitions

from analytics_assets.defs.assets import analytics_assets
from analytics_assets.defs.automation import (
    analytics_change_sensor,
    analytics_checks,
    analytics_daily,
    analytics_failure_sensor,
    analytics_sync,
)
from analytics_assets.defs.resources import AnalyticsDltResource

defs = Definitions(
    assets=analytics_assets,
    jobs=[analytics_sync, analytics_checks],
    schedules=[analytics_daily],
    sensors=[analytics_change_sensor, analytics_failure_sensor],
    resources={"dlt": AnalyticsDltResource()},
)
