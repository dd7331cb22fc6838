"""Pagination, HTTP session and record typing for the analytics source."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dlt
from dlt.common.configuration.specs import RuntimeConfiguration
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.sources.helpers.requests import Client, Response, Session
from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator

from analytics_assets.sources.analytics.settings import (
    PAGE_PARAM,
    PAGE_SIZE_PARAM,
    REQUEST_BACKOFF_FACTOR,
    REQUEST_MAX_ATTEMPTS,
    RETRY_STATUS_CODES,
)


class ContractViolation(ValueError):
    """A record from the API does not fit the seed's schema, so it must not reach the warehouse."""


class ApiResponseError(ValueError):
    """A 2xx response whose body is not the list the endpoint promises."""


class SizedPageNumberPaginator(PageNumberPaginator):
    """The seed's page-number pagination (`page`, `page_size`=`limit`), 1-based, without a total.

    dlt's `page_number` paginator has no `limit`/`limit_param` and stops only on an empty page; this
    one sends the page size and stops on the first short page, saving one request per list.
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
        """A short page is the last one: asking for the next would return an empty list."""
        super().update_state(response, data)
        if data is None or len(data) < self.page_size:
            self._has_next_page = False


def build_session(
    request_max_attempts: int | None = None,
    request_backoff_factor: float | None = None,
    request_timeout: float | None = None,
) -> Session:
    """Build the retrying session once, with config resolved now, before the source exists.

    The seed's policy (429/500/502/503/504, 3 retries, factor 2) is the default; dlt's standard
    `runtime.request_*` settings override it, and `Retry-After` is honoured up to
    `runtime.request_max_retry_delay`.
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
    return client.session


def _runtime(key: str, expected_type: type, default: Any) -> Any:
    value = dlt.config.get(f"runtime.{key}", expected_type)
    return default if value is None else value


def require_list_at(selector: str) -> Callable[..., None]:
    """Fail loudly when a 2xx body lacks the selector's list: dlt would read it as an empty page."""

    def check(response: Response, *args: Any, **kwargs: Any) -> None:
        if not 200 <= response.status_code < 300:
            return  # dlt's raise_for_status hook reports it, with the status and the URL
        where = f"GET {response.url} returned {response.status_code}"
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown content type")
            raise ApiResponseError(f"{where} with a body that is not JSON ({kind}).") from None
        if not isinstance(body, dict) or not isinstance(body.get(selector), list):
            found = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise ApiResponseError(
                f"{where} without a `{selector}` list (found {found}). If the API serves the "
                "list under another key, the data selector in the source config must change."
            )

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
