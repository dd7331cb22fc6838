"""Pagination, retries and auth of the source, over real HTTP against the sample API."""

import itertools
from pathlib import Path

import pytest

from analytics_assets.sample_api import Fault, SampleApiServer, build_account
from analytics_assets.sources.analytics import MissingApiToken, analytics_source
from analytics_assets_tests.conftest import query, run_sync

PAGE = 32


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run did not fail"
    error = failures[0].step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def pages_needed(items: int, with_count: bool) -> int:
    """The fewest requests for a list: one more without a total when its last page is full."""
    return max(1, -(-items // PAGE)) if with_count else items // PAGE + 1


@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
def test_pagination_boundaries_cost_no_extra_requests(
    env: SampleApiServer, warehouse: Path, with_count: bool
) -> None:
    env.send_count = with_count
    projects_per_org = {o["id"]: 0 for o in env.account.organizations}
    for project in env.account.projects:
        projects_per_org[project["organization_id"]] += 1
    assert {0, 32, 33} <= set(projects_per_org.values()), "demo account lost its boundaries"

    assert run_sync().success

    for org_id, count in projects_per_org.items():
        path = f"/v3/organizations/{org_id}/projects"
        assert env.request_count(path) == pages_needed(count, with_count), count
    tests = len(env.account.tests)
    assert env.request_count("/loadtests/v2/tests") == pages_needed(tests, with_count)
    loaded = query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.projects")[0]
    assert loaded == (len(env.account.projects),) * 2


@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
@pytest.mark.parametrize("total", [0, 31, 32, 33, 64, 65, 200])
def test_tests_list_of_any_length_loads_every_record_once(
    env: SampleApiServer, warehouse: Path, total: int, with_count: bool
) -> None:
    env.send_count = with_count
    env.account.tests[:] = build_account(project_counts=(210,), tests_per_project=(1,)).tests[
        :total
    ]

    assert run_sync("tests").success

    # dlt creates no table for a list that never had a row
    exists = query(warehouse, "SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = 'tests'")
    ids = (
        [row[0] for row in query(warehouse, "SELECT id FROM analytics.tests ORDER BY id")]
        if exists[0][0]
        else []
    )
    assert ids == sorted(t["id"] for t in env.account.tests)
    assert env.request_count("/loadtests/v2/tests") == pages_needed(total, with_count)


def test_requests_in_flight_never_exceed_the_concurrency(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.latency = 0.02
    env.account = build_account(project_counts=(40, 40, 40, 40, 40, 40), tests_per_project=(3,))

    assert run_sync().success
    assert env.max_in_flight == 4, "default concurrency is 4, and it is used"

    env.reset_requests()
    monkeypatch.setenv("SOURCES__ANALYTICS__CONCURRENCY", "2")
    assert run_sync().success
    assert env.max_in_flight == 2


def test_429_is_honoured_under_concurrency(env: SampleApiServer, warehouse: Path) -> None:
    env.latency = 0.01
    env.add_fault(Fault("/loadtests/v2/tests", status=429, times=3, retry_after=0.1))

    assert run_sync("tests").success

    ids = query(warehouse, "SELECT COUNT(DISTINCT id), COUNT(*) FROM analytics.tests")[0]
    assert ids == (len(env.account.tests),) * 2
    assert (
        env.request_count("/loadtests/v2/tests") == pages_needed(len(env.account.tests), True) + 3
    )


def test_page_size_is_sent_and_configurable(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__PAGE_SIZE", "50")

    assert run_sync("tests").success

    sizes = {r.query.get("page_size") for r in env.requests if r.path == "/loadtests/v2/tests"}
    assert sizes == {"50"}
    pages = [r.query.get("page") for r in env.requests if r.path == "/loadtests/v2/tests"]
    assert pages[0] == "1"


def test_429_with_retry_after_is_retried(env: SampleApiServer, warehouse: Path) -> None:
    env.add_fault(Fault("/v3/organizations", status=429, times=2, retry_after=0.1))

    assert run_sync("organizations").success

    assert env.request_count("/v3/organizations") == 3
    assert query(warehouse, "SELECT COUNT(*) FROM analytics.organizations")[0][0] == len(
        env.account.organizations
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_burst_within_the_budget_succeeds(env: SampleApiServer, status: int) -> None:
    env.add_fault(Fault("/loadtests/v2/tests", status=status, times=3))

    assert run_sync("tests").success

    assert env.request_count("/loadtests/v2/tests") == 3 + pages_needed(
        len(env.account.tests), True
    )


def test_5xx_beyond_the_budget_fails_after_exactly_four_attempts(env: SampleApiServer) -> None:
    env.add_fault(Fault("/v3/organizations", status=503, times=10))

    result = run_sync("organizations", raise_on_error=False)

    assert not result.success
    assert env.request_count("/v3/organizations") == 4
    assert "503" in failure_message(result)


def test_max_attempts_is_configurable(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    env.add_fault(Fault("/v3/organizations", status=500, times=10))

    assert not run_sync("organizations", raise_on_error=False).success
    assert env.request_count("/v3/organizations") == 2


@pytest.mark.parametrize("status", [400, 404, 501])
def test_other_statuses_are_not_retried(env: SampleApiServer, status: int) -> None:
    env.add_fault(Fault("/v3/organizations", status=status, times=10))

    result = run_sync("organizations", raise_on_error=False)

    assert not result.success
    assert env.request_count("/v3/organizations") == 1
    message = failure_message(result)
    assert str(status) in message and f"{env.url}/v3/organizations" in message


def test_wrong_token_fails_fast_naming_status_and_url_but_not_the_token(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", "wrong-token-7d1f")

    result = run_sync(raise_on_error=False)

    assert not result.success
    paths = [r.path for r in env.requests]
    assert len(paths) == len(set(paths)), "a 401 was retried"
    message = failure_message(result)
    assert "401 Client Error" in message and f"for url: {env.url}/" in message
    assert "wrong-token-7d1f" not in message


def test_missing_token_fails_before_any_request_naming_the_setting(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCES__ANALYTICS__API_TOKEN")

    with pytest.raises(MissingApiToken, match="SOURCES__ANALYTICS__API_TOKEN"):
        analytics_source()
    result = run_sync(raise_on_error=False)

    assert not result.success
    assert "SOURCES__ANALYTICS__API_TOKEN" in failure_message(result)
    assert env.request_count() == 0


def test_plain_api_token_variable_works(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCES__ANALYTICS__API_TOKEN")
    monkeypatch.setenv("API_TOKEN", env.token)

    assert run_sync("organizations").success


def test_the_seed_retry_policy_is_the_default(
    api: SampleApiServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No overrides: 3 retries (4 attempts), waits of 2 s, 4 s and 8 s (factor 2)."""
    monkeypatch.setenv("SOURCES__ANALYTICS__BASE_URL", api.url)
    monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", api.token)
    api.add_fault(Fault("/v3/organizations", status=503, times=10))

    assert not run_sync("organizations", raise_on_error=False).success

    times = [r.received_at for r in api.requests if r.path == "/v3/organizations"]
    assert len(times) == 4
    waits = [later - earlier for earlier, later in itertools.pairwise(times)]
    for wait, expected in zip(waits, (2, 4, 8), strict=True):
        assert expected - 0.05 <= wait < expected + 5, waits
