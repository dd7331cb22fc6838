"""The code location: assembles the analytics assets, jobs, schedule, sensors and resources."""

from dagster import Definitions, in_process_executor

from analytics_assets.orchestration.assets import analytics_assets
from analytics_assets.orchestration.automation import (
    analytics_change_sensor,
    analytics_checks,
    analytics_daily,
    analytics_failure_sensor,
    analytics_sync,
)
from analytics_assets.orchestration.resources import AnalyticsDltResource

defs = Definitions(
    assets=analytics_assets,
    jobs=[analytics_sync, analytics_checks],
    schedules=[analytics_daily],
    sensors=[analytics_change_sensor, analytics_failure_sensor],
    resources={"dlt": AnalyticsDltResource()},
    # The two load steps run one after the other (tests wait on the blocking check), so a
    # process per step would only add ~2 s of imports each. Swap in multiprocess or k8s freely.
    executor=in_process_executor,
)
