"""The seed's schema is the warehouse's contract, whatever the API sends."""

from pathlib import Path

from analytics_assets.sample_api import SampleApiServer
from analytics_assets_tests.conftest import query, run_sync
from analytics_assets_tests.test_http import failure_message


def column_types(path: Path, table: str) -> dict[str, str]:
    return dict(
        query(
            path,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = 'analytics' AND table_name = '{table}'",
        )
    )


def test_numbers_sent_for_string_fields_stay_varchar(env: SampleApiServer, warehouse: Path) -> None:
    org = env.account.organizations[0]
    org["vat_number"] = 123456789
    test = env.account.tests[0]
    test["last_test_run_id"] = 4242

    assert run_sync().success

    assert column_types(warehouse, "organizations")["vat_number"] == "VARCHAR"
    assert query(warehouse, f"SELECT vat_number FROM analytics.organizations WHERE id={org['id']}")[
        0
    ] == ("123456789",)
    assert query(warehouse, f"SELECT last_test_run_id FROM analytics.tests WHERE id={test['id']}")[
        0
    ] == ("4242",)


def test_unlisted_fields_are_kept_and_never_split_into_variants(
    env: SampleApiServer, warehouse: Path
) -> None:
    first, second = env.account.organizations[:2]
    first.update(plan="pro", seats=5, settings={"sso": True})
    second.update(plan=3, seats="many", settings="none")

    assert run_sync("organizations").success
    second.update(seats=7.5)
    assert run_sync("organizations").success

    types = column_types(warehouse, "organizations")
    assert {types["plan"], types["seats"], types["settings"]} == {"VARCHAR"}
    assert not [c for c in types if "__v_" in c]
    rows = dict(
        query(
            warehouse,
            f"SELECT id, seats FROM analytics.organizations WHERE id IN "
            f"({first['id']}, {second['id']})",
        )
    )
    assert rows == {first["id"]: "5", second["id"]: "7.5"}


def test_a_value_that_breaks_the_contract_fails_the_sync_and_loads_nothing(
    env: SampleApiServer, warehouse: Path
) -> None:
    assert run_sync().success
    before = query(warehouse, "SELECT id, name, owner_id FROM analytics.organizations ORDER BY id")
    env.account.organizations[0]["name"] = "changed"
    env.account.organizations[1]["owner_id"] = "not-a-number"

    result = run_sync(raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    bad_id = env.account.organizations[1]["id"]
    assert f"organizations id={bad_id}: field `owner_id` must be an integer" in message
    after = query(warehouse, "SELECT id, name, owner_id FROM analytics.organizations ORDER BY id")
    assert after == before


def test_a_bad_timestamp_is_named(env: SampleApiServer) -> None:
    env.account.projects[0]["created"] = "yesterday"

    result = run_sync("projects", raise_on_error=False)

    assert "field `created` must be an ISO-8601 timestamp" in failure_message(result)
