"""The real service's dialect, one setting away: tests under `k6-tests`, per project, Token auth."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets_tests.conftest import point_sync_at, query, run_sync
from analytics_assets_tests.test_http import failure_message


@pytest.fixture
def k6_api(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleApiServer]:
    """The sample API speaking the legacy service's dialect."""
    with SampleApiServer(build_account(), tests_key="k6-tests") as server:
        yield point_sync_at(server, monkeypatch)


def test_the_k6_dialect_loads_every_test_listed_per_project(
    k6_api: SampleApiServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__DIALECT", "k6")

    assert run_sync().success

    loaded = query(warehouse, "SELECT id, project_id FROM analytics.tests ORDER BY id")
    assert loaded == [(t["id"], t["project_id"]) for t in k6_api.account.tests]
    asked = [r for r in k6_api.requests if r.path == "/loadtests/v2/tests"]
    assert {r.query["project_id"] for r in asked} == {str(p["id"]) for p in k6_api.account.projects}
    assert {r.headers["authorization"] for r in k6_api.requests} == {"Token [redacted]"}


def test_the_seed_dialect_against_the_k6_service_names_the_setting(
    k6_api: SampleApiServer,
) -> None:
    result = run_sync("tests", raise_on_error=False)

    message = failure_message(result)
    assert "without a `tests` list (found ['k6-tests'])" in message
    assert "SOURCES__ANALYTICS__DIALECT=k6" in message


def test_an_unknown_dialect_names_the_choices(
    k6_api: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__DIALECT", "v6")

    result = run_sync(raise_on_error=False)

    assert "SOURCES__ANALYTICS__DIALECT is 'v6'; choose seed or k6" in failure_message(result)
    assert k6_api.request_count() == 0
