"""Asset checks on the analytics tables: small functions, each docstring the check's description."""

import json
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
from dlt.destinations.job_client_impl import SqlJobClientBase as Client  # see _columns
from sqlglot import exp

from analytics_assets import pipeline as sync
from analytics_assets.orchestration.assets import WAREHOUSE_POOL, analytics_tables, asset_key
from analytics_assets.sources.analytics import settings
from analytics_assets.sources.analytics.settings import ORGANIZATIONS, PROJECTS, TESTS

CHUNK_SIZE = 1000  # rows fetched at a time; a check keeps only a count and SAMPLE_SIZE of them
WARN = dg.AssetCheckSeverity.WARN
Result = dg.AssetCheckResult
Context = dg.AssetCheckExecutionContext
COLUMNS_SQL = """-- in short, what dlt's get_storage_tables asks, for the dataset and the table
SELECT column_name, data_type
FROM information_schema.columns
WHERE table_schema = %s
  AND table_name = %s"""


def _result(passed: bool, *sql: str, **metadata: Any) -> Result:
    block = dg.MetadataValue.md("```sql\n" + ";\n\n".join(sql) + ";\n```")  # the UI's SQL dialog
    return Result(passed=passed, metadata={**metadata, "sql": block})


def _scan(client: Client, sql: str, fault: Callable, count: str, values: str) -> Result:
    """Count a SELECT's rows (id first) whose fault is not None, a chunk at a time; name a few."""
    found, sample = 0, {}
    with client.sql_client.execute_query(sql) as cursor:
        for row in (row for chunk in cursor.iter_fetch(CHUNK_SIZE) for row in chunk):
            if (fault_of := fault(row)) is not None:
                found += 1
                sample.update({row[0]: fault_of} if len(sample) < settings.SAMPLE_SIZE else {})
    named = {"sample_offending_ids": list(sample), values: {str(i): sample[i] for i in sample}}
    return _result(not found, sql, **{count: found}, **named)


def _columns(client: Client, table: str) -> dict[str, Any]:
    """The table's columns as stored, with dlt's types; none while dlt has not created it."""
    # no public API of dlt reflects stored tables with its types: its SQL job client's does
    ((_, columns),) = client.get_storage_tables([table])
    return {name: column.get("data_type") for name, column in columns.items()}


def id_is_unique_and_not_null(client: Client, table: str) -> Result:
    """Every row has an id, and no two rows share one: the merge on id relies on it."""
    t = client.sql_client.make_qualified_table_name(table)
    nulls_sql = f"SELECT COUNT(*) AS null_ids\nFROM {t}\nWHERE id IS NULL"
    dups_sql = f"SELECT id, COUNT(*)\nFROM {t}\nWHERE id IS NOT NULL\nGROUP BY id\n"
    dups_sql += "HAVING COUNT(*) > 1\nORDER BY id"
    ((nulls,),) = client.sql_client.execute_sql(nulls_sql) or [(0,)]
    dups = _scan(client, dups_sql, lambda row: row[1], "duplicated_ids", "copies")
    return _result(dups.passed and not nulls, nulls_sql, dups_sql, null_ids=nulls, **dups.metadata)


def matches_seed_schema(client: Client, table: str) -> Result:
    """Every seed column, with the seed's type: one missing or retyped fails; extras are listed."""
    expected, actual = settings.SEED_TYPES[table], _columns(client, table)
    wrong = {c: f"{actual[c]} (expected {t})" for c, t in expected.items() if actual.get(c, t) != t}
    missing = sorted(set(expected) - set(actual))
    extra = sorted(c for c in set(actual) - set(expected) if not c.startswith("_dlt"))
    found = {"missing_columns": missing, "retyped_columns": wrong, "extra_columns": extra}
    return _result(not (wrong or missing), COLUMNS_SQL, **found)


def not_empty(client: Client, table: str) -> Result:
    """The table has rows; an empty one warns. rows_served_bounds_check warns of an empty sync."""
    sql = f"SELECT COUNT(*) AS row_count\nFROM {client.sql_client.make_qualified_table_name(table)}"
    ((rows,),) = client.sql_client.execute_sql(sql) or [(0,)]
    empty = {"severity": WARN, "description": f"The {table} table has no rows."}
    return _result(bool(rows), sql, rows=rows)._replace(**({} if rows else empty))


def _references(client: Client, table: str, column: str, parent: str, null_ok: bool) -> Result:
    t, p = (client.sql_client.make_qualified_table_name(name) for name in (table, parent))
    sql = f"SELECT c.id, c.{column}\nFROM {t} AS c\nLEFT JOIN {p} AS p ON c.{column} = p.id\n"
    sql += "WHERE p.id IS NULL\n" + (f"  AND c.{column} IS NOT NULL\n" if null_ok else "")
    value = lambda row: "NULL" if row[1] is None else row[1]  # noqa: E731
    return _scan(client, f"{sql}ORDER BY c.id", value, "orphans", "sample_offending_values")


def organization_id_references_organizations(client: Client, *_: Any) -> Result:
    """Every project has an organization_id that names a loaded organization.

    Blocking: when it fails, the run fails, the failure sensor reports it, and assets a user adds
    downstream of projects do not materialize in that run. Tests load in the same step as
    projects, so they are not held back.
    """
    return _references(client, PROJECTS, "organization_id", ORGANIZATIONS, null_ok=False)


def project_id_references_projects(client: Client, *_: Any) -> Result:
    """Every project_id that is set names a loaded project."""
    return _references(client, TESTS, "project_id", PROJECTS, null_ok=True)


def _run_ids(client: Client, fault: Callable[[Any, Any], Any], values: str) -> Result:
    # JSON as text on every destination (psycopg2 hands JSON back decoded), in sqlglot's dialect
    dialect = client.sql_client.capabilities.sqlglot_dialect
    text = exp.cast(exp.column("test_run_ids"), "text").sql(dialect)
    t = client.sql_client.make_qualified_table_name(TESTS)
    sql = f"SELECT id, {text} AS test_run_ids, last_test_run_id\nFROM {t}\nORDER BY id"
    parsed = lambda r: fault(r[1] and json.loads(r[1]), r[2])  # noqa: E731
    return _scan(client, sql, parsed, "offending_rows", values)


def test_run_ids_are_integer_arrays(client: Client, *_: Any) -> Result:
    """The test_run_ids of every test are a JSON array of distinct integers, possibly empty."""

    def fault(runs: Any, last: Any) -> str | None:
        if not isinstance(runs, list):
            return f"not an array: {type(runs).__name__}"
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in runs):
            return "non-integer element"
        return "duplicate run ids" if len(set(runs)) != len(runs) else None

    return _run_ids(client, fault, "reasons")


def last_test_run_id_in_test_run_ids(client: Client, *_: Any) -> Result:
    """When a test has a last_test_run_id, it is one of the test's test_run_ids."""

    def fault(runs: Any, last: Any) -> Any:
        ran = isinstance(runs, list) and str(last) in {str(r) for r in runs}
        return None if last is None or ran else last

    return _run_ids(client, fault, "sample_last_test_run_ids")


SHARED = (id_is_unique_and_not_null, matches_seed_schema)
RUN_IDS = (test_run_ids_are_integer_arrays, last_test_run_id_in_test_run_ids)
CHECKS = {
    ORGANIZATIONS: (*SHARED, not_empty),
    PROJECTS: (*SHARED, organization_id_references_organizations),
    TESTS: (*SHARED, project_id_references_projects, *RUN_IDS),
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            check.__name__,
            asset=asset_key(table),
            description=" ".join((check.__doc__ or "").split()),
            blocking=check is organization_id_references_organizations,
        )
        for table, checks in CHECKS.items()
        for check in checks
    ],
    can_subset=True,
    pool=WAREHOUSE_POOL,
)
def analytics_table_checks(context: Context) -> Iterator[Result]:
    """The selected checks, each on its own, in one step: each step opens the warehouse again."""
    with (
        sync.warehouse_lock(context.log.info, shared=True) as pipeline,
        pipeline.destination_client() as client,
    ):
        if not isinstance(client, Client):
            raise TypeError(f"the checks query SQL; {type(client).__name__} takes none")
        for table, checks in CHECKS.items():  # in the declared order, as the UI lists them
            for check in checks:
                key = dg.AssetCheckKey(asset_key(table), check.__name__)
                if key in context.selected_asset_check_keys:
                    result = _run(context, client, check, table)
                    yield result._replace(asset_key=key.asset_key, check_name=key.name)


def _run(context: Context, client: Client, check: Callable[..., Result], table: str) -> Result:
    """One check on its own: if it raises, that is its failed result, and the next one runs."""
    try:
        if not _columns(client, table):  # passes, but not_empty: a table is to have rows
            none = f"No {table} table yet: the API has served none."
            return Result(passed=check is not not_empty, severity=WARN, description=none)
        return check(client, table)
    except Exception as error:  # the traceback goes into the message: Dagster's log drops exc_info
        context.log.error(f"Check {check.__name__} on {table} raised:\n{traceback.format_exc()}")
        message = "".join(traceback.format_exception_only(error)).strip()
        return Result(passed=False, description=f"The check raised {message}")


# Dagster's own, on each materialization's metadata: a column changed since the previous one; a sync
# served no rows (the table keeps its old ones). Both are beta, no news to a user at each load.
with warnings.catch_warnings(action="ignore", category=dg.BetaWarning):
    ASSET_CHECKS = [
        analytics_table_checks,
        *dg.build_column_schema_change_checks(assets=[analytics_tables]),
        *dg.build_metadata_bounds_checks(
            assets=[analytics_tables], metadata_key="rows_served", min_value=1
        ),
    ]
