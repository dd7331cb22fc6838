"""Record typing, Arrow batches and the listing record of the analytics source."""

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dlt
import pyarrow as pa
from dlt.common.json import json as dlt_json
from dlt.common.normalizers.utils import generate_dlt_ids
from dlt.common.schema.typing import C_DLT_ID, C_DLT_LOAD_ID

from analytics_assets.sources.analytics.client import ListSpec, Page
from analytics_assets.sources.analytics.settings import SAMPLE_SIZE, SEED_TYPES


def current_load_id() -> str:
    """The id of the load package being extracted: every row it writes carries it."""
    load_id = dlt.current.load_package_state().get("load_id")
    if not load_id:
        raise RuntimeError("no load package is being extracted")
    return str(load_id)


class ContractViolation(ValueError):
    """A record from the API does not fit the seed's schema, so it must not reach the warehouse."""


# How a run listed a table, from least to most trusted for deleting rows it did not serve.
EMPTY, CHANGED, COMPLETE, WHOLE = "empty", "changed while paged", "complete", "whole"
# Load ids kept in a table's listing history at most: a table that keeps coming back empty or
# changed must not grow dlt's state for ever. Rows older than that go at the next complete listing.
HISTORY = 30


class Listing:
    """What this run served of one table, and which rows the ghost removal may delete after it.

    Rows the API no longer serves ("ghosts") go once a listing can be trusted:
    - whole (a list of one request, like the organizations): rows this run did not serve go now;
    - complete (paged, nothing seen to change): rows go when the last two complete listings both
      did not serve them. A row deleted upstream while a list is paged shifts the next row out
      of that listing unseen, and a total can hide it (an insertion elsewhere keeps the count);
    - changed (a row served twice, a total that moved, rows past the end, or a parent list that
      changed: its children's lists were chosen from it) or empty (an outage looks the same as a
      deletion of everything): nothing goes.

    The decision and the history it needs live in the resource's dlt state, which dlt stores in
    the destination with the load, so a failed run changes neither. A resource that only feeds a
    selected child records nothing: it loads nothing this run.
    """

    def __init__(self, table: str, paged: bool = True, parent: "Listing | None" = None) -> None:
        self.table = table
        self.paged = paged
        self.parent = parent
        self.conform = conform_to(table, SEED_TYPES[table])
        self.rows = 0
        self.duplicates: list[Any] = []
        self.drift: list[str] = []
        self._seen: set[Any] = set()

    def served(self, pages: Iterable[Page]) -> Iterator[list[dict[str, Any]]]:
        """Each page's records, typed, without repeats, and counted in the progress log.

        A record served twice in one run means the list shifted while it was paged.
        """
        # pages are counted where dlt evaluates the resource: its active pipeline is per thread,
        # and looking it up resolves its config each time (~10 ms), so once per call
        progress = dlt.current.pipeline().collector
        for page in pages:
            progress.update(f"{self.table} pages")
            yield self._admit([self.conform(record) for record in page.items])

    def _admit(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh = []
        for record in records:
            if record["id"] in self._seen:
                self.duplicates.append(record["id"])
                continue
            self._seen.add(record["id"])
            fresh.append(record)
        self.rows += len(fresh)
        return fresh

    def note_drift(self, spec: ListSpec, reasons: list[str]) -> None:
        """What one list showed of a change while it was paged."""
        self.drift.extend(f"{reason} ({spec.url})" for reason in reasons)

    def status(self) -> tuple[str, str]:
        """How far this listing can be trusted, and why."""
        if self.rows == 0:
            return EMPTY, "the API served no rows, which an outage would look like too"
        if self.duplicates or self.drift:
            served_twice = self.duplicates[:SAMPLE_SIZE]
            reasons = ([f"rows served twice: {served_twice}"] if served_twice else []) + self.drift
            return CHANGED, "the list changed while it was paged: " + "; ".join(reasons[:3])
        if self.parent is not None and self.parent.status()[0] in (CHANGED, EMPTY):
            reason = f"the {self.parent.table} list it was listed from changed while it was paged"
            return CHANGED, reason
        if not self.paged:
            return WHOLE, "the whole list came in one answer"
        return COMPLETE, "a row is removed once two complete listings in a row did not serve it"

    def close(self) -> None:
        """Record this listing, and the rows the ghost removal keeps, in the resource's state.

        Called at the end of each call of the resource; a transformer called once per parent
        page adds to the same record, so the last call's record covers the whole run.
        """
        if not dlt.current.resource().selected:
            return
        state = dlt.current.resource_state(self.table)
        load_id = current_load_id()
        recorded = state.get("listing") or {}
        # the load ids since the last complete listing, as they were before this run
        before = recorded["before"] if recorded.get("load_id") == load_id else state.get("since")
        status, reason = self.status()
        if status == WHOLE:
            keep, since = [load_id], [load_id]
        elif status == COMPLETE:
            keep, since = (None if before is None else [*before, load_id]), [load_id]
        else:
            keep, since = None, (None if before is None else [*before, load_id][-HISTORY:])
        state["since"] = since
        state["listing"] = {
            "load_id": load_id,
            "status": status,
            "reason": reason,
            "rows": self.rows,
            "before": before,
            "keep": keep,
        }


_BOOLS = {"true": True, "false": False}


def _to_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _to_bigint(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise TypeError


def _to_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise TypeError
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _to_json(value: Any) -> Any:
    if isinstance(value, list | dict):
        return value
    raise TypeError


_COERCE: dict[str, Callable[[Any], Any]] = {
    "text": _to_text,
    "bigint": _to_bigint,
    "bool": _to_bool,
    "timestamp": _to_timestamp,
    "json": _to_json,
}
_EXPECTED = {
    "text": "a string",
    "bigint": "an integer",
    "bool": "a boolean",
    "timestamp": "an ISO-8601 timestamp",
    "json": "a JSON array or object",
}


def conform_to(table: str, columns: dict[str, str]) -> Callable[[dict[str, Any]], Any]:
    """Give every field a type that never changes, so dlt never splits a column into variants.

    Seed fields get the seed's type (a number sent for a string field is stored as text). Fields the
    seed does not list are kept as text: strings as they are, anything else as JSON text. A value
    that cannot take its seed type fails the sync with the table, id, field and value type.
    """
    coercers = {name: _COERCE[data_type] for name, data_type in columns.items()}

    def conform(record: dict[str, Any]) -> dict[str, Any]:
        if record.get("id") is None:
            raise ContractViolation(
                f"{table}: a record has no `id`, the primary key: {record!r}"[:300]
            )
        for name, value in record.items():
            if value is None:
                continue
            coerce = coercers.get(name, _to_text)
            try:
                record[name] = coerce(value)
            except (TypeError, ValueError):
                data_type = columns[name]
                raise ContractViolation(
                    f"{table} id={record['id']!r}: field `{name}` must be {_EXPECTED[data_type]} "
                    f"(seed schema: {data_type}), got {type(value).__name__} {repr(value)[:80]}."
                ) from None
        return record

    return conform


# Rows per Arrow table: dlt's fixed work per item stays small, and memory stays flat.
ARROW_BATCH_ROWS = 2048


@cache
def use_system_memory_pool() -> None:
    """Arrow on the system allocator for this process.

    With jemalloc, Arrow held dlt's parquet buffers through the load, and the peak grew with the
    account.
    """
    pa.set_memory_pool(pa.system_memory_pool())


def arrow_batches(
    pages: Iterable[list[dict[str, Any]]],
    columns: dict[str, str],
    load_id: str,
    rows: int = ARROW_BATCH_ROWS,
) -> Iterator[pa.Table]:
    """Records already conformed to `columns`, as Arrow tables of about `rows` rows.

    Why: dlt writes Arrow items to parquet as they are extracted, so normalize only moves the
    files (12k tests: 0.5 s less than normalizing rows). Fields beyond `columns` are text, JSON
    values travel as JSON text, and each row gets dlt's `_dlt_id` and `_dlt_load_id`, as the
    row normalizer would add them: ghost removal reads the load id, and the tables keep one shape.
    """
    types = {
        "text": pa.string(),
        "bigint": pa.int64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }
    fields = [
        pa.field(name, types[data_type], nullable=name != "id")
        for name, data_type in columns.items()
    ]
    json_columns = [name for name, data_type in columns.items() if data_type == "json"]
    batch: list[dict[str, Any]] = []

    def table() -> pa.Table:
        extra = sorted({name for record in batch for name in record} - columns.keys())
        schema = pa.schema(fields + [pa.field(name, pa.string()) for name in extra])
        data = pa.Table.from_pylist(batch, schema=schema)
        dlt_columns = {
            C_DLT_LOAD_ID: pa.repeat(pa.scalar(load_id), data.num_rows),
            C_DLT_ID: pa.array(generate_dlt_ids(data.num_rows), pa.string()),
        }
        for name, values in dlt_columns.items():
            data = data.append_column(pa.field(name, pa.string(), nullable=False), values)
        return data

    for page in pages:
        for record in page:
            for name in json_columns:
                if record.get(name) is not None:
                    record[name] = dlt_json.dumps(record[name])
        batch.extend(page)
        if len(batch) >= rows:
            yield table()
            batch = []
    if batch:
        yield table()


class DropJsonHintNotice(logging.Filter):
    """Drops dlt's warning, on every Arrow item of `resource`, that a hint beat the Arrow type.

    The `json` hint is meant to win: JSON columns travel as text and the warehouse parses them.
    """

    def __init__(self, resource: str) -> None:
        super().__init__()
        self.prefix = f"In resource: {resource}, when merging arrow schema with dlt schema"

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every other record."""
        return not record.getMessage().startswith(self.prefix)
