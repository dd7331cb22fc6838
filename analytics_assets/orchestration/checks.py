"""Asset checks on the loaded tables: what each protects is in its docstring.

Every check only reads: the warehouse through dlt's SQL client (so it runs on any SQL
destination), and the table's last materializations in Dagster's event log. Each result
explains itself: counts, up to 10 offending ids, and the SQL it ran, one clause per line. The
checks run together in one step, after each materialization of their tables and in the
`analytics_checks` job.
"""

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dlt
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    DagsterInstance,
    MetadataValue,
    multi_asset_check,
)
from dlt.common.schema.typing import TTableSchemaColumns

from analytics_assets.orchestration.assets import WAREHOUSE_POOL, asset_key, column_schema
from analytics_assets.sources.analytics.pipeline import warehouse_lock
from analytics_assets.sources.analytics.settings import (
    ORGANIZATIONS,
    PROJECTS,
    SAMPLE_SIZE,
    SEED_TYPES,
    TESTS,
)


class Warehouse:
    """Read-only questions about the loaded dataset, asked through dlt's destination client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._sql = client.sql_client
        self._columns: dict[str, TTableSchemaColumns | None] = {}

    def table(self, name: str) -> str:
        """The qualified, quoted name of a table of the dataset."""
        return self._sql.make_qualified_table_name(name)

    def columns(self, name: str) -> TTableSchemaColumns | None:
        """The table's columns with dlt types as stored, or None when the table does not exist."""
        if name not in self._columns:
            exists, columns = self._client.get_storage_table(name)
            self._columns[name] = columns if exists else None
        return self._columns[name]

    def columns_sql(self, name: str) -> str:
        """A query equivalent to the one dlt runs for a table's columns (`get_storage_table`)."""
        return (
            "-- dlt's get_storage_table asks the warehouse the equivalent of:\n"
            "SELECT column_name, data_type\nFROM information_schema.columns\n"
            f"WHERE table_schema = '{self._sql.dataset_name}'\n  AND table_name = '{name}'"
        )

    def rows(self, sql: str) -> list[tuple]:
        """Run one SELECT."""
        return [tuple(row) for row in self._sql.execute_sql(sql) or []]

    def stream(self, sql: str, chunk_size: int = 1000) -> Iterator[tuple]:
        """Run one SELECT and yield its rows a chunk at a time: memory stays flat per table."""
        with self._sql.execute_query(sql) as cursor:
            for chunk in cursor.iter_fetch(chunk_size):
                yield from (tuple(row) for row in chunk)

    def count(self, sql: str) -> int:
        """COUNT(*) of a SELECT."""
        return int(self.rows(f"SELECT COUNT(*) FROM ({sql}) AS q")[0][0])


@dataclass(frozen=True)
class History:
    """What the table's last materializations reported, from Dagster's event log."""

    instance: DagsterInstance

    def latest(self, table: str, limit: int = 1) -> list[Mapping[str, Any]]:
        """The metadata of the table's last `limit` materializations, newest first."""
        records = self.instance.fetch_materializations(asset_key(table), limit=limit).records
        return [r.asset_materialization.metadata for r in records if r.asset_materialization]


@contextmanager
def open_warehouse(pipeline: dlt.Pipeline) -> Iterator[Warehouse]:
    """One connection for all checks of a step."""
    with pipeline.destination_client() as client:
        yield Warehouse(client)


@dataclass(frozen=True)
class Check:
    """One asset check: its table, name, what it protects, and how to evaluate it."""

    table: str
    name: str
    evaluate: Callable[[Warehouse, History], AssetCheckResult]
    description: str
    blocking: bool = False

    @property
    def spec(self) -> AssetCheckSpec:
        """The Dagster spec, so the check shows in the UI before it ever runs."""
        return AssetCheckSpec(
            name=self.name,
            asset=asset_key(self.table),
            description=self.description,
            blocking=self.blocking,
        )


def sql_block(*statements: str) -> MetadataValue:
    """The SQL a check ran, as a Markdown code block the UI's dialog shows line by line."""
    return MetadataValue.md("```sql\n" + ";\n\n".join(statements) + ";\n```")


def _result(passed: bool, sql: Sequence[str], **metadata: Any) -> AssetCheckResult:
    return AssetCheckResult(passed=passed, metadata={**metadata, "sql": sql_block(*sql)})


def _missing_table(wh: Warehouse, table: str) -> AssetCheckResult:
    return AssetCheckResult(
        passed=True,
        severity=AssetCheckSeverity.WARN,
        metadata={"table_exists": False, "sql": sql_block(wh.columns_sql(table))},
        description=f"The {table} table does not exist yet: the API has served no rows for it.",
    )


def id_is_unique_and_not_null(table: str) -> Check:
    """Protects the merge key: a null or repeated id would merge rows into each other."""

    def evaluate(wh: Warehouse, history: History) -> AssetCheckResult:
        if wh.columns(table) is None:
            return _missing_table(wh, table)
        t = wh.table(table)
        nulls_sql = f"SELECT id\nFROM {t}\nWHERE id IS NULL"
        dups_sql = f"SELECT id\nFROM {t}\nWHERE id IS NOT NULL\nGROUP BY id\nHAVING COUNT(*) > 1"
        nulls, dups = wh.count(nulls_sql), wh.count(dups_sql)
        sample = [r[0] for r in wh.rows(f"{dups_sql}\nORDER BY id\nLIMIT {SAMPLE_SIZE}")]
        return _result(
            nulls == 0 and dups == 0,
            [nulls_sql, dups_sql],
            rows=wh.count(f"SELECT id FROM {t}"),
            null_ids=nulls,
            duplicated_ids=dups,
            sample_duplicated_ids=sample,
        )

    return Check(
        table,
        "id_is_unique_and_not_null",
        evaluate,
        f"Every row of {table} has an id, and no two rows share one.",
    )


def references(
    table: str, column: str, parent: str, description: str, *, null_ok: bool, blocking: bool
) -> Check:
    """Protects lineage: every `<column>` points at a row that was loaded into `<parent>`."""

    def evaluate(wh: Warehouse, history: History) -> AssetCheckResult:
        if wh.columns(table) is None:
            return _missing_table(wh, table)
        t, p = wh.table(table), wh.table(parent)
        if wh.columns(parent) is None:
            orphans_sql = f"SELECT c.id, c.{column}\nFROM {t} AS c\nWHERE c.{column} IS NOT NULL"
        else:
            orphans_sql = (
                f"SELECT c.id, c.{column}\nFROM {t} AS c\n"
                f"LEFT JOIN {p} AS p ON c.{column} = p.id\n"
                f"WHERE p.id IS NULL\n  AND c.{column} IS NOT NULL"
            )
        nulls_sql = f"SELECT id\nFROM {t}\nWHERE {column} IS NULL"
        orphans = wh.count(orphans_sql)
        nulls = 0 if null_ok else wh.count(nulls_sql)
        sample = wh.rows(f"{orphans_sql}\nORDER BY c.id\nLIMIT {SAMPLE_SIZE}")
        if not null_ok:
            sample += [(r[0], None) for r in wh.rows(f"{nulls_sql}\nLIMIT {SAMPLE_SIZE}")]
        return _result(
            orphans == 0 and nulls == 0,
            [orphans_sql] if null_ok else [orphans_sql, nulls_sql],
            orphans=orphans,
            **({} if null_ok else {"nulls": nulls}),
            sample_offending_ids=[r[0] for r in sample[:SAMPLE_SIZE]],
            sample_offending_values={str(r[0]): r[1] for r in sample[:SAMPLE_SIZE]},
            parent_table_exists=wh.columns(parent) is not None,
        )

    return Check(table, f"{column}_references_{parent}", evaluate, description, blocking=blocking)


def _as_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _run_ids_sql(wh: Warehouse) -> str:
    # JSON text on every destination: psycopg2 hands json/jsonb back already decoded, and a
    # JSON string would then be decoded a second time.
    return (
        "SELECT id, CAST(test_run_ids AS TEXT) AS test_run_ids, last_test_run_id\n"
        f"FROM {wh.table(TESTS)}\nORDER BY id"
    )


def test_run_ids_are_integer_arrays() -> Check:
    """Protects consumers of test_run_ids: a JSON array of distinct integers on every row."""

    def evaluate(wh: Warehouse, history: History) -> AssetCheckResult:
        if wh.columns(TESTS) is None:
            return _missing_table(wh, TESTS)
        sql = _run_ids_sql(wh)
        rows = offending = 0
        reasons: dict[str, str] = {}
        for test_id, raw, _ in wh.stream(sql):
            rows += 1
            runs = _as_json(raw)
            if not isinstance(runs, list):
                reason = f"not an array: {type(runs).__name__}"
            elif not all(isinstance(r, int) and not isinstance(r, bool) for r in runs):
                reason = "non-integer element"
            elif len(set(runs)) != len(runs):
                reason = "duplicate run ids"
            else:
                continue
            offending += 1
            if len(reasons) < SAMPLE_SIZE:
                reasons[str(test_id)] = reason
        return _result(
            not offending,
            [sql],
            rows=rows,
            offending_rows=offending,
            sample_offending_ids=[int(i) for i in reasons],
            reasons=reasons,
        )

    return Check(
        TESTS,
        "test_run_ids_are_integer_arrays",
        evaluate,
        "The test_run_ids of every test are a JSON array of distinct integers, possibly empty.",
    )


def last_test_run_id_is_a_run() -> Check:
    """Protects the link between a test and its latest run."""

    def evaluate(wh: Warehouse, history: History) -> AssetCheckResult:
        if wh.columns(TESTS) is None:
            return _missing_table(wh, TESTS)
        sql = _run_ids_sql(wh)
        checked = offending = 0
        sample: dict[str, Any] = {}
        for test_id, raw, last in wh.stream(sql):
            if last is None:
                continue
            checked += 1
            runs = _as_json(raw)
            if not isinstance(runs, list) or str(last) not in {str(r) for r in runs}:
                offending += 1
                if len(sample) < SAMPLE_SIZE:
                    sample[str(test_id)] = last
        return _result(
            not offending,
            [sql],
            rows_with_last_run=checked,
            offending_rows=offending,
            sample_offending_ids=[int(i) for i in sample],
            sample_last_test_run_ids=sample,
        )

    return Check(
        TESTS,
        "last_test_run_id_in_test_run_ids",
        evaluate,
        "When a test has a last_test_run_id, it is one of the test's test_run_ids.",
    )


def column_changes(history: History, table: str) -> list[str]:
    """How the table's columns changed between its last two materializations.

    From the `dagster/column_schema` that dagster-dlt reports with each materialization, as
    Dagster's `build_column_schema_change_checks` reads it. dlt's own `_dlt_*` columns are left out.
    """
    schemas = []
    for metadata in history.latest(table, limit=2):
        schema = column_schema(metadata)
        if schema is not None:
            schemas.append(
                {c.name: c.type for c in schema.columns if not c.name.startswith("_dlt")}
            )
    if len(schemas) < 2:
        return []
    new, old = schemas
    changes = [f"added {name} ({new[name]})" for name in sorted(new.keys() - old.keys())]
    changes += [f"removed {name} ({old[name]})" for name in sorted(old.keys() - new.keys())]
    changes += [
        f"retyped {name} ({old[name]} to {new[name]})"
        for name in sorted(new.keys() & old.keys())
        if new[name] != old[name]
    ]
    return changes


def matches_seed_schema(table: str) -> Check:
    """Protects the contract: the seed's columns exist with their types; changes are reported.

    A missing or retyped seed column is an ERROR. Columns the seed does not list (a real API
    has more) pass and are listed. A change of the columns since the previous materialization
    is a WARN that names it, once: the next materialization without a change passes again.
    """

    def evaluate(wh: Warehouse, history: History) -> AssetCheckResult:
        stored = wh.columns(table)
        if stored is None:
            return _missing_table(wh, table)
        expected = SEED_TYPES[table]
        actual = {name: hints.get("data_type") for name, hints in stored.items()}
        missing = sorted(set(expected) - set(actual))
        retyped = {
            name: f"{actual[name]} (expected {data_type})"
            for name, data_type in expected.items()
            if name in actual and actual[name] != data_type
        }
        extra = sorted(c for c in set(actual) - set(expected) if not c.startswith("_dlt"))
        changes = column_changes(history, table)
        metadata = {
            "missing_columns": missing,
            "retyped_columns": retyped,
            "extra_columns": extra,
            "changes_since_previous_materialization": changes,
            "sql": sql_block(wh.columns_sql(table)),
        }
        if missing or retyped:
            return AssetCheckResult(passed=False, metadata=metadata)
        if changes:
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.WARN,
                metadata=metadata,
                description="The columns changed since the previous materialization: "
                + "; ".join(changes)
                + ".",
            )
        return AssetCheckResult(passed=True, metadata=metadata)

    return Check(
        table,
        "matches_seed_schema",
        evaluate,
        "The seed's columns are present with the seed's types, and extra columns are listed. A "
        "missing or retyped column fails; a change since the previous materialization warns.",
    )


def not_empty(table: str) -> Check:
    """Protects against a silent empty sync, e.g. a token that sees no organizations.

    An empty list keeps every row already loaded (it looks like an outage), so the table alone
    cannot tell: the check reads what the last sync served from its materialization.
    """

    def evaluate(wh: Warehouse, history: History) -> AssetCheckResult:
        count_sql = f"SELECT COUNT(*)\nFROM {wh.table(table)}"
        rows = 0 if wh.columns(table) is None else int(wh.rows(count_sql)[0][0])
        latest = history.latest(table)
        served_value = latest[0].get("rows_served") if latest else None
        served = getattr(served_value, "value", served_value)
        metadata = {
            "rows": rows,
            "rows_served_by_the_last_sync": served,
            "sql": sql_block(count_sql),
        }
        if rows == 0:
            description = f"The {table} table has no rows."
        elif served == 0:
            description = (
                f"The last sync was served no {table}; the {rows} rows kept are from earlier syncs."
            )
        else:
            return AssetCheckResult(passed=True, metadata=metadata)
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            metadata=metadata,
            description=description,
        )

    return Check(
        table,
        "not_empty",
        evaluate,
        f"The last sync was served {table}, and the table has rows. Otherwise it warns.",
    )


CHECKS: dict[str, Sequence[Check]] = {
    ORGANIZATIONS: (
        id_is_unique_and_not_null(ORGANIZATIONS),
        matches_seed_schema(ORGANIZATIONS),
        not_empty(ORGANIZATIONS),
    ),
    PROJECTS: (
        id_is_unique_and_not_null(PROJECTS),
        matches_seed_schema(PROJECTS),
        references(
            PROJECTS,
            "organization_id",
            ORGANIZATIONS,
            "Every project has an organization_id that names a loaded organization. Blocking: "
            "assets downstream of projects do not materialize on top of orphans.",
            null_ok=False,
            blocking=True,
        ),
    ),
    TESTS: (
        id_is_unique_and_not_null(TESTS),
        matches_seed_schema(TESTS),
        references(
            TESTS,
            "project_id",
            PROJECTS,
            "Every project_id that is set names a loaded project.",
            null_ok=True,
            blocking=False,
        ),
        test_run_ids_are_integer_arrays(),
        last_test_run_id_is_a_run(),
    ),
}


@multi_asset_check(
    specs=[check.spec for checks in CHECKS.values() for check in checks],
    name="analytics_table_checks",
    can_subset=True,
    pool=WAREHOUSE_POOL,
)
def analytics_table_checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
    """The selected checks, in one step over one warehouse connection.

    A step per table would open the warehouse three times and, with a process per step, import
    everything three times.
    """
    selected = [
        check
        for checks in CHECKS.values()
        for check in checks
        if check.spec.key in context.selected_asset_check_keys
    ]
    history = History(context.instance)
    with (
        warehouse_lock(context.log.info, shared=True) as pipeline,
        open_warehouse(pipeline) as warehouse,
    ):
        for check in selected:
            result = check.evaluate(warehouse, history)
            yield result._replace(asset_key=check.spec.asset_key, check_name=check.name)
