"""The code location: assembles the analytics assets, checks, jobs, schedule, sensors, resource."""

from dagster import Definitions, in_process_executor
from dagster_dlt import DagsterDltResource

from analytics_assets.orchestration.assets import analytics_tables
from analytics_assets.orchestration.automation import (
    analytics_change_sensor,
    analytics_checks,
    analytics_daily,
    analytics_failure_sensor,
    analytics_sync,
)
from analytics_assets.orchestration.checks import ASSET_CHECKS

defs = Definitions(
    assets=[analytics_tables],
    asset_checks=ASSET_CHECKS,
    jobs=[analytics_sync, analytics_checks],
    schedules=[analytics_daily],
    sensors=[analytics_change_sensor, analytics_failure_sensor],
    resources={"dlt": DagsterDltResource()},
    # Two steps, the sync and the checks: a process per step would add ~1.5 s of imports to
    # each. The multiprocess executor (or a pod per step) works the same; swap it in freely.
    executor=in_process_executor,
)
