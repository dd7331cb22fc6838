"""Fault injection over real HTTP: each fault loads exactly what was served, or fails cleanly.

A clean failure names the cause and leaves the warehouse as the last good run left it.

Most faults that must fail are injected into the organizations list; the tests at the end inject
them into the tests list: one dlt run extracts every list before it loads any.
"""

import time
from pathlib import Path

import duckdb
import pytest

from analytics_assets.sample_api import Fault, ListChange, SampleApiServer
from analytics_assets.sources.analytics import unserved
from analytics_assets_tests.conftest import query, run_sync
from analytics_assets_tests.test_http import CONCURRENCY, failure_message, pages_needed

TESTS_PATH = "/loadtests/v2/tests"


def snapshot(path: Path) -> dict[str, list[tuple]]:
    """Everything a user can see in the warehouse's three tables."""
    return {
        table: query(
            path, f"SELECT COLUMNS(lambda c: c NOT LIKE '_dlt%') FROM analytics.{table} ORDER BY id"
        )
        for table in ("organizations", "projects", "tests")
    }


@pytest.fixture
def last_good(env: SampleApiServer, warehouse: Path) -> dict[str, list[tuple]]:
    """A warehouse after one good sync, with the API then changed so a new sync would differ."""
    assert run_sync().success
    before = snapshot(warehouse)
    env.account.organizations[0]["name"] = "changed upstream"
    env.account.tests[0]["name"] = "changed upstream"
    env.reset_requests()
    return before


def assert_failed_cleanly(result, warehouse: Path, before: dict, *needles: str) -> str:
    assert not result.success
    message = failure_message(result)
    for needle in needles:
        assert needle in message
    assert snapshot(warehouse) == before, "a failed run changed the warehouse"
    return message


def test_a_429_storm_with_retry_after_is_ridden_out(env: SampleApiServer, warehouse: Path) -> None:
    env.send_count = True  # a total makes the page count exact
    env.add_fault(Fault(TESTS_PATH, status=429, times=3, retry_after=0.2))

    assert run_sync("tests").success

    assert env.request_count(TESTS_PATH) == pages_needed(len(env.account.tests), True) + 3
    assert query(warehouse, "SELECT COUNT(*) FROM analytics.tests")[0][0] == len(env.account.tests)


def test_a_5xx_outage_longer_than_the_budget_fails_after_exactly_four_attempts(
    env: SampleApiServer, warehouse: Path, last_good: dict
) -> None:
    env.add_fault(Fault("/v3/organizations", status=502, times=100))

    result = run_sync(raise_on_error=False)

    assert_failed_cleanly(result, warehouse, last_good, "502 Server Error")
    assert env.request_count("/v3/organizations") == 4


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_connection_faults_are_retried(env: SampleApiServer, warehouse: Path, kind: str) -> None:
    env.add_fault(Fault(TESTS_PATH, status=200, times=2, kind=kind, body='{"tests": [{"id"'))

    assert run_sync("tests").success

    loaded = query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.tests")[0]
    assert loaded == (len(env.account.tests),) * 2


def test_read_timeout_is_honoured_and_retried(
    env: SampleApiServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_TIMEOUT", "0.3")
    env.add_fault(Fault("/v3/organizations", status=200, times=1, kind="stall", stall_seconds=1))

    assert run_sync("organizations").success

    deadline = time.monotonic() + 5  # the stalled request is logged when its sleep ends
    while env.request_count("/v3/organizations") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.request_count("/v3/organizations") == 2


def test_read_timeouts_beyond_the_budget_fail_clearly(
    env: SampleApiServer, warehouse: Path, last_good: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_TIMEOUT", "0.3")
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    env.add_fault(Fault("/v3/organizations", status=200, times=5, kind="stall", stall_seconds=1))

    result = run_sync(raise_on_error=False)

    assert_failed_cleanly(
        result,
        warehouse,
        last_good,
        f"did not answer GET {env.url}/v3/organizations within RUNTIME__REQUEST_TIMEOUT=0.3 s, "
        "2 times. Raise RUNTIME__REQUEST_TIMEOUT",
    )


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        ('{"organizations": [{"id": 1,', "application/json", "is not JSON"),
        ("<html><body>Service temporarily unavailable</body></html>", "text/html", "text/html"),
        ('{"items": []}', "application/json", "without a `organizations` list (found ['items'])"),
        ('{"organizations": {"id": 1}}', "application/json", "without a `organizations` list"),
    ],
    ids=["malformed-json", "html-200", "missing-selector", "object-not-list"],
)
def test_bad_bodies_fail_naming_the_url(
    env: SampleApiServer,
    warehouse: Path,
    last_good: dict,
    body: str,
    content_type: str,
    needle: str,
) -> None:
    orgs = "/v3/organizations"
    env.add_fault(Fault(orgs, status=200, times=1, body=body, content_type=content_type))

    result = run_sync(raise_on_error=False)

    assert_failed_cleanly(result, warehouse, last_good, needle, f"GET {env.url}{orgs}")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_missing_resources_fail_at_once(
    env: SampleApiServer, warehouse: Path, last_good: dict, status: int
) -> None:
    path = f"/v3/organizations/{env.account.organizations[2]['id']}/projects"
    env.add_fault(Fault(path, status=status, times=10))

    result = run_sync(raise_on_error=False)

    assert_failed_cleanly(result, warehouse, last_good, str(status), f"{env.url}{path}")
    assert env.request_count(path) == 1


def test_a_new_field_and_a_retyped_field_land_without_variants(
    env: SampleApiServer, warehouse: Path
) -> None:
    assert run_sync("tests").success
    for test in env.account.tests:
        test["region"] = "eu-west"  # new field
        test["user_id"] = str(test["user_id"])  # int -> numeric string
        test["last_test_run_id"] = (  # string -> int
            int(test["last_test_run_id"]) if test["last_test_run_id"] else None
        )

    assert run_sync("tests").success

    columns = dict(
        query(
            warehouse,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'analytics' AND table_name = 'tests'",
        )
    )
    assert columns["region"] == "VARCHAR"
    assert columns["user_id"] == "BIGINT" and columns["last_test_run_id"] == "VARCHAR"
    assert not [c for c in columns if "__v_" in c]
    first = env.account.tests[0]
    row = query(warehouse, f"SELECT user_id, region FROM analytics.tests WHERE id = {first['id']}")
    assert row == [(int(first["user_id"]), "eu-west")]


def test_nulls_in_every_nullable_field_big_scripts_and_unicode(
    env: SampleApiServer, warehouse: Path
) -> None:
    org = env.account.organizations[0]
    for field in org:
        if field != "id":
            org[field] = None
    test = env.account.tests[0]
    test["script"] = "// ünïcødé 🚀 " + "x" * 200_000
    test["name"] = "负载测试 — Ωmega 🔥"

    assert run_sync().success

    (nulls,) = query(
        warehouse,
        "SELECT COUNT(*) FROM analytics.organizations WHERE id = "
        f"{org['id']} AND name IS NULL AND created IS NULL AND is_default IS NULL",
    )
    assert nulls == (1,)
    script, name = query(
        warehouse, f"SELECT script, name FROM analytics.tests WHERE id = {test['id']}"
    )[0]
    assert script == test["script"] and name == test["name"]


def materialized(result) -> dict[str, dict]:
    """Each table's materialization metadata, as plain values."""
    return {
        e.asset_key.path[-1]: {
            k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def loaded_ids(path: Path, table: str) -> set[int]:
    return {row[0] for row in query(path, f"SELECT id FROM analytics.{table}")}


def requests_for(server: SampleApiServer, path: str) -> int:
    return sum(r.path == path for r in server.requests)


@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
def test_a_row_no_longer_served_leaves_at_the_end_of_the_next_sync(
    env: SampleApiServer, warehouse: Path, with_count: bool
) -> None:
    env.send_count = with_count
    assert run_sync().success
    gone_project = env.account.projects.pop(5)
    gone_test = env.account.tests.pop(7)
    env.reset_requests()

    result = run_sync()

    assert result.success
    assert loaded_ids(warehouse, "projects") == {p["id"] for p in env.account.projects}
    assert loaded_ids(warehouse, "tests") == {t["id"] for t in env.account.tests}
    report = materialized(result)
    assert (report["tests"]["ghosts_removed"], report["projects"]["ghosts_removed"]) == (1, 1)
    assert report["tests"]["sample_ghost_ids"] == [gone_test["id"]]
    assert report["projects"]["sample_ghost_ids"] == [gone_project["id"]]
    assert report["organizations"]["ghosts_removed"] == 0
    # a second listing of the lists that lost a row, and of no other list
    lists = {TESTS_PATH: (len(env.account.tests), 2)}
    for org in env.account.organizations:
        count = sum(p["organization_id"] == org["id"] for p in env.account.projects)
        listings = 2 if org["id"] == gone_project["organization_id"] else 1
        lists[f"/v3/organizations/{org['id']}/projects"] = (count, listings)
    for path, (count, listings) in lists.items():
        fewest = listings * pages_needed(count, with_count)
        ahead = 0 if with_count else listings * (CONCURRENCY - 1)  # pages asked past the end
        assert fewest <= requests_for(env, path) <= fewest + ahead, path


def test_a_whole_list_in_one_answer_loses_its_ghosts_at_once(
    env: SampleApiServer, warehouse: Path
) -> None:
    assert run_sync("organizations").success
    gone = env.account.organizations.pop(1)

    result = run_sync("organizations")

    assert loaded_ids(warehouse, "organizations") == {o["id"] for o in env.account.organizations}
    report = materialized(result)["organizations"]
    assert (report["ghosts_removed"], report["sample_ghost_ids"]) == (1, [gone["id"]])


def test_an_empty_list_from_an_api_that_had_rows_is_not_taken_as_deletion(
    env: SampleApiServer, warehouse: Path
) -> None:
    env.send_count = True  # even a total of 0 is no proof: an outage can look like that
    assert run_sync("tests").success
    env.account.tests.clear()

    result = run_sync("tests")

    assert result.success
    assert query(warehouse, "SELECT COUNT(*) FROM analytics.tests")[0][0] > 0
    report = materialized(result)["tests"]
    assert (report["rows_served"], report["ghosts_removed"]) == (0, 0)
    assert "kept every row" in report["ghosts_note"]


def test_a_row_without_a_load_id_no_longer_served_is_removed_and_counted(
    env: SampleApiServer, warehouse: Path
) -> None:
    """Tests loaded before dlt put load ids on Arrow rows have none: the DELETE must see them."""
    assert run_sync("tests").success
    with duckdb.connect(str(warehouse)) as con:  # as when dlt added the column to a filled table
        con.execute("ALTER TABLE analytics.tests ALTER COLUMN _dlt_load_id DROP NOT NULL")
        con.execute("INSERT INTO analytics.tests (id, name) VALUES (999999, 'legacy')")

    result = run_sync("tests")

    assert 999999 not in loaded_ids(warehouse, "tests")
    report = materialized(result)["tests"]
    assert (report["ghosts_removed"], report["sample_ghost_ids"]) == (1, [999999])
    assert report["dagster/row_count"] == len(env.account.tests)


@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
def test_a_row_deleted_while_the_list_is_paged_loses_no_live_row(
    env: SampleApiServer, warehouse: Path, with_count: bool
) -> None:
    env.send_count = with_count
    assert run_sync("tests").success
    deleted = env.account.tests[0]
    # every later row shifts one place back: page 2's first row slips onto page 1, unserved
    env.add_list_change(ListChange(TESTS_PATH, after_page=1, delete_id=deleted["id"]))
    env.reset_requests()

    drifted = run_sync("tests")

    assert drifted.success
    assert loaded_ids(warehouse, "tests") >= {t["id"] for t in env.account.tests}
    assert materialized(drifted)["tests"]["ghosts_removed"] == 0
    assert requests_for(env, TESTS_PATH) > pages_needed(len(env.account.tests) + 1, with_count)
    # the deleted row was served on page 1 before it went: the next sync does not serve it
    assert run_sync("tests").success
    assert loaded_ids(warehouse, "tests") == {t["id"] for t in env.account.tests}


@pytest.mark.parametrize("with_count", [True, False], ids=["meta.count", "seed-contract"])
def test_a_row_inserted_while_the_list_is_paged_is_loaded_once(
    env: SampleApiServer, warehouse: Path, with_count: bool
) -> None:
    env.send_count = with_count
    assert run_sync("tests").success
    inserted = {**env.account.tests[1], "id": 1, "name": "inserted while paged"}
    # every later row shifts one place on: page 1's last row is served again on page 2
    env.add_list_change(ListChange(TESTS_PATH, after_page=1, insert=inserted))

    drifted = run_sync("tests")

    assert drifted.success
    counts = query(warehouse, "SELECT COUNT(*), COUNT(DISTINCT id) FROM analytics.tests")[0]
    assert counts[0] == counts[1], "a row was loaded twice"
    # the inserted row went in ahead of page 1 after it was served: the next sync lists it
    assert run_sync("tests").success
    assert loaded_ids(warehouse, "tests") == {t["id"] for t in env.account.tests}


@pytest.mark.parametrize(
    "fault",
    [
        Fault(TESTS_PATH, status=500, times=100),
        Fault(TESTS_PATH, status=200, times=1, body='{"tests": [{"id": 1,'),
    ],
    ids=["5xx-beyond-the-budget", "malformed-json"],
)
def test_a_fault_in_the_tests_list_leaves_every_table_as_the_last_good_run(
    env: SampleApiServer, warehouse: Path, last_good: dict, fault: Fault
) -> None:
    env.add_fault(fault)

    result = run_sync(raise_on_error=False)

    assert_failed_cleanly(result, warehouse, last_good, f"{env.url}{TESTS_PATH}")
    assert not result.get_asset_materialization_events(), "nothing may count as materialized"


def test_a_sync_after_a_failed_one_is_consistent(
    env: SampleApiServer, warehouse: Path, last_good: dict
) -> None:
    env.add_fault(Fault(TESTS_PATH, status=500, times=10))
    assert not run_sync(raise_on_error=False).success
    assert snapshot(warehouse) == last_good
    env.clear_faults()

    assert run_sync().success

    assert query(warehouse, "SELECT name FROM analytics.tests ORDER BY id LIMIT 1") == [
        ("changed upstream",)
    ]


def test_tests_fetched_for_a_run_that_stopped_are_never_loaded_later(
    env: SampleApiServer, warehouse: Path, last_good: dict
) -> None:
    # a run fails after its tests were fetched: nothing it fetched may load later
    env.add_fault(Fault("/v3/organizations/", status=503, times=100))
    assert not run_sync(raise_on_error=False).success
    env.clear_faults()
    env.account.tests[0]["name"] = "changed again"

    assert run_sync("tests").success

    assert query(warehouse, "SELECT name FROM analytics.tests ORDER BY id LIMIT 1") == [
        ("changed again",)
    ]


def test_an_empty_page_of_projects_lists_no_tests_again() -> None:
    """The k6 tests get an empty page from dlt when each project on it was served already."""
    # before, an empty scope read the whole table: every project with a test not yet served
    # was listed again, though its tests were still to come
    assert unserved("tests", "project_id", set(), within=[]) == {}


@pytest.fixture
def k6(env: SampleApiServer, monkeypatch: pytest.MonkeyPatch) -> SampleApiServer:
    """The sample API in the real service's dialect: tests listed per project."""
    env.tests_key = "k6-tests"
    monkeypatch.setenv("SOURCES__ANALYTICS__DIALECT", "k6")
    return env


def test_tests_listed_from_a_projects_list_that_changed_keep_every_row(
    k6: SampleApiServer, warehouse: Path
) -> None:
    k6.send_count = True
    assert run_sync().success
    big = max(
        k6.account.organizations,
        key=lambda o: sum(p["organization_id"] == o["id"] for p in k6.account.projects),
    )
    first = min(p["id"] for p in k6.account.projects if p["organization_id"] == big["id"])
    # a project goes while its organization's list is paged: the one after it slips out unseen
    path = f"/v3/organizations/{big['id']}/projects"
    k6.add_list_change(ListChange(path, after_page=1, delete_id=first))

    assert run_sync().success

    assert loaded_ids(warehouse, "projects") >= {p["id"] for p in k6.account.projects}
    live = {t["id"] for t in k6.account.tests if t["project_id"] != first}
    assert loaded_ids(warehouse, "tests") >= live, "tests of a live project were deleted"
    assert run_sync().success
    assert loaded_ids(warehouse, "projects") == {p["id"] for p in k6.account.projects}


def test_a_projects_sync_after_a_tests_only_sync_removes_a_deleted_project_at_once(
    k6: SampleApiServer, warehouse: Path
) -> None:
    # k6 lists tests per project: a tests-only run pages the projects but loads none of them
    assert run_sync().success
    gone = k6.account.projects.pop(5)
    assert run_sync("tests").success
    assert gone["id"] in loaded_ids(warehouse, "projects"), "a table that was not synced changed"

    assert run_sync("projects").success

    assert loaded_ids(warehouse, "projects") == {p["id"] for p in k6.account.projects}
