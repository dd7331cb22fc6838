"""The three analytics tables as Dagster assets, each step one dlt load followed by its checks.

Two steps, not one: `projects.organization_id_references_organizations` is blocking, and a
blocking check can only stop assets of *later* steps. So organizations and projects load
together, and tests load in a second step that runs only when that check passed. What a step
does at run time is in `sync.py`.
"""

from collections.abc import Iterator, Sequence

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    multi_asset,
)

from analytics_assets.orchestration.checks import CHECKS
from analytics_assets.orchestration.resources import AnalyticsDltResource
from analytics_assets.orchestration.specs import SPECS
from analytics_assets.sources.analytics.settings import ORGANIZATIONS, PROJECTS, TESTS

# One dlt load at a time per warehouse: DuckDB takes a single writer (dagster#26848).
WAREHOUSE_POOL = "analytics_warehouse"


def dlt_step(name: str, tables: Sequence[str]) -> AssetsDefinition:
    """A multi-asset over some tables and their checks; any subset, checks alone included."""

    @multi_asset(
        name=name,
        specs=[SPECS[t] for t in tables],
        check_specs=[c.spec for t in tables for c in CHECKS[t]],
        can_subset=True,
        pool=WAREHOUSE_POOL,
    )
    def _step(
        context: AssetExecutionContext, dlt: AnalyticsDltResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        # imported here: a step needs dlt and dagster-dlt (~0.8 s), loading the definitions not
        from analytics_assets.orchestration.sync import run_step

        yield from run_step(context, dlt, tables)

    return _step


organizations_and_projects = dlt_step("analytics_organizations_projects", (ORGANIZATIONS, PROJECTS))
tests = dlt_step("analytics_tests", (TESTS,))
analytics_assets = [organizations_and_projects, tests]
