"""The code location with a process per step, as a pod per step (k8s_job_executor) would run it."""

from dagster import Definitions, multiprocess_executor

import analytics_assets

defs = Definitions(
    assets=analytics_assets.defs.assets,
    asset_checks=analytics_assets.defs.asset_checks,
    jobs=analytics_assets.defs.jobs,
    resources=analytics_assets.defs.resources,
    executor=multiprocess_executor,
)
