"""Pagination, HTTP session and record typing for the analytics source."""

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from itertools import count
from types import ModuleType
from typing import TYPE_CHECKING, Any

import dlt
from dlt.common.configuration.specs import RuntimeConfiguration
from dlt.common.json import json as dlt_json
from dlt.common.normalizers.utils import generate_dlt_ids
from dlt.common.schema.typing import C_DLT_ID, C_DLT_LOAD_ID, TTableSchemaColumns
from dlt.sources.helpers.requests import Client, Response, Session
from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from analytics_assets.sources.analytics.settings import (
    COUNT_PATH,
    PAGE_PARAM,
    PAGE_SIZE_PARAM,
    REQUEST_BACKOFF_FACTOR,
    REQUEST_MAX_ATTEMPTS,
    RETRY_STATUS_CODES,
)

if TYPE_CHECKING:
    import pyarrow


def count_page(resource: str) -> None:
    """One more page of `resource` in the run's progress log, next to dlt's rows per resource.

    Called where dlt evaluates the resource (its own threads included), never from our fetch
    threads: dlt's active pipeline is per thread.
    """
    dlt.current.pipeline().collector.update(f"{resource} pages")


class ContractViolation(ValueError):
    """A record from the API does not fit the seed's schema, so it must not reach the warehouse."""


class ApiResponseError(ValueError):
    """A 2xx response whose body is not the list the endpoint promises."""


def json_body(response: Response) -> Any:
    """The parsed body, parsed once: the hook, the paginator and the pager all read it."""
    if "_analytics_json" not in response.__dict__:
        response.__dict__["_analytics_json"] = response.json()
    return response.__dict__["_analytics_json"]


def checked_list(response: Response, selector: str) -> list[Any]:
    """The selector's list from a 2xx body; anything else fails with the URL, never silently."""
    where = f"GET {response.url} returned {response.status_code}"
    try:
        body = json_body(response)
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown content type")
        raise ApiResponseError(f"{where} with a body that is not JSON ({kind}).") from None
    if not isinstance(body, dict) or not isinstance(body.get(selector), list):
        found = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise ApiResponseError(
            f"{where} without a `{selector}` list (found {found}). If the API serves the list "
            "under another key, the source's dialect must change (SOURCES__ANALYTICS__DIALECT=k6 "
            "reads tests from `k6-tests`)."
        )
    return body[selector]


def total_count(response: Response) -> int | None:
    """The list's length when the API tells it (`meta.count`); the seed's contract does not."""
    value: Any = json_body(response)
    for key in COUNT_PATH:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_last_page(page: int, items: list[Any], page_size: int, total: int | None) -> bool:
    """A short page ends the list; so does reaching a known total (no empty page after it)."""
    return len(items) < page_size or (total is not None and page * page_size >= total)


class SizedPageNumberPaginator(PageNumberPaginator):
    """The seed's page-number pagination (`page`, `page_size`=`limit`), 1-based, without a total.

    dlt's `page_number` paginator has no `limit`/`limit_param` and stops only on an empty page; this
    one sends the page size and stops on the first short page (or at `meta.count` when the API
    sends it), saving one request per list.
    """

    def __init__(
        self,
        page_size: int,
        page_size_param: str = PAGE_SIZE_PARAM,
        page_param: str = PAGE_PARAM,
        base_page: int = 1,
    ) -> None:
        super().__init__(base_page=base_page, page_param=page_param, total_path=None)
        if page_size < 1:
            raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
        self.page_size = page_size
        self.page_size_param = page_size_param

    def init_request(self, request: Any) -> None:
        """Send the page size with every page; `update_request` only changes the page number."""
        request.params = {**(request.params or {}), self.page_size_param: self.page_size}
        super().init_request(request)

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        """Stop after this page when it is short or completes the API's total."""
        page = self.current_value
        super().update_state(response, data)
        if data is None or is_last_page(page, data, self.page_size, total_count(response)):
            self._has_next_page = False


@dataclass
class PagedList:
    """One paginated list, yielded in page order, with up to `concurrency` pages in flight.

    dlt's REST client fetches the pages of one endpoint one after another; against a real API
    that costs requests x latency. When the first page carries the total (`meta.count`), the
    remaining pages are known and fetched in parallel. Without a total only a short page tells
    where the list ends, so pages go one at a time: a request past the end would be waste.
    """

    session: Session
    url: str
    resource: str
    selector: str
    page_size: int
    concurrency: int
    auth: AuthBase | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {self.concurrency!r}")

    def fetch(self, page: int) -> tuple[list[Any], int | None]:
        """One page and the API's total, if it sends one."""
        params = {**self.params, PAGE_PARAM: page, PAGE_SIZE_PARAM: self.page_size}
        response = self.session.get(self.url, params=params, auth=self.auth)
        response.raise_for_status()
        return checked_list(response, self.selector), total_count(response)

    def __iter__(self) -> Iterator[list[Any]]:
        for page in self._pages():
            count_page(self.resource)
            yield page

    def _pages(self) -> Iterator[list[Any]]:
        items, total = self.fetch(1)
        yield items
        if is_last_page(1, items, self.page_size, total):
            return
        if total is None:
            for page in count(2):
                items, _ = self.fetch(page)
                yield items
                if is_last_page(page, items, self.page_size, None):
                    return
        last_page = -(-total // self.page_size)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="analytics-pages") as pool:
            in_flight: deque[Future] = deque()
            try:
                for page in range(2, last_page + 1):
                    in_flight.append(pool.submit(self.fetch, page))
                    # twice the workers queued: they stay busy while dlt handles a page
                    if len(in_flight) >= 2 * self.concurrency:
                        yield in_flight.popleft().result()[0]
                while in_flight:
                    yield in_flight.popleft().result()[0]
            finally:
                pool.shutdown(wait=True, cancel_futures=True)


def build_session(
    request_max_attempts: int | None = None,
    request_backoff_factor: float | None = None,
    request_timeout: float | None = None,
    max_connections: int | None = None,
) -> Session:
    """Build the retrying session once, with config resolved now, before the source exists.

    The seed's policy (429/500/502/503/504, 3 retries, factor 2) is the default; dlt's standard
    `runtime.request_*` settings override it, and `Retry-After` is honoured up to
    `runtime.request_max_retry_delay`. With `max_connections`, no more requests than that are
    ever in flight at once to a host, whichever thread or session sends them: the shared
    connection pool blocks.
    """
    attempts = request_max_attempts or _runtime("request_max_attempts", int, REQUEST_MAX_ATTEMPTS)
    factor = request_backoff_factor or _runtime(
        "request_backoff_factor", float, REQUEST_BACKOFF_FACTOR
    )
    client = Client(
        request_timeout=request_timeout
        or _runtime("request_timeout", float, RuntimeConfiguration.request_timeout),
        request_max_attempts=attempts,
        request_backoff_factor=factor,
        request_max_retry_delay=_runtime(
            "request_max_retry_delay", float, RuntimeConfiguration.request_max_retry_delay
        ),
        raise_for_status=False,  # rest_api raises itself, naming the status and the URL
        status_codes=RETRY_STATUS_CODES,
        respect_retry_after_header=True,
    )
    session = client.session
    if max_connections:
        adapter = shared_connection_pool(max_connections)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


@cache
def shared_connection_pool(max_connections: int) -> HTTPAdapter:
    """The process's blocking connection pool of that size (one per host), for every session.

    Each source builds its own session, and a run fetches tests with one source while it
    fetches organizations and projects with another: sharing the pool keeps both, together,
    within `max_connections` requests in flight.
    """
    return HTTPAdapter(pool_maxsize=max_connections, pool_block=True)


def _runtime(key: str, expected_type: type, default: Any) -> Any:
    value = dlt.config.get(f"runtime.{key}", expected_type)
    return default if value is None else value


def require_list_at(selector: str) -> Callable[..., None]:
    """A response hook for dlt's REST client: a 2xx body without the list must not pass as empty."""

    def check(response: Response, *args: Any, **kwargs: Any) -> None:
        if 200 <= response.status_code < 300:
            checked_list(response, selector)
            count_page(selector)
        # other statuses: dlt's raise_for_status hook reports them, with the status and the URL

    return check


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


def conform_to(table: str, columns: TTableSchemaColumns) -> Callable[[dict[str, Any]], Any]:
    """Give every field a type that never changes, so dlt never splits a column into variants.

    Seed fields get the seed's type (a number sent for a string field is stored as text). Fields the
    seed does not list are kept as text: strings as they are, anything else as JSON text. A value
    that cannot take its seed type fails the sync with the table, id, field and value type.
    """
    coercers = {name: _COERCE[column["data_type"]] for name, column in columns.items()}

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
                data_type = columns[name]["data_type"]
                raise ContractViolation(
                    f"{table} id={record['id']!r}: field `{name}` must be {_EXPECTED[data_type]} "
                    f"(seed schema: {data_type}), got {type(value).__name__} {repr(value)[:80]}."
                ) from None
        return record

    return conform


# Rows per Arrow table: dlt's fixed work per item stays small, and memory stays flat.
ARROW_BATCH_ROWS = 2048


@cache
def arrow() -> ModuleType:
    """The pyarrow module, on the system memory pool: jemalloc held buffers through the load."""
    import pyarrow  # here, not at the top: Arrow adds ~0.2 s to an import

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    return pyarrow


def arrow_batches(
    pages: Iterable[list[dict[str, Any]]],
    columns: TTableSchemaColumns,
    load_id: str,
    rows: int = ARROW_BATCH_ROWS,
) -> Iterator["pyarrow.Table"]:
    """Records already conformed to `columns`, as Arrow tables of about `rows` rows.

    Why: dlt writes Arrow items to parquet as they are extracted, so normalize only moves the
    files (12k tests: 0.5 s less than normalizing rows). Fields beyond `columns` are text, JSON
    values travel as JSON text, and each row gets dlt's `_dlt_id` and `_dlt_load_id`, as the
    row normalizer would add them: ghost removal reads the load id, and the tables keep one shape.
    """
    pa = arrow()
    types = {
        "text": pa.string(),
        "bigint": pa.int64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }
    fields = [
        pa.field(name, types[column["data_type"]], nullable=column.get("nullable", True))
        for name, column in columns.items()
    ]
    json_columns = [name for name, column in columns.items() if column["data_type"] == "json"]
    batch: list[dict[str, Any]] = []

    def table() -> "pyarrow.Table":
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
