"""One instance, two files: the Helm values hold the limits of deploy/dagster.yaml, in chart terms.

The chart (dagster-io/dagster, `helm/dagster`, 1.13) turns `concurrency` and
`dagsterDaemon.runMonitoring` into the instance's `concurrency` and `run_monitoring`, camelCase to
snake_case. Its schema rejects unknown keys under `concurrency`, but takes any key under
`runMonitoring`, and the template writes only the keys it names: a misspelt one is dropped without
a word. So the keys the chart reads are listed here, from its template and schema.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from analytics_assets_tests.conftest import REPO

DEPLOY = REPO / "deploy"
VALUES_FILE = DEPLOY / "k8s" / "values.yaml"
# What the chart reads (templates/configmap-instance.yaml, templates/helpers/instance/
# _concurrency.tpl, schema/schema/charts/dagster/subschema/concurrency.py).
CHART_CONCURRENCY = {
    "pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
}
CHART_RUN_MONITORING = {
    "enabled",
    "startTimeoutSeconds",
    "cancelTimeoutSeconds",
    "maxRuntimeSeconds",
    "maxResumeRunAttempts",
    "pollIntervalSeconds",
    "freeSlotsAfterRunEndSeconds",
}
INSTALL = re.compile(r"helm upgrade --install \S+ dagster/dagster\b.*")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.title() for word in rest)


def in_chart_terms(section: dict[str, Any]) -> dict[str, Any]:
    return {camel(key): value for key, value in section.items()}


def test_the_chart_writes_its_concurrency_block() -> None:
    # off by default: the chart then leaves `concurrency` out of the instance, pool limit and all
    assert load(VALUES_FILE)["concurrency"]["enabled"] is True


def test_pools_and_runs_have_the_limits_of_the_instance_file() -> None:
    instance = load(DEPLOY / "dagster.yaml")["concurrency"]
    chart = load(VALUES_FILE)["concurrency"]

    assert set(chart) == {"enabled", *instance}
    for section in ("pools", "runs"):
        assert chart[section] == in_chart_terms(instance[section]), section
    assert chart["pools"] == {"defaultLimit": 1, "granularity": "op"}


def test_run_monitoring_is_the_same() -> None:
    instance = load(DEPLOY / "dagster.yaml")["run_monitoring"]
    chart = load(VALUES_FILE)["dagsterDaemon"]["runMonitoring"]

    assert chart == in_chart_terms(instance)
    assert chart["enabled"] is True and chart["freeSlotsAfterRunEndSeconds"] > 0


def test_every_key_is_one_the_chart_reads() -> None:
    values = load(VALUES_FILE)
    concurrency = values["concurrency"]

    for section, keys in CHART_CONCURRENCY.items():
        assert set(concurrency.get(section, {})) <= keys, section
    assert concurrency["pools"]["granularity"] in {"op", "run"}
    assert set(values["dagsterDaemon"]["runMonitoring"]) <= CHART_RUN_MONITORING


def test_the_run_limit_is_set_in_one_place() -> None:
    # the chart refuses to render when the run queue's own limit is set as well
    daemon = load(VALUES_FILE)["dagsterDaemon"]
    queued = daemon.get("runCoordinator", {}).get("config", {}).get("queuedRunCoordinator", {})

    assert queued.get("maxConcurrentRuns") is None
    assert not queued.get("tagConcurrencyLimits")


def test_the_chart_is_pinned_to_the_dagster_version_of_the_lock() -> None:
    (dagster,) = re.findall(r"^dagster==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)

    for doc in (VALUES_FILE, DEPLOY / "README.md"):
        commands = INSTALL.findall(doc.read_text())
        assert commands, f"no install command in {doc}"
        for command in commands:
            assert f"--version {dagster} " in f"{command} ", f"{doc}: {command}"


def test_the_readme_names_the_location_as_the_chart_does() -> None:
    deployments = load(VALUES_FILE)["dagster-user-deployments"]["deployments"]
    readme = (DEPLOY / "README.md").read_text()

    for deployment in deployments:
        assert f"`{deployment['name']}`" in readme
