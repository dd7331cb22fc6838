"""Record typing, Arrow batches and the warehouse's view of a list, for the analytics source."""

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import dlt
import pyarrow as pa
from dlt.destinations.exceptions import DatabaseUndefinedRelation


class ContractViolation(ValueError):
    """A record from the API does not fit the seed's schema, so it must not reach the warehouse."""


_BOOLS = {"true": True, "false": False}
# what each dlt data type of the seed accepts, for the error that names a bad value
_EXPECTED = {
    "text": "a string",
    "bigint": "an integer",
    "bool": "a boolean",
    "timestamp": "an ISO-8601 timestamp",
    "json": "a JSON array or object",
}


def _coerce(kind: str, value: Any) -> Any:
    """`value` in the seed's type `kind`; TypeError or ValueError when it cannot take it."""
    match kind, value:
        case "text", str():
            return value
        case "text", _:
            return json.dumps(value, ensure_ascii=False)
        case "json", list() | dict():
            return value
        case "bool", bool():
            return value
        case "bool", str() if value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        case "bigint", int() if not isinstance(value, bool):
            return value
        case "bigint", str():
            return int(value.strip())
        case "bigint", float() if value.is_integer():
            return int(value)
        case "timestamp", str():
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError


def conform_to(table: str, columns: dict[str, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Give every field a type that never changes, so dlt never splits a column into variants.

    Seed fields get the seed's type (a number sent for a string field is stored as text); fields
    the seed does not list are kept as text: strings as they are, anything else as JSON text. A
    value that cannot take its seed type fails the sync with the table, id, field and value.
    """

    def conform(record: dict[str, Any]) -> dict[str, Any]:
        if record.get("id") is None:
            raise ContractViolation(
                f"{table}: a record has no `id`, the primary key: {record!r}"[:300]
            )
        for name, value in record.items():
            if value is None:
                continue
            kind = columns.get(name, "text")
            try:
                record[name] = _coerce(kind, value)
            except (TypeError, ValueError):
                raise ContractViolation(
                    f"{table} id={record['id']!r}: field `{name}` must be {_EXPECTED[kind]} (seed "
                    f"schema: {columns[name]}), got {type(value).__name__} {repr(value)[:80]}."
                ) from None
        return record

    return conform


_ARROW = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),  # JSON text: the warehouse parses it into its JSON type
}


def arrow_batches(
    pages: Iterable[list[dict[str, Any]]], columns: dict[str, str], rows: int = 2048
) -> Iterator[pa.Table]:
    """Conformed records as Arrow tables in seed types (others as text), `rows` rows or 0.2 s.

    dlt writes Arrow items to parquet while it extracts, so normalize only moves the files. While
    dlt waits for a batch it takes no other list's pages, hence the 0.2 s.
    """
    fields = [pa.field(name, _ARROW[kind], nullable=name != "id") for name, kind in columns.items()]
    as_json = [name for name, kind in columns.items() if kind == "json"]
    batch: list[dict[str, Any]] = []
    started = time.monotonic()

    def table() -> pa.Table:
        extra = sorted({name for record in batch for name in record} - columns.keys())
        schema = pa.schema(fields + [pa.field(name, pa.string()) for name in extra])
        return pa.Table.from_pylist(batch, schema=schema)

    for page in pages:
        for record in page:
            for name in as_json:
                if record.get(name) is not None:
                    record[name] = json.dumps(
                        record[name], ensure_ascii=False, separators=(",", ":")
                    )
        batch.extend(page)
        if batch and (len(batch) >= rows or time.monotonic() - started > 0.2):
            yield table()
            batch, started = [], time.monotonic()
    if batch:
        yield table()


def unserved(
    table: str, parent: str, served: set[Any], within: Sequence[Any] | None = None
) -> dict[Any, list[Any]]:
    """Rows of `table` in the warehouse that this sync did not serve, by their parent's id.

    `within`: only rows of these parents. Nothing when the table does not exist yet.
    """
    if within is not None and not within:
        return {}
    by_parent: dict[Any, list[Any]] = defaultdict(list)
    try:
        with dlt.current.pipeline().sql_client() as client:
            sql = f"SELECT id, {parent} FROM {client.make_qualified_table_name(table)}"
            if within is not None:
                sql += f" WHERE {parent} IN ({', '.join(['%s'] * len(within))})"
            with client.execute_query(sql, *(within or ())) as cursor:
                while rows := cursor.fetchmany(10_000):  # a 10x account is 120,000 rows
                    for row_id, parent_id in rows:
                        if row_id not in served:
                            by_parent[parent_id].append(row_id)
    except DatabaseUndefinedRelation:
        return {}
    return by_parent
