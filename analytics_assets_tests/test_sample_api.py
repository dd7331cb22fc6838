"""The sample API serves the seed's contract: the other tests are only as good as it is."""

import requests

from analytics_assets.sample_api import Fault, SampleApiServer, build_account


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
