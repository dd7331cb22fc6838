"""The analytics API's client (dlt's retrying `Client`, 429 pacing, errors) and record typing."""

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pyarrow as pa
import requests
from dlt.common import logger
from dlt.sources.helpers.requests import Client, Response
from requests.auth import AuthBase
from requests.exceptions import ChunkedEncodingError

from analytics_assets.sources.analytics import settings as s
from analytics_assets.sources.analytics.paging import Pacer, ParallelPages, PastTheEnd


class ApiError(Exception):
    """The API cannot be synced as configured; the message names the setting to change."""


class SettingError(ValueError):
    """Settings that cannot work; raised before any request, naming each variable to change."""


class ContractViolation(ValueError):
    """A record from the API does not fit the seed's schema, so it must not reach the warehouse."""


RETRIED_ERRORS = (requests.ConnectionError, requests.Timeout, ChunkedEncodingError)
UNREACHABLE = {  # what a connection error says, and what it means to a user
    "Connection refused": "the connection was refused",
    "Name or service not known": "the host name does not resolve",
    "nodename nor servname": "the host name does not resolve",
    "Failed to resolve": "the host name does not resolve",
    "CERTIFICATE_VERIFY_FAILED": "its TLS certificate was not accepted",
    "timed out": "the connection timed out",
}


@dataclass(frozen=True)
class ListSpec:
    """One list to page through: its path, its selector and fixed query parameters."""

    path: str
    selector: str
    params: tuple[tuple[str, Any], ...] = ()


@dataclass
class ApiClient:
    """GETs against the analytics API, within the settings `api_client()` checked."""

    base_url: str
    auth: AuthBase
    tests_key: str  # the dialect's selector of the tests list
    page_size: int
    concurrency: int
    rate_limit_max_wait: float
    request_timeout: float
    request_max_attempts: int
    request_backoff_factor: float
    request_max_retry_delay: float

    def __post_init__(self) -> None:
        # dlt retries the seed's 5xx and connection errors; a 429 is paced here, outside that budget
        self.http = Client(
            request_timeout=self.request_timeout,
            request_max_attempts=self.request_max_attempts,
            request_backoff_factor=self.request_backoff_factor,
            request_max_retry_delay=self.request_max_retry_delay,
            raise_for_status=False,
            status_codes=(),
            exceptions=(),
            retry_condition=self._retry,  # decides as dlt would, and logs each retry
        )
        self.pacer, self._attempts = Pacer(self.concurrency), threading.local()

    def _retry(self, response: Response | None, error: BaseException | None) -> bool:
        if response is not None and response.status_code in s.SERVER_ERROR_STATUS_CODES:
            cause, url = f"{response.status_code} {response.reason}", response.url
        elif isinstance(error, RETRIED_ERRORS):
            cause, url = type(error).__name__, getattr(error.request, "url", self.base_url)
        else:
            return False
        attempt = self._attempts.n = self._attempts.n + 1  # this thread's request, in dlt's loop
        if attempt < self.request_max_attempts:  # dlt's wait: factor x 2^(n-1), capped
            wait = min(self.request_max_retry_delay, self.request_backoff_factor * 2**attempt / 2)
            logger.warning(
                f"GET {url} failed ({cause}): attempt {attempt} of {self.request_max_attempts}, "
                f"trying again in {wait:g} s"
            )
        return True

    def get(self, path: str, params: dict[str, Any] | None = None) -> Response:
        """One GET: 5xx retried by dlt, 429s waited out; what a user can fix names its setting."""
        url, waited, attempt = f"{self.base_url}{path}", 0.0, 0
        while True:
            with self.pacer.slot():
                self._attempts.n = 0
                try:
                    response = self.http.session.get(url, params=params, auth=self.auth)
                except requests.RequestException as error:
                    raise ApiError(self._unreachable(url, error)) from None
                self.pacer.answered(response.status_code == 429)
            if response.status_code != 429:
                break
            delay = retry_after(response)
            delay = self.request_backoff_factor * 2**attempt if delay is None else delay
            delay = min(delay, self.request_max_retry_delay)
            if waited + delay > self.rate_limit_max_wait:
                raise ApiError(
                    f"GET {response.url} answered 429 (rate limited) for {waited:.1f} s, longer "
                    "than the sync waits: SOURCES__ANALYTICS__RATE_LIMIT_MAX_WAIT="
                    f"{self.rate_limit_max_wait:g} s. Raise it, or lower "
                    "SOURCES__ANALYTICS__CONCURRENCY."
                )
            if delay > 1:
                logger.warning(f"GET {response.url} answered 429: waiting {delay:.1f} s to retry")
            response.close()
            time.sleep(delay)
            waited, attempt = waited + delay, attempt + 1
        if response.status_code in (401, 403):
            raise ApiError(
                f"{status_line(response)}. The API rejected the token: set "
                "SOURCES__ANALYTICS__API_TOKEN, or api_token under [sources.analytics] in "
                ".dlt/secrets.toml."
            )
        return response

    def _unreachable(self, url: str, error: requests.RequestException) -> str:
        if isinstance(error, requests.Timeout) and not isinstance(error, requests.ConnectTimeout):
            return (
                f"The analytics API did not answer GET {url} within RUNTIME__REQUEST_TIMEOUT="
                f"{self.request_timeout:g} s, {self.request_max_attempts} times. Raise "
                "RUNTIME__REQUEST_TIMEOUT or RUNTIME__REQUEST_MAX_ATTEMPTS."
            )
        why = next((w for mark, w in UNREACHABLE.items() if mark in str(error)), None)
        return (
            f"Cannot reach the analytics API at {self.base_url}: {why or type(error).__name__}. "
            f"Check SOURCES__ANALYTICS__BASE_URL (now {self.base_url})."
        )

    def get_list(self, path: str, selector: str) -> list[dict[str, Any]]:
        """An unpaginated list."""
        response = self.get(path)
        response.raise_for_status()
        return checked_list(response, selector)[0]

    def page(self, spec: ListSpec, number: int, missing_ok: bool = False) -> Any:
        """One page: its items and the list's total, if sent; a 404 past page 1 is `PastTheEnd`.

        `missing_ok`: a 404 on page 1 is an empty list (a parent deleted since it was listed).
        """
        params = {**dict(spec.params), s.PAGE_PARAM: number, s.PAGE_SIZE_PARAM: self.page_size}
        response = self.get(spec.path, params)
        if response.status_code == 404 and number == 1 and missing_ok:
            return [], None
        if response.status_code == 404 and number > 1:
            invalid_page = False
            with suppress(ValueError):
                invalid_page = response.json() == {"detail": "Invalid page."}
            raise PastTheEnd(requests.HTTPError(status_line(response)), invalid_page)
        response.raise_for_status()
        return checked_list(response, spec.selector)

    def pages(self, lists: Iterable[ListSpec], missing_ok: bool = False) -> Iterator[list[Any]]:
        """The records of every list, as they arrive; at most `concurrency` requests in flight."""
        fetch = functools.partial(self.page, missing_ok=missing_ok)
        return iter(ParallelPages(fetch, lists, self.page_size, self.concurrency))


def retry_after(response: Response) -> float | None:
    """The server's `Retry-After` in seconds (a number or an HTTP date), when it sends one."""
    value = response.headers.get("Retry-After", "").strip()
    with suppress(ValueError, TypeError):
        return max(0.0, float(value))
    with suppress(ValueError, TypeError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def status_line(response: Response) -> str:
    """The words of requests for an HTTP error, as `raise_for_status()` would say them."""
    kind = "Client" if response.status_code < 500 else "Server"
    return f"{response.status_code} {kind} Error: {response.reason} for url: {response.url}"


def checked_list(response: Response, selector: str) -> tuple[list[dict[str, Any]], int | None]:
    """The selector's list (and `meta.count`) from a 2xx body; anything else fails, naming it."""
    where = f"GET {response.url} returned {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown content type")
        raise ApiError(f"{where} with a body that is not JSON ({kind}).") from None
    if not isinstance(body, dict) or not isinstance(body.get(selector), list):
        found = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise ApiError(
            f"{where} without a `{selector}` list (found {found}). If the API serves the list "
            "under another key, the source's dialect must change (SOURCES__ANALYTICS__DIALECT=k6 "
            "reads tests from `k6-tests`)."
        )
    total: Any = body
    for key in s.COUNT_PATH:
        total = total.get(key) if isinstance(total, dict) else None
    return body[selector], total if type(total) is int else None


BOOLS = {"true": True, "false": False}
TYPES = {  # each seed type: what it accepts (for the error naming a bad value), its Arrow type
    "text": ("a string", pa.string()),
    "bigint": ("an integer", pa.int64()),
    "bool": ("a boolean", pa.bool_()),
    "timestamp": ("an ISO-8601 timestamp", pa.timestamp("us", tz="UTC")),
    "json": ("a JSON array or object", pa.string()),  # JSON text: the warehouse parses it
}
COMPACT_JSON: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}


def coerce(kind: str, value: Any) -> Any:
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
        case "bool", str() if value.strip().lower() in BOOLS:
            return BOOLS[value.strip().lower()]
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
            if value is not None:
                try:
                    record[name] = coerce(columns.get(name, "text"), value)
                except (TypeError, ValueError):
                    raise ContractViolation(
                        f"{table} id={record['id']!r}: field `{name}` must be "
                        f"{TYPES[columns[name]][0]} (seed schema: {columns[name]}), got "
                        f"{type(value).__name__} {repr(value)[:80]}."
                    ) from None
        return record

    return conform


def to_arrow(records: list[dict[str, Any]], columns: dict[str, str]) -> pa.Table:
    """Conformed records as one Arrow table: seed columns in seed types, the others as text.

    dlt writes Arrow tables to parquet as it extracts, so normalize only moves files. Built a
    column at a time: for kilobyte scripts, a third of the time `from_pylist` takes.
    """
    extra = sorted({name for record in records for name in record} - columns.keys())
    fields, arrays = [], []
    for name, kind in {**columns, **dict.fromkeys(extra, "text")}.items():
        values = [record.get(name) for record in records]
        if kind == "json":
            values = [None if v is None else json.dumps(v, **COMPACT_JSON) for v in values]
        fields.append(pa.field(name, TYPES[kind][1], nullable=name != "id"))
        arrays.append(pa.array(values, TYPES[kind][1]))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
