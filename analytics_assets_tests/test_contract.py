"""The seed's schema is the warehouse's contract, whatever the API sends."""

from pathlib import Path

from analytics_assets.sample_api import SampleApiServer
from analytics_assets.sources.analytics import arrow_batches
from analytics_assets.sources.analytics.helpers import conform_to
from analytics_assets.sources.analytics.settings import SEED_TYPES
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


def test_unlisted_test_fields_are_kept_as_text(env: SampleApiServer, warehouse: Path) -> None:
    # tests come as Arrow tables: the same contract as the rows of the other lists
    first, second = env.account.tests[:2]
    first.update(priority=1, labels=["smoke"], owner={"team": "perf"})
    second.update(priority="high")

    assert run_sync("tests").success
    env.account.tests[2]["region"] = "eu"
    assert run_sync("tests").success

    types = column_types(warehouse, "tests")
    assert {types[c] for c in ("priority", "labels", "owner", "region")} == {"VARCHAR"}
    assert types["test_run_ids"] == "JSON"
    assert not [c for c in types if "__v_" in c]
    ids = f"({first['id']}, {second['id']}, {env.account.tests[2]['id']})"
    rows = query(
        warehouse,
        f"SELECT priority, labels, owner, region FROM analytics.tests WHERE id IN {ids} "
        "ORDER BY id",
    )
    assert rows == [
        ("1", '["smoke"]', '{"team": "perf"}', None),
        ("high", None, None, None),
        (None, None, None, "eu"),
    ]


def test_arrow_tables_hold_the_seed_types_and_join_into_batches() -> None:
    columns = SEED_TYPES["tests"]
    conform = conform_to("tests", columns)
    pages = [
        [conform({"id": 1, "created": "2024-01-01T00:00:00", "test_run_ids": [1, 2]})],
        [conform({"id": 2, "flavour": "x"}), conform({"id": 3, "test_run_ids": []})],
        [conform({"id": 4, "user_id": 7})],
    ]

    tables = list(arrow_batches(pages, columns, rows=3))

    assert [t.num_rows for t in tables] == [3, 1]
    first = tables[0]
    assert first.schema.field("id").type == "int64" and not first.schema.field("id").nullable
    assert str(first.schema.field("created").type) == "timestamp[us, tz=UTC]"
    assert first.column("test_run_ids").to_pylist() == ["[1,2]", None, "[]"]
    assert first.column("flavour").to_pylist() == [None, "x", None]
    assert "flavour" not in tables[1].column_names, "unlisted fields are per batch"


def test_every_tests_row_carries_the_load_id_of_its_sync(
    env: SampleApiServer, warehouse: Path
) -> None:
    assert run_sync("tests").success

    (load_id,) = query(warehouse, "SELECT load_id FROM analytics._dlt_loads")[0]
    rows = query(warehouse, "SELECT DISTINCT _dlt_load_id FROM analytics.tests")
    assert rows == [(load_id,)]
