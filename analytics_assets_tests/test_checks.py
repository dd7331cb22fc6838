"""Each asset check passes on good data and fails, explaining why, on crafted bad data."""

import json
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    asset,
    materialize,
)
from dagster_dlt import DagsterDltResource

from analytics_assets import defs
from analytics_assets.orchestration import checks
from analytics_assets.orchestration.assets import analytics_tables
from analytics_assets.orchestration.checks import ASSET_CHECKS
from analytics_assets.sample_api import Fault, SampleApiServer
from analytics_assets.sources.analytics.settings import SAMPLE_SIZE
from analytics_assets_tests.conftest import (
    CHECK_KEYS,
    CHECKS_PER_ASSET,
    REPO,
    SQL_CHECKS,
    query,
    run_sync,
)


def run_checks() -> dict[tuple[str, str], object]:
    """The checks-only job, as a user runs it from the UI; the warehouse's, by (table, check).

    Dagster's builders' checks read the materializations, which this fresh instance has none of.
    """
    result = defs.resolve_job_def("analytics_checks").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    evaluations = result.get_asset_check_evaluations()
    return {
        (e.asset_key.path[-1], e.check_name): e
        for e in evaluations
        if e.asset_check_key in SQL_CHECKS
    }


def tamper(path: Path, *statements: str) -> None:
    with duckdb.connect(str(path)) as con:
        for sql in statements:
            con.execute(sql)


@pytest.fixture
def synced(env: SampleApiServer, warehouse: Path) -> Path:
    assert run_sync().success
    return warehouse


def test_every_check_passes_on_good_data(env: SampleApiServer) -> None:
    result = run_sync()

    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(CHECK_KEYS)
    assert {(e.asset_key.path[-1], e.check_name) for e in evaluations if not e.passed} == set()


def test_checks_only_job_evaluates_every_check_without_calling_the_api(
    synced: Path, env: SampleApiServer
) -> None:
    env.reset_requests()

    evaluations = run_checks()

    assert len(evaluations) == len(SQL_CHECKS) and all(e.passed for e in evaluations.values())
    assert env.request_count() == 0


def test_duplicate_and_null_ids_are_named(synced: Path, env: SampleApiServer) -> None:
    org = env.account.organizations[1]["id"]
    tamper(
        synced,
        f"INSERT INTO analytics.organizations SELECT * FROM analytics.organizations WHERE id={org}",
        "ALTER TABLE analytics.tests ALTER COLUMN id DROP NOT NULL",
        f"UPDATE analytics.tests SET id = NULL WHERE id = {env.account.tests[0]['id']}",
    )

    evaluations = run_checks()

    dup = evaluations[("organizations", "id_is_unique_and_not_null")]
    assert not dup.passed
    assert dup.metadata["sample_offending_ids"].value == [org]
    assert dup.metadata["copies"].value == {str(org): 2}
    assert dup.metadata["duplicated_ids"].value == 1
    assert "GROUP BY id" in dup.metadata["sql"].value
    nulls = evaluations[("tests", "id_is_unique_and_not_null")]
    assert not nulls.passed and nulls.metadata["null_ids"].value == 1


def test_orphaned_projects_fail_the_blocking_check_the_run_and_what_is_downstream(
    env: SampleApiServer, warehouse: Path
) -> None:
    org = env.account.organizations[0]
    orphan = {**env.account.projects[0], "id": 55_555, "organization_id": 999_999}
    body = json.dumps({"projects": [orphan]})
    env.add_fault(Fault(f"/v3/organizations/{org['id']}/projects", status=200, body=body))

    @asset(deps=[AssetKey(["analytics", "projects"])])
    def projects_report() -> None:
        """An asset a user adds downstream of projects."""

    result = materialize(
        [analytics_tables, *ASSET_CHECKS, projects_report],
        resources={"dlt": DagsterDltResource()},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    assert not result.success, "a failed blocking check fails the run"
    evaluation = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "organization_id_references_organizations"
    )
    assert not evaluation.passed
    assert evaluation.metadata["sample_offending_ids"].value == [55_555]
    assert evaluation.metadata["orphans"].value == 1
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey(["projects_report"]) not in materialized, "built on top of orphans"
    # one dlt run loads every table: the check cannot hold back tests, which share its step
    assert AssetKey(["analytics", "tests"]) in materialized


def test_the_blocking_check_says_what_blocking_does_in_a_one_step_sync() -> None:
    key = AssetCheckKey(
        AssetKey(["analytics", "projects"]), "organization_id_references_organizations"
    )
    spec = defs.resolve_asset_graph().get_check_spec(key)

    assert spec.blocking
    assert spec.description is not None
    for words in ("the run fails", "the failure sensor reports it", "do not materialize"):
        assert words in spec.description
    assert "Tests load in the same step as projects, so they are not held back." in spec.description


def test_a_check_that_raises_fails_alone_and_the_others_still_report(synced: Path) -> None:
    # the case: with projects.organization_id gone, the old single loop reported 5 of 10
    tamper(synced, "ALTER TABLE analytics.projects DROP COLUMN organization_id")

    evaluations = run_checks()

    assert len(evaluations) == len(SQL_CHECKS)
    raised = evaluations[("projects", "organization_id_references_organizations")]
    assert not raised.passed and raised.severity == AssetCheckSeverity.ERROR
    assert raised.description.startswith("The check raised ")
    assert "organization_id" in raised.description
    failed = {key for key, e in evaluations.items() if not e.passed}
    assert failed == {
        ("projects", "organization_id_references_organizations"),
        ("projects", "matches_seed_schema"),
    }
    assert evaluations[("projects", "matches_seed_schema")].metadata["missing_columns"].value == [
        "organization_id"
    ]


def test_a_query_that_fails_fails_its_check_and_not_the_run(synced: Path) -> None:
    tamper(synced, "ALTER TABLE analytics.tests DROP COLUMN last_test_run_id")

    result = defs.resolve_job_def("analytics_checks").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )

    assert result.success, "no blocking check failed: the step and the run succeed"
    evaluations = result.get_asset_check_evaluations()
    failed = {e.check_name for e in evaluations if not e.passed and e.asset_check_key in SQL_CHECKS}
    assert failed == {
        "matches_seed_schema",
        "test_run_ids_are_integer_arrays",
        "last_test_run_id_in_test_run_ids",
    }


def test_checks_of_a_table_not_created_yet_pass_with_a_warning(env: SampleApiServer) -> None:
    assert run_sync("organizations").success  # dlt creates no projects or tests table

    evaluations = run_checks()

    assert len(evaluations) == len(SQL_CHECKS) and all(e.passed for e in evaluations.values())
    for (table, _), evaluation in evaluations.items():
        if table != "organizations":
            assert evaluation.severity == AssetCheckSeverity.WARN
            assert evaluation.description == f"No {table} table yet: the API has served none."


def test_tests_pointing_at_unknown_projects_are_named(synced: Path, env: SampleApiServer) -> None:
    test_id = env.account.tests[3]["id"]
    tamper(synced, f"UPDATE analytics.tests SET project_id = 777 WHERE id = {test_id}")

    evaluation = run_checks()[("tests", "project_id_references_projects")]

    assert not evaluation.passed
    assert evaluation.metadata["sample_offending_ids"].value == [test_id]
    assert evaluation.metadata["sample_offending_values"].value == {str(test_id): 777}


def test_bad_test_run_ids_are_named_with_a_reason(synced: Path, env: SampleApiServer) -> None:
    a, b, c = (t["id"] for t in env.account.tests[:3])
    tamper(
        synced,
        f"UPDATE analytics.tests SET test_run_ids = '[1, 1]' WHERE id = {a}",
        f"UPDATE analytics.tests SET test_run_ids = '[\"x\"]' WHERE id = {b}",
        f"UPDATE analytics.tests SET test_run_ids = '{{\"a\": 1}}' WHERE id = {c}",
    )

    evaluation = run_checks()[("tests", "test_run_ids_are_integer_arrays")]

    assert not evaluation.passed
    assert evaluation.metadata["sample_offending_ids"].value == [a, b, c]
    assert evaluation.metadata["reasons"].value == {
        str(a): "duplicate run ids",
        str(b): "non-integer element",
        str(c): "not an array: dict",
    }


def test_every_bad_row_is_counted_and_a_sample_named(
    synced: Path, env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a check reads a chunk at a time and keeps a count and a bounded sample, never the rows
    monkeypatch.setattr(checks, "CHUNK_SIZE", 7)
    tamper(synced, "UPDATE analytics.tests SET test_run_ids = '[7, 7]', last_test_run_id = '8'")
    ids = sorted(t["id"] for t in env.account.tests)

    evaluations = run_checks()

    for name in ("test_run_ids_are_integer_arrays", "last_test_run_id_in_test_run_ids"):
        metadata = evaluations[("tests", name)].metadata
        assert metadata["offending_rows"].value == len(ids), name
        assert metadata["sample_offending_ids"].value == ids[:SAMPLE_SIZE], name


def test_last_run_outside_the_run_list_is_named(synced: Path, env: SampleApiServer) -> None:
    test_id = next(t["id"] for t in env.account.tests if t["test_run_ids"])
    tamper(synced, f"UPDATE analytics.tests SET last_test_run_id = '1' WHERE id = {test_id}")

    evaluation = run_checks()[("tests", "last_test_run_id_in_test_run_ids")]

    assert not evaluation.passed
    assert evaluation.metadata["sample_offending_ids"].value == [test_id]


def test_a_missing_or_retyped_seed_column_fails_and_extra_columns_pass_listed(
    synced: Path,
) -> None:
    tamper(
        synced,
        "ALTER TABLE analytics.organizations DROP COLUMN vat_number",
        "ALTER TABLE analytics.organizations ALTER COLUMN owner_id TYPE VARCHAR",
        "ALTER TABLE analytics.projects ADD COLUMN plan VARCHAR",
    )

    evaluations = run_checks()

    orgs = evaluations[("organizations", "matches_seed_schema")]
    assert not orgs.passed and orgs.severity == AssetCheckSeverity.ERROR
    assert orgs.metadata["missing_columns"].value == ["vat_number"]
    assert orgs.metadata["retyped_columns"].value == {"owner_id": "text (expected bigint)"}
    projects = evaluations[("projects", "matches_seed_schema")]
    assert projects.passed, "a real API serves more than the seed: extra columns are no fault"
    assert projects.metadata["extra_columns"].value == ["plan"]
    assert evaluations[("tests", "matches_seed_schema")].passed


def by_check(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def test_a_column_change_since_the_previous_materialization_warns_once(
    env: SampleApiServer,
) -> None:
    instance = DagsterInstance.ephemeral()
    assert run_sync("tests", instance=instance).success
    for test in env.account.tests:
        test["region"] = "eu-west"

    changed = by_check(run_sync("tests", instance=instance))
    unchanged = by_check(run_sync("tests", instance=instance))

    warned = changed[("tests", "column_schema_change")]
    assert not warned.passed and warned.severity == AssetCheckSeverity.WARN
    assert "Added columns: region" in warned.description
    assert changed[("tests", "matches_seed_schema")].passed, "an extra column is no fault"
    assert unchanged[("tests", "column_schema_change")].passed
    assert unchanged[("tests", "matches_seed_schema")].metadata["extra_columns"].value == ["region"]


def test_a_sync_that_served_no_organizations_warns_although_rows_are_kept(
    env: SampleApiServer, warehouse: Path
) -> None:
    instance = DagsterInstance.ephemeral()
    assert run_sync("organizations", instance=instance).success
    env.account.organizations.clear()

    evaluations = by_check(run_sync("organizations", instance=instance))

    assert query(warehouse, "SELECT COUNT(*) FROM analytics.organizations")[0][0] == 4
    served = evaluations[("organizations", "rows_served_bounds_check")]
    assert not served.passed and served.severity == AssetCheckSeverity.WARN
    assert served.description == "Value `0` is less than 1"
    assert evaluations[("organizations", "not_empty")].passed, "the rows kept are there"


def test_an_empty_organizations_table_warns(synced: Path) -> None:
    tamper(synced, "DELETE FROM analytics.organizations")

    evaluation = run_checks()[("organizations", "not_empty")]

    assert not evaluation.passed
    assert evaluation.severity == AssetCheckSeverity.WARN
    assert evaluation.metadata["rows"].value == 0


def is_a_sentence(text: str) -> bool:
    return (
        text[:1].isupper()
        and text.rstrip().endswith(".")
        and "`" not in text
        and "  " not in text
        and "\n" not in text.strip()
    )


def test_every_asset_and_check_description_is_a_plain_sentence() -> None:
    # the catalog and the checks tab show descriptions as plain text: no Markdown backticks
    graph = defs.resolve_asset_graph()
    descriptions = {
        key.to_user_string(): graph.get(key).description for key in graph.get_all_asset_keys()
    }
    for key in SQL_CHECKS:  # Dagster's builders word their checks' descriptions themselves
        descriptions[key.to_user_string()] = graph.get_check_spec(key).description
    assert len(descriptions) == len(graph.get_all_asset_keys()) + len(SQL_CHECKS)

    for name, description in descriptions.items():
        assert description and is_a_sentence(description), (name, description)
    assert "is every value" not in " ".join(descriptions.values())


def test_every_check_attaches_its_sql_a_clause_per_line(env: SampleApiServer) -> None:
    evaluations = run_sync().get_asset_check_evaluations()

    assert len(evaluations) == len(CHECK_KEYS)
    for evaluation in (e for e in evaluations if e.asset_check_key in SQL_CHECKS):
        sql = evaluation.metadata["sql"].value
        lines = sql.splitlines()
        assert lines[0] == "```sql" and lines[-1] == "```", evaluation.check_name
        assert len(lines) > 3, f"{evaluation.check_name}: the SQL is on one line"
        assert max(len(line) for line in lines) <= 100, evaluation.check_name


def test_every_seed_column_is_described_in_the_catalog_and_each_materialization(
    env: SampleApiServer,
) -> None:
    graph = defs.resolve_asset_graph()
    result = run_sync()

    for event in result.get_asset_materialization_events():
        key = event.asset_key
        defined = graph.get(key).metadata["dagster/column_schema"].columns
        loaded = event.step_materialization_data.materialization.metadata[
            "dagster/column_schema"
        ].value.columns
        for columns in (defined, [c for c in loaded if not c.name.startswith("_dlt")]):
            assert columns and all(is_a_sentence(c.description or "") for c in columns), key


def test_the_readme_checks_table_lists_every_check_with_its_assets_and_blocking() -> None:
    section = (REPO / "README.md").read_text().split("\n## Checks\n", 1)[1]
    lines = section.strip().split("\n\n", 1)[0].splitlines()[2:]  # the table, past its header
    table = {
        name.strip(" `"): (assets.strip(), blocking.strip())
        for name, assets, _, blocking in (line.split("|")[1:5] for line in lines)
    }
    graph = defs.resolve_asset_graph()

    assert set(table) == {key.name for key in CHECK_KEYS}
    for key in CHECK_KEYS:
        assets, blocking = table[key.name]
        on = [k.asset_key.path[-1] for k in CHECK_KEYS if k.name == key.name]
        assert assets == ("all three" if len(on) == 3 else ", ".join(on)), key.name
        assert (blocking == "**yes**") == graph.get_check_spec(key).blocking, key.name

    assets = (REPO / "README.md").read_text().split("\n## Assets\n", 1)[1].split("\n## ")[0]
    rows = [line.split("|") for line in assets.splitlines() if line.startswith("| `analytics/")]
    counts = {row[1].strip(" `"): int(row[4]) for row in rows}
    assert counts == {f"analytics/{table}": n for table, n in CHECKS_PER_ASSET.items()}
