"""The sample API serves the seed's contract: the other tests are only as good as it is."""

import threading
import time

import pytest
import requests

from analytics_assets.sample_api import Fault, ListChange, SampleApiServer, build_account
from analytics_assets.sample_api.server import _build_parser, _server_from_args, main

TESTS = "/loadtests/v2/tests"
# the demo account: organization 1003 has 32 projects, 1004 has 33; project 20001 has no tests
FULL_PAGE_ORG = "/v3/organizations/1003/projects"
ONE_OVER_ORG = "/v3/organizations/1004/projects"
TESTLESS_PROJECT = 20001


def get(
    server: SampleApiServer, path: str, token: str | None = None, **params
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or server.token}"}
    return requests.get(f"{server.url}{path}", headers=headers, params=params, timeout=5)


def test_account_is_deterministic_and_covers_the_boundaries() -> None:
    account = build_account()

    assert account == build_account()
    counts = [
        sum(p["organization_id"] == o["id"] for p in account.projects)
        for o in account.organizations
    ]
    assert {0, 32, 33} <= set(counts)
    assert len(account.tests) > 64
    assert any(t["test_run_ids"] == [] for t in account.tests)
    assert any(o["vat_number"] is None for o in account.organizations)
    assert any(not o["name"].isascii() for o in account.organizations)


def test_pages_split_the_list_without_gaps_or_overlaps(api: SampleApiServer) -> None:
    seen = []
    for page in range(1, 6):
        body = get(api, "/loadtests/v2/tests", page=page, page_size=32).json()
        seen += [t["id"] for t in body["tests"]]

    assert seen == [t["id"] for t in api.account.tests]


def test_a_wrong_token_gets_401_and_the_token_is_not_recorded(api: SampleApiServer) -> None:
    response = get(api, "/v3/organizations", token="nope-secret")

    assert response.status_code == 401
    assert "nope-secret" not in response.text
    assert "nope-secret" not in repr(api.requests)


def test_faults_answer_first_then_clear(api: SampleApiServer) -> None:
    api.add_fault(Fault("/v3/organizations", status=429, times=1, retry_after=1))

    first = get(api, "/v3/organizations")
    second = get(api, "/v3/organizations")

    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert second.status_code == 200
    assert len(second.json()["organizations"]) == len(api.account.organizations)


def test_bad_paging_parameters_get_400(api: SampleApiServer) -> None:
    assert get(api, "/loadtests/v2/tests", page=0).status_code == 400
    assert get(api, "/loadtests/v2/tests", page_size="x").status_code == 400


def sorted_ids(records: list[dict]) -> list[int]:
    return sorted(record["id"] for record in records)


def page_ids(server: SampleApiServer, path: str, page: int, key: str = "tests") -> list[int]:
    response = get(server, path, page=page, page_size=32)
    assert response.status_code == 200
    return [record["id"] for record in response.json()[key]]


def test_lists_carry_no_meta_by_default(api: SampleApiServer) -> None:
    body = get(api, TESTS).json()

    assert "meta" not in body


def test_send_count_adds_the_total() -> None:
    with SampleApiServer(build_account(), send_count=True) as server:
        body = get(server, TESTS, page_size=32).json()

    assert body["meta"] == {"count": len(server.account.tests)}


def test_a_page_past_the_end_is_empty_by_default(api: SampleApiServer) -> None:
    response = get(api, FULL_PAGE_ORG, page=2, page_size=32)

    assert (response.status_code, response.json()) == (200, {"projects": []})


def test_past_end_404_rejects_a_page_beyond_the_last_as_drf_does() -> None:
    with SampleApiServer(build_account(), past_end="404") as server:
        projects = get(server, FULL_PAGE_ORG, page=2, page_size=32)
        tests = get(server, TESTS, page=5, page_size=32)

    assert (projects.status_code, projects.json()) == (404, {"detail": "Invalid page."})
    assert (tests.status_code, tests.json()) == (404, {"detail": "Invalid page."})


def test_past_end_404_still_answers_page_1_of_an_empty_list() -> None:
    with SampleApiServer(build_account(), past_end="404") as server:
        response = get(server, TESTS, project_id=TESTLESS_PROJECT, page=1)

    assert (response.status_code, response.json()) == (200, {"tests": []})


def test_past_end_404_serves_a_last_page_of_one() -> None:
    with SampleApiServer(build_account(), past_end="404") as server:
        response = get(server, ONE_OVER_ORG, page=2, page_size=32)

    assert response.status_code == 200
    assert len(response.json()["projects"]) == 1


def test_past_end_rejects_an_unknown_value() -> None:
    with pytest.raises(ValueError, match="empty"):
        SampleApiServer(build_account(), past_end="410")


def fire_at_once(server: SampleApiServer, n: int) -> list[requests.Response]:
    """Send ``n`` requests from ``n`` threads released together."""
    start = threading.Barrier(n)
    responses: list[requests.Response] = []

    def fetch() -> None:
        start.wait()
        responses.append(get(server, TESTS))

    threads = [threading.Thread(target=fetch) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_the_concurrency_cap_turns_the_excess_away_with_429() -> None:
    with SampleApiServer(build_account(), latency=0.2, concurrency_cap=2) as server:
        responses = fire_at_once(server, 4)

    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    assert [r.headers["Retry-After"] for r in responses if r.status_code == 429] == ["1", "1"]
    assert [r.json()["error"]["code"] for r in responses if r.status_code == 429] == [
        "rate_limited",
        "rate_limited",
    ]
    assert server.throttled == 2
    assert sorted(record.status for record in server.requests) == [200, 200, 429, 429]
    # the two admitted requests were still in flight when the rejected ones arrived
    assert 3 <= server.max_in_flight <= 4


def test_the_concurrency_cap_admits_requests_again_after_a_burst() -> None:
    with SampleApiServer(build_account(), latency=0.2, concurrency_cap=2) as server:
        fire_at_once(server, 4)
        after = get(server, TESTS)

    assert after.status_code == 200


def test_control_endpoints_are_never_capped_and_show_the_cap() -> None:
    with SampleApiServer(build_account(), latency=0.3, concurrency_cap=1) as server:
        slow = threading.Thread(target=get, args=(server, TESTS))
        slow.start()
        deadline = time.monotonic() + 5
        while server.max_in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        stats = requests.get(f"{server.url}/_control/stats", timeout=5)
        slow.join()

    assert stats.status_code == 200
    assert stats.json()["concurrency_cap"] == 1
    assert stats.json()["throttled"] == 0


def test_reset_zeroes_the_throttled_count() -> None:
    with SampleApiServer(build_account(), concurrency_cap=1) as server:
        server.throttled = 3
        requests.post(f"{server.url}/_control/reset", timeout=5)

    assert server.throttled == 0


def test_a_deletion_after_page_1_shifts_page_2_back(api: SampleApiServer) -> None:
    ids = sorted_ids(api.account.tests)
    api.add_list_change(ListChange(TESTS, after_page=1, delete_id=ids[0]))

    first = page_ids(api, TESTS, 1)
    second = page_ids(api, TESTS, 2)

    assert first == ids[:32]
    assert second[0] == ids[33]


def test_an_insertion_after_page_1_shifts_page_2_forward(api: SampleApiServer) -> None:
    ids = sorted_ids(api.account.tests)
    api.add_list_change(ListChange(TESTS, after_page=1, insert={**api.account.tests[0], "id": 1}))

    page_ids(api, TESTS, 1)
    second = page_ids(api, TESTS, 2)

    assert second[0] == ids[31]


def test_a_list_change_is_made_times_times(api: SampleApiServer) -> None:
    before = len(api.account.tests)
    record = {**api.account.tests[0], "id": 1}
    api.add_list_change(ListChange(TESTS, after_page=1, insert=record, times=2))

    for _ in range(3):
        page_ids(api, TESTS, 1)

    assert len(api.account.tests) == before + 2


def test_a_list_change_on_a_projects_path_edits_the_projects(api: SampleApiServer) -> None:
    ids = page_ids(api, ONE_OVER_ORG, 1, key="projects")
    api.add_list_change(ListChange(ONE_OVER_ORG, after_page=1, delete_id=ids[0]))

    page_ids(api, ONE_OVER_ORG, 1, key="projects")

    assert page_ids(api, ONE_OVER_ORG, 2, key="projects") == []


def test_help_shows_the_default_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    assert "sample-token" in capsys.readouterr().out


def test_the_command_line_options_reach_the_server() -> None:
    args = _build_parser().parse_args(
        ["--count", "--past-end", "404", "--concurrency-cap", "3", "--cap-retry-after", "0.5"]
    )

    server = _server_from_args(args)

    assert (server.send_count, server.past_end) == (True, "404")
    assert (server.concurrency_cap, server.cap_retry_after) == (3, 0.5)
