"""Pagination, retries and auth of the source, over real HTTP against the sample API."""

import itertools
import json
import logging
import time
from pathlib import Path

import pytest

from analytics_assets.sample_api import Fault, SampleApiServer, build_account
from analytics_assets.sources.analytics import SettingError, configured_client, from_config
from analytics_assets_tests.conftest import query, run_sync

PAGE = 32
CONCURRENCY = 4  # the default


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


def assert_within_budget(requests: int, items: int, with_count: bool) -> None:
    """Exactly the fewest pages with a total; without one, up to a window of pages beyond."""
    fewest = pages_needed(items, with_count)
    if with_count:
        assert requests == fewest, (items, requests)
    else:
        assert fewest <= requests <= fewest + CONCURRENCY - 1, (items, requests)


@pytest.mark.parametrize("past_end", ["empty", "404"])
@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
def test_projects_lists_load_exactly_within_the_request_budget(
    env: SampleApiServer, warehouse: Path, with_count: bool, past_end: str
) -> None:
    env.send_count, env.past_end = with_count, past_end
    projects_per_org = {o["id"]: 0 for o in env.account.organizations}
    for project in env.account.projects:
        projects_per_org[project["organization_id"]] += 1
    assert {0, 32, 33} <= set(projects_per_org.values()), "demo account lost its boundaries"

    assert run_sync().success

    for org_id, count in projects_per_org.items():
        assert_within_budget(
            env.request_count(f"/v3/organizations/{org_id}/projects"), count, with_count
        )
    loaded = query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.projects")[0]
    assert loaded == (len(env.account.projects),) * 2


@pytest.mark.parametrize("past_end", ["empty", "404"])
@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
@pytest.mark.parametrize("total", [0, 1, 31, 32, 33, 64, 65, 200])
def test_a_tests_list_of_any_length_loads_exactly_within_the_request_budget(
    env: SampleApiServer, warehouse: Path, total: int, with_count: bool, past_end: str
) -> None:
    env.send_count, env.past_end = with_count, past_end
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
    assert_within_budget(env.request_count("/loadtests/v2/tests"), total, with_count)


def test_pages_without_a_total_are_fetched_several_at_a_time(env: SampleApiServer) -> None:
    env.latency = 0.05
    env.account.tests[:] = build_account(project_counts=(400,), tests_per_project=(1,)).tests

    assert run_sync("tests").success

    assert env.max_in_flight == CONCURRENCY


def test_a_404_on_the_first_page_fails_naming_the_url(env: SampleApiServer) -> None:
    env.past_end = "404"
    env.add_fault(Fault("/loadtests/v2/tests", status=404, times=1))

    result = run_sync("tests", raise_on_error=False)

    assert "404 Client Error" in failure_message(result)
    assert f"{env.url}/loadtests/v2/tests" in failure_message(result)


def test_a_page_asked_for_past_the_end_is_no_fault_whatever_it_answers(
    env: SampleApiServer, warehouse: Path
) -> None:
    env.account.tests[:] = build_account(project_counts=(40,), tests_per_project=(1,)).tests
    # page 2 is short (8 of 40); pages 3 to 5 are asked for ahead of it and are discarded
    tests, empty = "/loadtests/v2/tests", json.dumps({"tests": []})
    env.add_fault(Fault(tests, status=503, times=100, query={"page": "3"}))
    env.add_fault(Fault(tests, status=404, times=100, query={"page": "4"}))
    env.add_fault(Fault(tests, status=200, times=100, query={"page": "5"}, body=empty))

    assert run_sync("tests").success

    ids = query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.tests")[0]
    assert ids == (40, 40)
    asked = [r.query["page"] for r in env.requests if r.path == tests]
    assert "3" in asked, "nothing was asked for ahead: the test proves nothing"


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
    env.send_count = True  # a total makes the page count exact
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
    env.send_count = True  # a total makes the page count exact
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

    with pytest.raises(SettingError, match="SOURCES__ANALYTICS__API_TOKEN"):
        from_config(configured_client)
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


def test_two_429s_and_two_5xx_on_one_url_still_succeed(env: SampleApiServer) -> None:
    # a 429 is the server pacing us: it does not use up the 4 attempts the 5xx may take
    env.add_fault(Fault("/v3/organizations", status=429, times=2, retry_after=0.05))
    env.add_fault(Fault("/v3/organizations", status=503, times=2))

    assert run_sync("organizations").success

    assert env.request_count("/v3/organizations") == 5


def test_five_5xx_fail_after_four_attempts(env: SampleApiServer) -> None:
    env.add_fault(Fault("/v3/organizations", status=502, times=5))

    assert not run_sync("organizations", raise_on_error=False).success
    assert env.request_count("/v3/organizations") == 4


def test_a_retry_after_that_never_ends_hits_the_wait_limit(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__RATE_LIMIT_MAX_WAIT", "0.5")
    env.add_fault(Fault("/v3/organizations", status=429, times=1000, retry_after=0.1))

    started = time.monotonic()
    result = run_sync("organizations", raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert "answered 429 (rate limited)" in message and f"{env.url}/v3/organizations" in message
    assert "SOURCES__ANALYTICS__RATE_LIMIT_MAX_WAIT=0.5 s" in message
    assert time.monotonic() - started < 30
    assert 5 <= env.request_count("/v3/organizations") <= 7


def test_concurrency_above_what_the_api_admits_paces_down_and_stays_exact(
    env: SampleApiServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__CONCURRENCY", "8")
    env.account = build_account(project_counts=(40,) * 8, tests_per_project=(3,))
    env.latency, env.concurrency_cap, env.cap_retry_after = 0.02, 3, 0.05

    assert run_sync().success

    for table in ("organizations", "projects", "tests"):
        loaded = query(warehouse, f"SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.{table}")
        assert loaded[0] == (len(getattr(env.account, table)),) * 2, table
    assert env.max_in_flight <= 8
    served = env.request_count() - env.throttled
    assert env.throttled > 0, "the cap was never reached: the test proves nothing"
    # without pacing, 5 of every 8 requests would meet the cap
    assert env.throttled < served / 4, (env.throttled, served)


def test_a_page_past_the_end_that_stalls_holds_up_nothing(env: SampleApiServer) -> None:
    env.account.tests[:] = build_account(project_counts=(40,), tests_per_project=(1,)).tests
    env.add_fault(
        Fault(
            "/loadtests/v2/tests", 200, times=1, kind="stall", stall_seconds=20, query={"page": "3"}
        )
    )

    started = time.monotonic()
    assert run_sync("tests").success

    assert time.monotonic() - started < 10, "the sync waited for a page it did not need"


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (json.dumps({"detail": "Invalid page."}), "ends the list"),
        (json.dumps({"error": {"message": "gone", "code": "not_found"}}), "fails"),
    ],
    ids=["drf-invalid-page", "other-404"],
)
def test_a_404_on_a_page_a_total_promises(
    env: SampleApiServer, warehouse: Path, body: str, outcome: str
) -> None:
    # 65 tests and a total: page 3 should exist; DRF's answer means the list shrank meanwhile
    env.send_count = True
    env.account.tests[:] = build_account(project_counts=(65,), tests_per_project=(1,)).tests
    env.add_fault(Fault("/loadtests/v2/tests", 404, times=10, body=body, query={"page": "3"}))

    result = run_sync("tests", raise_on_error=False)

    if outcome == "fails":
        assert "404 Client Error" in failure_message(result)
        assert f"{env.url}/loadtests/v2/tests" in failure_message(result)
    else:  # the list shrank while it was paged: it ends with page 2
        assert result.success
        assert query(warehouse, "SELECT COUNT(*) FROM analytics.tests") == [(64,)]


def test_each_retry_says_which_attempt_failed_and_when_the_next_goes(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_RETRY_DELAY", "2")  # a Retry-After of 1.5 s is kept
    env.add_fault(Fault("/v3/organizations", status=503, times=2))
    env.add_fault(Fault("/loadtests/v2/tests", status=429, times=1, retry_after=1.5))
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("dlt").addHandler(handler)  # dlt's own logger: where a user reads it
    try:
        assert run_sync("organizations", "tests").success
    finally:
        logging.getLogger("dlt").removeHandler(handler)

    logged = "\n".join(lines)
    url = f"{env.url}/v3/organizations"
    for attempt, wait in ((1, 0.01), (2, 0.02)):
        assert (
            f"GET {url} failed (503 Service Unavailable): "
            f"attempt {attempt} of 4, trying again in {wait:g} s" in logged
        )
    assert "answered 429: waiting 1.5 s to retry" in logged
    assert env.token not in logged
