"""Asset checks on the loaded tables: what each protects is in its docstring.

Every check only reads (SELECTs through dlt's SQL client, so it runs on any SQL destination) and
returns metadata that explains a failure on its own: counts, up to 10 offending ids, the SQL.
The checks of a table run together in one step, after the table's materialization and in the
`analytics_checks` job.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dlt
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    multi_asset_check,
)
from dlt.common.schema.typing import TTableSchemaColumns

from analytics_assets.orchestration.assets import WAREHOUSE_POOL, asset_key
from analytics_assets.sources.analytics.pipeline import warehouse_lock
from analytics_assets.sources.analytics.settings import (
    ORGANIZATIONS,
    PROJECTS,
    RESOURCE_NAMES,
    SAMPLE_SIZE,
    SCHEMA,
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
    evaluate: Callable[[Warehouse], AssetCheckResult]
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


def _result(passed: bool, **metadata: Any) -> AssetCheckResult:
    return AssetCheckResult(passed=passed, metadata=_metadata(metadata))


def _metadata(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: MetadataValue.md(f"```sql\n{value}\n```") if key == "sql" else value
        for key, value in values.items()
    }


def _missing_table(table: str) -> AssetCheckResult:
    return AssetCheckResult(
        passed=True,
        severity=AssetCheckSeverity.WARN,
        metadata={"table_exists": False},
        description=f"`{table}` has no table yet: the API has served no rows for it.",
    )


def id_is_unique_and_not_null(table: str) -> Check:
    """Protects the merge key: a null or repeated `id` would merge rows into each other."""

    def evaluate(wh: Warehouse) -> AssetCheckResult:
        if wh.columns(table) is None:
            return _missing_table(table)
        t = wh.table(table)
        nulls_sql = f"SELECT id FROM {t} WHERE id IS NULL"
        dups_sql = f"SELECT id FROM {t} WHERE id IS NOT NULL GROUP BY id HAVING COUNT(*) > 1"
        nulls, dups = wh.count(nulls_sql), wh.count(dups_sql)
        sample = [r[0] for r in wh.rows(f"{dups_sql} ORDER BY id LIMIT {SAMPLE_SIZE}")]
        return _result(
            nulls == 0 and dups == 0,
            rows=wh.count(f"SELECT id FROM {t}"),
            null_ids=nulls,
            duplicated_ids=dups,
            sample_duplicated_ids=sample,
            sql=f"{nulls_sql};\n{dups_sql};",
        )

    return Check(table, "id_is_unique_and_not_null", evaluate, "`id` is unique and never null.")


def references(table: str, column: str, parent: str, *, null_ok: bool, blocking: bool) -> Check:
    """Protects lineage: every `<column>` points at a row that was loaded into `<parent>`."""

    def evaluate(wh: Warehouse) -> AssetCheckResult:
        if wh.columns(table) is None:
            return _missing_table(table)
        t, p = wh.table(table), wh.table(parent)
        if wh.columns(parent) is None:
            orphans_sql = f"SELECT c.id, c.{column} FROM {t} AS c WHERE c.{column} IS NOT NULL"
        else:
            orphans_sql = (
                f"SELECT c.id, c.{column} FROM {t} AS c LEFT JOIN {p} AS p "
                f"ON c.{column} = p.id WHERE p.id IS NULL AND c.{column} IS NOT NULL"
            )
        nulls_sql = f"SELECT id FROM {t} WHERE {column} IS NULL"
        orphans = wh.count(orphans_sql)
        nulls = 0 if null_ok else wh.count(nulls_sql)
        sample = wh.rows(f"{orphans_sql} ORDER BY c.id LIMIT {SAMPLE_SIZE}")
        sample += [] if null_ok else [(r[0], None) for r in wh.rows(f"{nulls_sql} LIMIT 10")]
        return _result(
            orphans == 0 and nulls == 0,
            orphans=orphans,
            **({} if null_ok else {"nulls": nulls}),
            sample_offending_ids=[r[0] for r in sample[:SAMPLE_SIZE]],
            sample_offending_values={str(r[0]): r[1] for r in sample[:SAMPLE_SIZE]},
            parent_table_exists=wh.columns(parent) is not None,
            sql=orphans_sql + ("" if null_ok else f";\n{nulls_sql}"),
        )

    never_null = "" if null_ok else "never null, and "
    return Check(
        table,
        f"{column}_references_{parent}",
        evaluate,
        f"`{column}` is {never_null}every value references a loaded row of `{parent}`."
        + (
            " Blocking: downstream assets do not materialize on top of orphans." if blocking else ""
        ),
        blocking=blocking,
    )


def _as_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _run_ids_sql(wh: Warehouse) -> str:
    # JSON text on every destination: psycopg2 hands json/jsonb back already decoded, and a
    # JSON string would then be decoded a second time.
    return (
        "SELECT id, CAST(test_run_ids AS TEXT) AS test_run_ids, last_test_run_id "
        f"FROM {wh.table(TESTS)} ORDER BY id"
    )


def test_run_ids_are_integer_arrays() -> Check:
    """Protects consumers of `test_run_ids`: a JSON array of distinct integers on every row."""

    def evaluate(wh: Warehouse) -> AssetCheckResult:
        if wh.columns(TESTS) is None:
            return _missing_table(TESTS)
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
            rows=rows,
            offending_rows=offending,
            sample_offending_ids=[int(i) for i in reasons],
            reasons=reasons,
            sql=sql,
        )

    return Check(
        TESTS,
        "test_run_ids_are_integer_arrays",
        evaluate,
        "`test_run_ids` is a JSON array of distinct integers on every row (empty is fine).",
    )


def last_test_run_id_is_a_run() -> Check:
    """Protects the link between a test and its latest run."""

    def evaluate(wh: Warehouse) -> AssetCheckResult:
        if wh.columns(TESTS) is None:
            return _missing_table(TESTS)
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
            rows_with_last_run=checked,
            offending_rows=offending,
            sample_offending_ids=[int(i) for i in sample],
            sample_last_test_run_ids=sample,
            sql=sql,
        )

    return Check(
        TESTS,
        "last_test_run_id_in_test_run_ids",
        evaluate,
        "When `last_test_run_id` is set, it is one of the ids in `test_run_ids`.",
    )


def matches_seed_schema(table: str) -> Check:
    """Protects the contract: the seed's columns exist with their types; extras are reported."""

    def evaluate(wh: Warehouse) -> AssetCheckResult:
        stored = wh.columns(table)
        if stored is None:
            return _missing_table(table)
        expected = {name: hints["data_type"] for name, hints in SCHEMA[table].items()}
        actual = {name: hints.get("data_type") for name, hints in stored.items()}
        missing = sorted(set(expected) - set(actual))
        retyped = {
            name: f"{actual[name]} (expected {data_type})"
            for name, data_type in expected.items()
            if name in actual and actual[name] != data_type
        }
        extra = sorted(c for c in set(actual) - set(expected) if not c.startswith("_dlt"))
        metadata = _metadata(
            {
                "missing_columns": missing,
                "retyped_columns": retyped,
                "extra_columns": extra,
                "sql": f"-- dlt get_storage_table('{table}'): information_schema.columns",
            }
        )
        if missing or retyped:
            return AssetCheckResult(passed=False, metadata=metadata)
        if extra:
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.WARN,
                metadata=metadata,
                description=f"Columns the seed does not list: {', '.join(extra)}",
            )
        return AssetCheckResult(passed=True, metadata=metadata)

    return Check(
        table,
        "matches_seed_schema",
        evaluate,
        "The seed's columns are present with their types (ERROR if missing or retyped); "
        "extra columns are a WARN that lists them.",
    )


def not_empty(table: str) -> Check:
    """Protects against a silent empty sync, e.g. a token that sees no organizations."""

    def evaluate(wh: Warehouse) -> AssetCheckResult:
        rows = 0 if wh.columns(table) is None else wh.count(f"SELECT id FROM {wh.table(table)}")
        return AssetCheckResult(
            passed=rows > 0,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "rows": rows,
                "sql": MetadataValue.md(f"```sql\nSELECT COUNT(*) FROM {table}\n```"),
            },
        )

    return Check(table, "not_empty", evaluate, f"`{table}` has at least one row (WARN).")


CHECKS: dict[str, Sequence[Check]] = {
    ORGANIZATIONS: (
        id_is_unique_and_not_null(ORGANIZATIONS),
        matches_seed_schema(ORGANIZATIONS),
        not_empty(ORGANIZATIONS),
    ),
    PROJECTS: (
        id_is_unique_and_not_null(PROJECTS),
        matches_seed_schema(PROJECTS),
        references(PROJECTS, "organization_id", ORGANIZATIONS, null_ok=False, blocking=True),
    ),
    TESTS: (
        id_is_unique_and_not_null(TESTS),
        matches_seed_schema(TESTS),
        references(TESTS, "project_id", PROJECTS, null_ok=True, blocking=False),
        test_run_ids_are_integer_arrays(),
        last_test_run_id_is_a_run(),
    ),
}


def table_checks(table: str) -> AssetChecksDefinition:
    """One step for the checks of a table: one warehouse connection, any subset of them."""
    checks = CHECKS[table]

    @multi_asset_check(
        specs=[check.spec for check in checks],
        name=f"{table}_checks",
        can_subset=True,
        pool=WAREHOUSE_POOL,
    )
    def _checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        selected = [c for c in checks if c.spec.key in context.selected_asset_check_keys]
        with (
            warehouse_lock(context.log.info, shared=True) as pipeline,
            open_warehouse(pipeline) as warehouse,
        ):
            for check in selected:
                result = check.evaluate(warehouse)
                yield result._replace(asset_key=check.spec.asset_key, check_name=check.name)

    return _checks


analytics_asset_checks = [table_checks(table) for table in RESOURCE_NAMES]
