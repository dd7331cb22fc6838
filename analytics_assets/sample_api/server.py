"""A deterministic, in-repo HTTP server that imitates the load-testing analytics REST API.

Why: the demo, the tests (in-process, ephemeral port) and the benchmarks (separate process)
need an API with real auth, pagination, errors, latency and rate limits that runs offline,
starts in milliseconds and always gives the same answers.

By default it keeps to the seed's bare contract: page-number pages (``page``, ``page_size``)
without a total, and an empty page past the end. Options add what a client must also cope
with: ``meta.count`` (``send_count``), DRF's 404 past the end (``past_end="404"``), a
concurrency cap answering 429 (``concurrency_cap``), injected errors (:class:`Fault`) and
lists that change while they are paged (:class:`ListChange`).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import re
import signal
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from types import FrameType, TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qsl, urlsplit

from analytics_assets.sample_api.data import Account, build_account, build_scaled_account

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
DEFAULT_PAGE_SIZE = 32
DEFAULT_PORT = 8765
DEFAULT_TOKEN = "sample-token"
CONTROL_PREFIX = "/_control/"

ORGANIZATIONS_PATH = "/v3/organizations"
TESTS_PATH = "/loadtests/v2/tests"
_PROJECTS_PATH = re.compile(r"^/v3/organizations/([^/]+)/projects$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_AUTH_SCHEMES = frozenset({"bearer", "token"})
_BY_ID = itemgetter("id")
PAST_END_CHOICES = ("empty", "404")

# Each takes the script size in KiB (0: the short sample scripts).
ACCOUNT_SIZES: dict[str, Callable[[float], Account]] = {
    "demo": lambda kb: build_account(script_kb=kb),
    # 20 lists and 80 requests at page size 32: where a sync's fixed costs weigh most.
    "small": lambda kb: build_scaled_account(18, 150, 1950, script_kb=kb),
    "bench": lambda kb: build_scaled_account(40, 900, 12000, script_kb=kb),
    "bench10x": lambda kb: build_scaled_account(400, 9000, 120000, script_kb=kb),
}


@dataclass
class Fault:
    """An injected error answer, to exercise client retries and error handling.

    Why before auth: a 429 storm or an outage hits every client, authenticated or not.
    ``times`` is decremented on the same object each time the fault is served.
    """

    path_prefix: str
    status: int
    times: int = 1
    retry_after: float | None = None
    body: str | None = None
    content_type: str = "application/json"
    location: str | None = None
    # "status": answer with `status`; "reset": drop the connection with a TCP reset and no
    # answer; "truncate": promise more bytes than are sent, then close; "stall": sleep
    # `stall_seconds`, then answer normally (a read timeout for an impatient client).
    kind: str = "status"
    stall_seconds: float = 0.0
    # Only requests whose query has these values, e.g. {"page": "3"}; any request when None.
    query: dict[str, str] | None = None

    def matches(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether this fault answers a request for `path` with `query`."""
        wanted = self.query or {}
        return path.startswith(self.path_prefix) and all(
            query.get(name) == value for name, value in wanted.items()
        )

    def __post_init__(self) -> None:
        if self.kind not in {"status", "reset", "truncate", "stall"}:
            raise ValueError(f"kind must be status, reset, truncate or stall, got {self.kind!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.times < 0:
            raise ValueError(f"times must be >= 0, got {self.times}")


@dataclass
class ListChange:
    """An edit of a paginated list made while a client pages it, to exercise drift detection.

    Why: a real list gains and loses records between two page requests; a client that pages
    without a snapshot must notice rows that shift across page boundaries.

    The change happens right after the server has built the answer to page ``after_page`` of
    ``path`` (an exact API path: ``/loadtests/v2/tests`` or ``/v3/organizations/{id}/projects``;
    the query, e.g. ``project_id``, does not matter), before that answer is sent, so any
    request handled afterwards sees the changed list. ``delete_id`` removes the record with
    that id (if present) from the account list the path serves; ``insert`` appends a copy of
    the record to it (pages are sorted by id, so a small id lands early and shifts later rows
    forward; the record needs its ``id`` and its parent id, ``organization_id`` or
    ``project_id``). ``times`` is decremented on the same object each time the change is made.
    """

    path: str
    after_page: int = 1
    delete_id: int | None = None
    insert: dict[str, Any] | None = None
    times: int = 1

    def __post_init__(self) -> None:
        if self.path != TESTS_PATH and _PROJECTS_PATH.match(self.path) is None:
            raise ValueError(
                f"path must be {TESTS_PATH} or /v3/organizations/{{id}}/projects, got {self.path!r}"
            )
        if self.after_page < 1:
            raise ValueError(f"after_page must be >= 1, got {self.after_page}")
        if self.times < 0:
            raise ValueError(f"times must be >= 0, got {self.times}")
        if self.delete_id is None and self.insert is None:
            raise ValueError("a list change needs delete_id or insert")
        if self.insert is not None:
            parent = "project_id" if self.path == TESTS_PATH else "organization_id"
            missing = sorted({"id", parent} - set(self.insert))
            if missing:
                raise ValueError(f"insert lacks {missing}")


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the server saw it, so tests can assert on client behaviour.

    ``headers`` keys are lower-cased; the ``authorization`` value keeps only its scheme
    (``"Bearer [redacted]"``) so the presented token never lands in a log. ``received_at``
    is ``time.monotonic()`` on arrival, to check retry back-off.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    received_at: float = 0.0


class _Response(NamedTuple):
    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    action: str = ""  # "reset" or "truncate": how the handler breaks the answer


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Response(status, body, JSON_CONTENT_TYPE, headers)


def _error(
    status: int, message: str, code: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    return _json(status, {"error": {"message": message, "code": code}}, headers)


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class _Index:
    """Sorted and grouped views of an account, so a page costs O(page size), not O(records)."""

    def __init__(self, account: Account) -> None:
        self.organizations = sorted(account.organizations, key=_BY_ID)
        self.organization_ids = {org["id"] for org in self.organizations}
        self.projects_by_org: dict[Any, list[dict[str, Any]]] = {}
        for project in sorted(account.projects, key=_BY_ID):
            self.projects_by_org.setdefault(project["organization_id"], []).append(project)
        self.tests = sorted(account.tests, key=_BY_ID)
        self.tests_by_project: dict[Any, list[dict[str, Any]]] = {}
        for test in self.tests:
            self.tests_by_project.setdefault(test["project_id"], []).append(test)


class SampleApiServer:
    """The sample API, served from a daemon thread on a loopback port.

    Why: one object that tests can start on port 0, reshape (``account``, ``latency``,
    faults) between runs and inspect (``requests``) afterwards.

    Caching: sorted/grouped views of ``account`` are cached and rebuilt automatically when
    ``account`` is replaced or one of its lists is mutated in place (append, remove, del,
    slice assignment, ...: the lists are :class:`~analytics_assets.sample_api.data.RecordList`).
    Editing a record dict in place (e.g. a rename) needs nothing, since pages hold the same
    dicts. Only if you change a record's ``id``, ``organization_id`` or ``project_id`` in
    place, call :meth:`invalidate`.

    ``port`` is the requested port before :meth:`start` and the bound port after it, so a
    stopped server restarts on the same URL.

    Args:
        account: The records served; the demo account if None.
        token: The accepted API token (``Bearer`` or ``Token`` scheme).
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        latency: Seconds each API request sleeps before it is answered.
        max_page_size: Largest accepted ``page_size``; larger ones get 400.
        tests_key: JSON key of the tests list.
        send_count: Add ``meta.count``, the list's total, to paginated lists; the seed's
            contract has none.
        past_end: A page beyond the last: ``"empty"`` answers 200 with an empty list,
            ``"404"`` answers 404 ``{"detail": "Invalid page."}`` as Django REST Framework
            does (page 1 is always valid, even for an empty list).
        concurrency_cap: If set, an API request that arrives while this many are being
            handled gets 429 at once, without the latency sleep.
        cap_retry_after: The ``Retry-After`` seconds of the cap's 429s.
        verbose: Log every request (and tracebacks of 500s) to stderr.
    """

    def __init__(
        self,
        account: Account | None = None,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        max_page_size: int = 1000,
        tests_key: str = "tests",
        send_count: bool = False,
        past_end: str = "empty",
        concurrency_cap: int | None = None,
        cap_retry_after: float = 1.0,
        verbose: bool = False,
    ) -> None:
        if past_end not in PAST_END_CHOICES:
            raise ValueError(f"past_end must be one of {PAST_END_CHOICES}, got {past_end!r}")
        if concurrency_cap is not None and concurrency_cap < 1:
            raise ValueError(f"concurrency_cap must be >= 1 or None, got {concurrency_cap}")
        if cap_retry_after < 0:
            raise ValueError(f"cap_retry_after must be >= 0, got {cap_retry_after}")
        self.account: Account = account if account is not None else build_account()
        self.token = token
        self.host = host
        self.port = port
        self.latency = latency
        self.max_page_size = max_page_size
        self.tests_key = tests_key
        # `meta.count` on paginated lists; off, the server keeps to the seed's bare contract
        self.send_count = send_count
        self.past_end = past_end
        self.concurrency_cap = concurrency_cap
        self.cap_retry_after = cap_retry_after
        self.verbose = verbose
        self.requests: list[RequestRecord] = []
        # the most API requests the server saw in flight at once since the last reset,
        # including those the cap rejected: proves client-side limits
        self.max_in_flight = 0
        # 429s answered by the concurrency cap since the last reset
        self.throttled = 0
        self._in_flight = 0  # API requests seen and not yet answered, rejected ones included
        self._handling = 0  # API requests admitted by the cap and not yet answered
        self._faults: list[Fault] = []
        self._list_changes: list[ListChange] = []
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._index: _Index | None = None
        self._index_key: tuple[Any, ...] | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (available once started)."""
        if self._url is None:
            raise RuntimeError("SampleApiServer.url is only known after start()")
        return self._url

    def start(self) -> SampleApiServer:
        """Bind the socket and serve from a daemon thread; a no-op if already running."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), self)
        self.port = httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{self.port}"
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sample-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and close the socket; idempotent."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            connections = list(self._connections)
            self._connections.clear()
        if httpd is None:
            return
        httpd.shutdown()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> SampleApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults and request log ------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Queue an injected error; the first matching fault with ``times > 0`` wins."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop all injected faults, used up or not."""
        with self._lock:
            self._faults.clear()

    def add_list_change(self, change: ListChange) -> None:
        """Queue an edit of a paginated list; every matching change with ``times > 0`` is made."""
        with self._lock:
            self._list_changes.append(change)

    def request_count(self, path_prefix: str = "") -> int:
        """Count recorded API requests whose path starts with ``path_prefix``."""
        with self._lock:
            return sum(1 for record in self.requests if record.path.startswith(path_prefix))

    def reset_requests(self) -> None:
        """Empty the request log (in place, so held references see it too) and the counters."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self._in_flight
            self.throttled = 0

    def invalidate(self) -> None:
        """Forget cached views; needed only after editing record ids or parent ids in place."""
        with self._index_lock:
            self._index = None
            self._index_key = None

    # -- request handling (called from handler threads) ------------------------------------

    def _register_connection(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _unregister_connection(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _current_index(self) -> _Index:
        # read the lists under the lock that list changes hold, so a view is all old or all new
        with self._index_lock:
            account = self.account
            lists = (account.organizations, account.projects, account.tests)
            versions = tuple(getattr(records, "version", None) for records in lists)
            key = self._index_key
            if (
                self._index is not None
                and key is not None
                and key[0] is account
                and all(old is new for old, new in zip(key[1], lists, strict=True))
                and key[2] == versions
                and None not in versions
            ):
                return self._index
            self._index = _Index(account)
            self._index_key = (account, lists, versions)
            return self._index

    def _take_fault(self, path: str, query: Mapping[str, str]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(path, query):
                    fault.times -= 1
                    return fault
        return None

    def _apply_list_changes(self, path: str, page: int) -> None:
        """Make the changes due after ``page`` of ``path``, atomically for other handlers."""
        with self._lock:
            due = [
                c
                for c in self._list_changes
                if c.times > 0 and (c.path, c.after_page) == (path, page)
            ]
            for change in due:
                change.times -= 1
        if not due:
            return
        with self._index_lock:
            account = self.account
            records = account.tests if path == TESTS_PATH else account.projects
            for change in due:
                if change.delete_id is not None:
                    for position, record in enumerate(records):
                        if record.get("id") == change.delete_id:
                            del records[position]
                            break
                if change.insert is not None:
                    records.append(dict(change.insert))

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() not in _AUTH_SCHEMES:
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _serve_api(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str]
    ) -> _Response:
        """Answer one API request and record it before the client can see the answer."""
        received_at = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            cap = self.concurrency_cap
            rejected = cap is not None and self._handling >= cap
            if rejected:
                self.throttled += 1
            else:
                self._handling += 1
        try:
            if rejected:
                response = _error(
                    429,
                    f"Too many concurrent requests (limit {cap})",
                    "rate_limited",
                    (("Retry-After", _format_retry_after(self.cap_retry_after)),),
                )
            else:
                if self.latency > 0:
                    time.sleep(self.latency)
                response = self._route(method, path, query, headers.get("Authorization"))
        except _ApiError as exc:
            response = _error(exc.status, exc.message, exc.code)
        except Exception:  # a bug or a malformed test record: answer like a real server would
            if self.verbose:
                import traceback

                traceback.print_exc()
            response = _error(500, "Internal server error", "internal_error")
        finally:
            with self._lock:
                self._in_flight -= 1
                if not rejected:
                    self._handling -= 1
        recorded = {name.lower(): value for name, value in headers.items()}
        if "authorization" in recorded:
            scheme = recorded["authorization"].strip().partition(" ")[0]
            recorded["authorization"] = f"{scheme} [redacted]"
        record = RequestRecord(method, path, query, response.status, recorded, received_at)
        with self._lock:
            self.requests.append(record)
        return response

    def _route(
        self, method: str, path: str, query: dict[str, str], authorization: str | None
    ) -> _Response:
        fault = self._take_fault(path, query)
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.stall_seconds)
        elif fault is not None:
            headers: tuple[tuple[str, str], ...] = ()
            if fault.retry_after is not None:
                headers = (("Retry-After", _format_retry_after(fault.retry_after)),)
            if fault.location is not None:
                headers += (("Location", fault.location),)
            if fault.body is None:
                response = _error(fault.status, f"injected {fault.status}", "injected", headers)
            else:
                body = fault.body.encode("utf-8")
                response = _Response(fault.status, body, fault.content_type, headers)
            return response._replace(action="" if fault.kind == "status" else fault.kind)

        if not self._authorized(authorization):
            return _error(401, "Invalid token.", "unauthorized", (("WWW-Authenticate", "Bearer"),))

        projects_match = _PROJECTS_PATH.match(path)
        if path != ORGANIZATIONS_PATH and path != TESTS_PATH and projects_match is None:
            return _error(404, f"Not found: {path}", "not_found")
        if method != "GET":
            return _error(
                405, f"Method {method} not allowed", "method_not_allowed", (("Allow", "GET"),)
            )

        index = self._current_index()
        if path == ORGANIZATIONS_PATH:
            return _json(200, {"organizations": index.organizations})
        if projects_match is not None:
            raw_id = projects_match.group(1)
            org_id = int(raw_id) if _INTEGER.match(raw_id) else None
            if org_id not in index.organization_ids:
                return _error(404, f"Organization {raw_id} not found", "not_found")
            page, page_size = self._page_params(query)
            key, items = "projects", index.projects_by_org.get(org_id, [])
        else:
            page, page_size = self._page_params(query)
            key, items = self.tests_key, index.tests
            if "project_id" in query:
                items = index.tests_by_project.get(_int_param(query, "project_id"), [])
        response = self._page(key, items, page, page_size)
        if response.status == 200:
            self._apply_list_changes(path, page)
        return response

    def _page_params(self, query: dict[str, str]) -> tuple[int, int]:
        page = _int_param(query, "page", 1)
        if page < 1:
            raise _ApiError(400, "Invalid value for 'page': must be >= 1", "invalid_parameter")
        page_size = _int_param(query, "page_size", DEFAULT_PAGE_SIZE)
        if not 1 <= page_size <= self.max_page_size:
            raise _ApiError(
                400,
                f"Invalid value for 'page_size': must be between 1 and {self.max_page_size}",
                "invalid_parameter",
            )
        return page, page_size

    def _page(self, key: str, items: list[dict[str, Any]], page: int, page_size: int) -> _Response:
        start = (page - 1) * page_size
        if page > 1 and start >= len(items) and self.past_end == "404":
            return _json(404, {"detail": "Invalid page."})  # DRF's PageNumberPagination
        body: dict[str, Any] = {key: items[start : start + page_size]}
        if self.send_count:
            body["meta"] = {"count": len(items)}
        return _json(200, body)

    # -- control endpoints (unauthenticated, unrecorded, never faulted, delayed or capped) --

    def _serve_control(self, method: str, path: str, body: bytes) -> _Response:
        if path == "/_control/stats":
            if method != "GET":
                return _error(405, f"Method {method} not allowed", "method_not_allowed")
            with self._lock:
                by_path = Counter(record.path for record in self.requests)
                total = len(self.requests)
                max_in_flight = self.max_in_flight
                throttled = self.throttled
            return _json(
                200,
                {
                    "requests": total,
                    "max_in_flight": max_in_flight,
                    "throttled": throttled,
                    "concurrency_cap": self.concurrency_cap,
                    "by_path": dict(sorted(by_path.items())),
                },
            )
        if path == "/_control/faults":
            if method == "GET":
                with self._lock:
                    faults = [asdict(fault) for fault in self._faults]
                return _json(200, {"faults": faults})
            if method != "POST":
                return _error(405, f"Method {method} not allowed", "method_not_allowed")
            try:
                fault = _fault_from_json(body)
            except (ValueError, TypeError) as exc:
                return _error(400, f"Invalid fault: {exc}", "invalid_fault")
            self.add_fault(fault)
            return _json(201, {"fault": asdict(fault)})
        if path == "/_control/reset":
            if method != "POST":
                return _error(405, f"Method {method} not allowed", "method_not_allowed")
            with self._lock:
                self._faults.clear()
                self._list_changes.clear()
                self.requests.clear()
                self.max_in_flight = self._in_flight
                self.throttled = 0
            return _json(200, {"ok": True})
        return _error(404, f"Not found: {path}", "not_found")


def _int_param(query: dict[str, str], name: str, default: int | None = None) -> int:
    raw = query.get(name)
    if raw is None and default is not None:
        return default
    if raw is None or not _INTEGER.match(raw):
        shown = raw if raw is None or len(raw) <= 40 else raw[:40] + "…"
        raise _ApiError(
            400,
            f"Invalid value for '{name}': expected an integer, got {shown!r}",
            "invalid_parameter",
        )
    return int(raw)


_FAULT_FIELDS = frozenset({"path_prefix", "status", "times", "retry_after", "body", "content_type"})


def _fault_from_json(body: bytes) -> Fault:
    data = json.loads(body.decode("utf-8") or "null")
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    unknown = set(data) - _FAULT_FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    expected: dict[str, tuple[type, ...]] = {
        "path_prefix": (str,),
        "status": (int,),
        "times": (int,),
        "retry_after": (int, float, type(None)),
        "body": (str, type(None)),
        "content_type": (str,),
    }
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, expected[name]):
            raise ValueError(f"{name!r} has the wrong type")
    if "path_prefix" not in data or "status" not in data:
        raise ValueError("'path_prefix' and 'status' are required")
    return Fault(**data)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not block server_close()

    def __init__(self, address: tuple[str, int], app: SampleApiServer) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's socket.getfqdn(): a reverse DNS lookup can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # clients hanging up (or stop() dropping them) is normal
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SampleAnalyticsApi/1.0"
    sys_version = ""
    disable_nagle_algorithm = True  # header and body go out as two writes; don't wait 40 ms

    @property
    def app(self) -> SampleApiServer:
        """The sample API this handler answers for."""
        return cast("_HTTPServer", self.server).app

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.app._register_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.app._unregister_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.app.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # not supported; don't misread the next request
            return b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        app = self.app
        body = self._read_body()
        split = urlsplit(self.path)
        if split.path.startswith(CONTROL_PREFIX):
            response = app._serve_control(self.command, split.path, body)
        else:
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            headers = dict(self.headers.items())
            response = app._serve_api(self.command, split.path, query, headers)
        if response.action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        promised = len(response.body) + (1024 if response.action == "truncate" else 0)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(promised))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        if response.action == "truncate":
            self.close_connection = True


# -- CLI ------------------------------------------------------------------------------------


def _parse_fault(text: str) -> Fault:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"expected PATH_PREFIX:STATUS:TIMES[:RETRY_AFTER], got {text!r}"
        )
    try:
        retry_after = float(parts[3]) if len(parts) == 4 else None
        return Fault(parts[0], int(parts[1]), int(parts[2]), retry_after)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid fault {text!r}: {exc}") from exc


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analytics-sample-api",
        description="Serve the deterministic sample analytics API until SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port to bind, 0 picks a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--token", default=DEFAULT_TOKEN, help="accepted API token (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay per API request (default: 0)"
    )
    parser.add_argument(
        "--size",
        choices=sorted(ACCOUNT_SIZES),
        default="demo",
        help="demo: 4 orgs/68 projects/102 tests; small: 18/150/1950; bench: 40/900/12000; "
        "bench10x: 400/9000/120000",
    )
    parser.add_argument(
        "--script-kb",
        type=float,
        default=0,
        metavar="KIB",
        help="size of each test's script, as real load-test scripts are kilobytes "
        "(default: 0, one short sample script)",
    )
    parser.add_argument(
        "--tests-key", default="tests", help="JSON key of the tests list (default: %(default)s)"
    )
    parser.add_argument(
        "--count",
        action="store_true",
        help="send meta.count, the list's total, on paginated lists; the seed's contract has none",
    )
    parser.add_argument(
        "--past-end",
        choices=PAST_END_CHOICES,
        default="empty",
        help="a page beyond the last: empty answers 200 with an empty list, 404 answers "
        '404 {"detail": "Invalid page."} as Django REST Framework does (default: %(default)s)',
    )
    parser.add_argument(
        "--concurrency-cap",
        type=int,
        metavar="N",
        help="answer 429 at once to an API request that arrives while N are being handled "
        "(default: no cap)",
    )
    parser.add_argument(
        "--cap-retry-after",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="Retry-After of the concurrency cap's 429s (default: %(default)s)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_parse_fault,
        metavar="PATH_PREFIX:STATUS:TIMES[:RETRY_AFTER]",
        help="inject an error answer (repeatable)",
    )
    parser.add_argument(
        "--ready-file", help="write the base URL to this file once the socket is bound"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def _write_ready_file(path: str, url: str) -> None:
    """Write atomically, so a script polling for the file never reads half a URL."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sample-api-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(url)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _server_from_args(args: argparse.Namespace) -> SampleApiServer:
    """Build the (unstarted) server the command line asks for; separate so tests can check it."""
    server = SampleApiServer(
        account=ACCOUNT_SIZES[args.size](args.script_kb),
        token=args.token,
        host=args.host,
        port=args.port,
        latency=args.latency_ms / 1000.0,
        tests_key=args.tests_key,
        send_count=args.count,
        past_end=args.past_end,
        concurrency_cap=args.concurrency_cap,
        cap_retry_after=args.cap_retry_after,
        verbose=args.verbose,
    )
    for fault in args.fault:
        server.add_fault(fault)
    return server


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run the sample API from the command line (``analytics-sample-api``).

    Why a CLI: benchmarks and the demo run the server as a separate process; with
    ``--port 0 --ready-file F`` a script learns the URL without racing for a port.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        server = _server_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    # Handle SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
    # Signal handlers can only be installed from the main thread.
    signals = (signal.SIGINT, signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handlers: dict[int, Any] = {}
    if in_main_thread:
        for signum in signals:
            previous_handlers[signum] = signal.signal(signum, _raise_keyboard_interrupt)
    try:
        try:
            server.start()
        except OSError as exc:
            parser.exit(1, f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
        print(f"sample API listening on {server.url} (token: {server.token})", flush=True)  # noqa: T201
        if args.ready_file:
            _write_ready_file(args.ready_file, server.url)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        server.stop()
