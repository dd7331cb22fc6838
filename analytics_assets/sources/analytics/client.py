"""HTTP for the analytics source: dlt's retrying session, paced on 429s, and parallel pages.

dlt's REST client fetches the pages of one endpoint one after another (dlt-hub/dlt#2844), which
costs requests x latency; `ApiClient.pages` keeps up to `concurrency` pages in flight across
every list it is given, with or without a total, and ends each list at its first short page.
"""

import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from dlt.sources.helpers.requests import Client, Response, Session
from requests import PreparedRequest
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from analytics_assets.sources.analytics.settings import (
    COUNT_PATH,
    PAGE_PARAM,
    PAGE_SIZE_PARAM,
    RATE_LIMIT_MAX_WAIT_SETTING,
    SERVER_ERROR_STATUS_CODES,
)


class ApiError(Exception):
    """The API cannot be synced as configured; the message names the setting to change."""


class ApiUnreachable(ApiError):
    """No connection to the base URL (refused, DNS, TLS), after dlt's retries."""


class TokenRejected(ApiError):
    """The API answered 401 or 403: the token is wrong, expired or lacks access."""


class ApiResponseError(ApiError, ValueError):
    """A 2xx response whose body is not the list the endpoint promises."""


class RateLimitExceeded(ApiError):
    """The API kept answering 429 for longer than the sync may wait."""


class AdaptiveLimit:
    """How many requests may be in flight: `ceiling` at most, fewer while the API pushes back.

    Additive increase, multiplicative decrease: a 429 halves the limit (once per round of
    requests: the 429s of requests sent before the cut do not cut again); once the wait the
    server asked for has passed, each `limit` answers in a row without a 429 add one back, up
    to `ceiling`. Probing sooner would only meet the same 429 again.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self._in_flight = 0
        self._successes = 0
        self._round = 0
        self._calm_from = 0.0
        self._changed = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[int]:
        """Wait for room, hold it while the request is in flight; yields the request's round."""
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
            sent_in = self._round
        try:
            yield sent_in
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def succeeded(self) -> None:
        """One more answer that was not a 429."""
        with self._changed:
            if self.limit >= self.ceiling or time.monotonic() < self._calm_from:
                return
            self._successes += 1
            if self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self._changed.notify_all()

    def throttled(self, sent_in: int, wait: float) -> None:
        """A 429 for a request sent in round `sent_in`, asking to wait `wait` seconds."""
        with self._changed:
            if sent_in == self._round:
                self.limit = max(1, self.limit // 2)
                self._round += 1
            self._successes = 0
            self._calm_from = max(self._calm_from, time.monotonic() + wait)


def retry_after(response: Response) -> float | None:
    """The server's `Retry-After`, in seconds (a number or an HTTP date), when it sends one."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class PacedAdapter(HTTPAdapter):
    """Sends through an `AdaptiveLimit` and waits out 429s itself, then sends again.

    A 429 is the server pacing us, not a failure: it does not use up dlt's retry budget, which
    is for 5xx and connection errors (dlt counts a 429 like a 5xx). The waits of one request
    add up to at most `max_wait` seconds; past that the sync fails naming the setting.
    """

    def __init__(
        self, limit: AdaptiveLimit, max_wait: float, max_delay: float, backoff_factor: float
    ) -> None:
        super().__init__(pool_maxsize=limit.ceiling)
        self.limit = limit
        self.max_wait = max_wait
        self.max_delay = max_delay
        self.backoff_factor = backoff_factor

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        """Send, and send again after each 429's `Retry-After`, within `max_wait` in all."""
        waited, attempt = 0.0, 0
        while True:
            with self.limit.slot() as sent_in:
                response = super().send(request, *args, **kwargs)
                if not kwargs.get("stream"):
                    response.content  # noqa: B018 - the body too, while the slot is held
            if response.status_code != 429:
                self.limit.succeeded()
                return response
            delay = retry_after(response)
            if delay is None:
                delay = self.backoff_factor * 2**attempt
            delay = min(delay, self.max_delay)
            self.limit.throttled(sent_in, delay)
            if waited + delay > self.max_wait:
                raise RateLimitExceeded(
                    f"{request.method} {request.url} answered 429 (rate limited) for "
                    f"{waited:.1f} s, longer than the sync waits: "
                    f"{RATE_LIMIT_MAX_WAIT_SETTING}={self.max_wait:g} s. Raise it, or lower "
                    "SOURCES__ANALYTICS__CONCURRENCY."
                )
            response.close()
            time.sleep(delay)
            waited, attempt = waited + delay, attempt + 1


def build_session(
    concurrency: int,
    request_max_attempts: int,
    request_backoff_factor: float,
    request_timeout: float,
    request_max_retry_delay: float,
    rate_limit_max_wait: float,
) -> Session:
    """The retrying session of dlt for the seed's policy, paced by one `AdaptiveLimit`.

    dlt retries 500, 502, 503 and 504 and connection errors (3 retries, factor 2 by default);
    the adapter handles 429s and keeps at most `concurrency` requests in flight, whichever
    thread sends them.
    """
    client = Client(
        request_timeout=request_timeout,
        request_max_attempts=request_max_attempts,
        request_backoff_factor=request_backoff_factor,
        request_max_retry_delay=request_max_retry_delay,
        raise_for_status=False,  # the pages raise themselves, naming the status and the URL
        status_codes=SERVER_ERROR_STATUS_CODES,
        respect_retry_after_header=True,
    )
    session = client.session
    adapter = PacedAdapter(
        AdaptiveLimit(concurrency),
        max_wait=rate_limit_max_wait,
        max_delay=request_max_retry_delay,
        backoff_factor=request_backoff_factor,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _connection_failure(error: requests.ConnectionError) -> str:
    """The root cause of a failed connection in a few words (urllib3 nests it deeply)."""
    text = str(error)
    for marker, meaning in (
        ("Name or service not known", "the host name does not resolve"),
        ("nodename nor servname", "the host name does not resolve"),
        ("Temporary failure in name resolution", "the host name does not resolve"),
        ("Failed to resolve", "the host name does not resolve"),
        ("Connection refused", "the connection was refused"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate was not accepted"),
        ("timed out", "the connection timed out"),
    ):
        if marker in text:
            return meaning
    return type(error).__name__


def json_body(response: Response) -> Any:
    """The parsed body, parsed once."""
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


@dataclass(frozen=True)
class ListSpec:
    """One list to page through: its URL and fixed query parameters."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page as the API served it: its items and, when sent, the list's total."""

    number: int
    items: list[Any]
    total: int | None


class PastTheEnd(Exception):
    """A 404 for a page after the first: the list may end before it (Django REST Framework).

    `invalid_page` when the body says so, as DRF's page-number pagination answers past the end.
    """

    def __init__(self, error: requests.HTTPError, invalid_page: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.invalid_page = invalid_page


@dataclass
class _Paging:
    """Where one list stands: pages asked for, pages answered, where it ends once known.

    Pages are handed on as they arrive, in any order, so one page waiting out a 429 holds up
    nothing else. Where the list ends is decided in page order: the first page after the run
    of full pages that is short (or a 404) is the end; an error there fails the sync, an error
    on a page past the end is nobody's concern.
    """

    spec: ListSpec
    page_size: int
    asked: int = 0
    full_prefix: int = 0  # pages 1..full_prefix came back full
    highest_full: int = 0
    end: int | None = None  # the last page, once known; every page up to it was answered
    total: int | None = None
    rows: int = 0
    # pages answered past the run of full ones: their number of rows, or their error. Only
    # counts are kept: the pages themselves are handed on, and a list can be long.
    answers: dict[int, int | BaseException] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)

    @property
    def promised_last(self) -> int | None:
        """The last page a total promises, while the total holds still."""
        return None if self.total is None else max(1, math.ceil(self.total / self.page_size))

    def wants(self, window: int) -> bool | None:
        """Whether to ask for the next page: True if surely needed, None if a guess ahead."""
        if self.end is not None:
            return False
        last = self.promised_last
        if self.asked == 0 or (last is not None and self.asked < last):
            return True
        if last is None and self.full_prefix == self.asked:
            return True  # every page asked for came back full: the next one exists
        if last is None and self.highest_full >= 1 and self.asked < self.highest_full + window:
            return None
        return False

    def receive(self, number: int, answer: Page | BaseException) -> Page | None:
        """Take one answer; returns the page to hand on, if it has rows, or raises its error."""
        beyond_end = self.end is not None and number > self.end
        if isinstance(answer, Page) and not beyond_end:
            if number == 1:
                self.total = answer.total
            elif self.total is not None and answer.total != self.total:
                self.drift.append(f"the total went from {self.total} to {answer.total}")
                self.total = None  # page on until a short page, as without a total
            if len(answer.items) >= self.page_size:
                self.highest_full = max(self.highest_full, number)
            self.rows += len(answer.items)
        self.answers[number] = len(answer.items) if isinstance(answer, Page) else answer
        self._settle()
        if isinstance(answer, Page) and answer.items and not beyond_end:
            return answer
        return None

    def _settle(self) -> None:
        """Move the run of full pages on; at its first other page, the list ends or fails."""
        while self.end is None and self.full_prefix + 1 in self.answers:
            number = self.full_prefix + 1
            answer = self.answers.pop(number)
            if isinstance(answer, PastTheEnd):
                if number <= (self.promised_last or 0):
                    if not answer.invalid_page:
                        raise answer.error  # the total says this page exists: a real 404
                    self.drift.append(f"page {number} was gone, {self.total} rows promised")
                self.end = number - 1  # every page before it was full
            elif isinstance(answer, BaseException):
                raise answer
            elif answer < self.page_size or number == self.promised_last:
                self.end = number
            else:
                self.full_prefix = number

    def done(self) -> bool:
        """Whether the list has ended: pages still on their way are past its end."""
        return self.end is not None

    def close(self) -> list[str]:
        """The list's drift: a total it did not keep, rows found on pages past its end."""
        if self.total is not None and self.rows != self.total:
            self.drift.append(f"{self.rows} rows served, {self.total} promised")
        for number, answer in sorted(self.answers.items()):
            if isinstance(answer, int) and answer and number > (self.end or 0):
                self.drift.append(f"page {number}, past the end, had {answer} rows")
        self.answers.clear()
        return self.drift


_DONE = object()


class _Lists:
    """The lists one `ApiClient.pages` call pages through: what was asked, answered, handed on.

    An answer is taken, and the next page asked for, in the thread that fetched it (under one
    lock), so no request waits until dlt comes back to the generator; the generator only hands
    the pages on, or the first error of a page the sync needs.
    """

    def __init__(
        self,
        client: "ApiClient",
        todo: Iterator[ListSpec],
        selector: str,
        on_list_done: Callable[[ListSpec, list[str]], None] | None,
        pool: ThreadPoolExecutor,
    ) -> None:
        self._client = client
        self._todo = todo
        self._selector = selector
        self._on_list_done = on_list_done
        self._pool = pool
        self._active: list[_Paging] = []
        self._in_flight: dict[Future[Page], tuple[_Paging, int]] = {}
        self._arrived: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.RLock()  # a callback may run at once, in the thread that asks
        self._stopped = False
        self._exhausted = False  # every list of `todo` was started

    def arrivals(self) -> Iterator[Page]:
        """The pages as they arrive, until every list has ended."""
        with self._lock:
            self._ask()
        while (item := self._arrived.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
            with self._lock:  # a page was taken: room to ask for more
                self._ask()

    def stop(self) -> None:
        """Ask for nothing more."""
        with self._lock:
            self._stopped = True

    def _ask(self) -> None:
        # pages that dlt has not taken yet are bounded too: fetching never runs far ahead of it
        concurrency = self._client.concurrency
        while (
            not self._stopped
            and len(self._in_flight) < concurrency
            and self._arrived.qsize() < 2 * concurrency
        ):
            paging = self._next_to_ask()
            if paging is None:
                break
            paging.asked += 1
            spec, number = paging.spec, paging.asked
            future = self._pool.submit(self._client.page, spec, number, self._selector)
            self._in_flight[future] = (paging, number)
            future.add_done_callback(self._answered)
        if not self._active and self._exhausted and not self._stopped:
            self._stopped = True
            self._arrived.put(_DONE)

    def _next_to_ask(self) -> "_Paging | None":
        window = self._client.concurrency
        for paging in self._active:
            if paging.wants(window):
                return paging
        spec = None if self._exhausted else next(self._todo, None)
        if spec is not None:
            self._active.append(_Paging(spec, self._client.page_size))
            return self._active[-1]
        self._exhausted = True
        for paging in self._active:
            if paging.wants(window) is None:
                return paging
        return None

    def _answered(self, future: Future[Page]) -> None:
        with self._lock:
            paging, number = self._in_flight.pop(future)
            ended = not any(active is paging for active in self._active)
            if self._stopped or future.cancelled() or ended:
                return  # a page past the end of a list already handed on: discarded
            try:
                page = paging.receive(number, future.exception() or future.result())
                if paging.done():
                    self._active.remove(paging)
                    drift = paging.close()
                    if self._on_list_done is not None:
                        self._on_list_done(paging.spec, drift)
                if page is not None:  # after the list's drift is noted: it may be the last page
                    self._arrived.put(page)
                self._ask()
            except BaseException as error:  # a page the sync needs failed: so does the sync
                # raised here, the error would only be logged by the pool: hand it to the sync
                self._stopped = True
                self._arrived.put(error)


@dataclass
class ApiClient:
    """GETs against the analytics API: one list body, or many paged lists at once.

    Pages of a list are asked for up to `concurrency` pages ahead of the last full one; the
    first short page (or a 404 after full pages) ends the list. Pages asked for beyond the end
    are not waited for, and what they answer is discarded: empty, a 404, an error. Rows on one
    mean the list grew while it was paged: they are handed on when they arrive before the end is
    known, and noted as drift either way. With a total (`meta.count`), exactly the pages it
    promises are asked for.
    """

    session: Session
    base_url: str
    auth: AuthBase
    page_size: int
    concurrency: int

    def get_list(self, path: str, selector: str) -> list[Any]:
        """An unpaginated list."""
        response = self._get(f"{self.base_url}{path}")
        response.raise_for_status()
        return checked_list(response, selector)

    def _get(self, url: str, params: dict[str, Any] | None = None) -> Response:
        """One GET, retried by dlt; what a user can fix is named with its setting."""
        try:
            response = self.session.get(url, params=params, auth=self.auth)
        except requests.ConnectionError as e:
            raise ApiUnreachable(
                f"Cannot reach the analytics API at {self.base_url}: {_connection_failure(e)}. "
                f"Check SOURCES__ANALYTICS__BASE_URL (now {self.base_url})."
            ) from e
        if response.status_code in (401, 403):
            raise TokenRejected(
                f"{response.status_code} Client Error: {response.reason} for url: "
                f"{response.url}. The API rejected the token: set SOURCES__ANALYTICS__API_TOKEN, "
                "or api_token under [sources.analytics] in .dlt/secrets.toml."
            )
        return response

    def list_spec(self, path: str, **params: Any) -> ListSpec:
        """A paged list of this API at `path`."""
        return ListSpec(f"{self.base_url}{path}", params)

    def pages(
        self,
        lists: Iterable[ListSpec],
        selector: str,
        on_list_done: Callable[[ListSpec, list[str]], None] | None = None,
    ) -> Iterator[Page]:
        """Every page of every list, as they arrive; `on_list_done` gets each list's drift.

        At most `concurrency` requests are asked for at once: pages known to exist first, then
        the first page of the next list, then pages ahead of a list without a total.
        """
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="analytics-pages")
        paging = _Lists(self, iter(lists), selector, on_list_done, pool)
        try:
            yield from paging.arrivals()
        finally:
            paging.stop()
            # a page still on its way is past the end of its list (or the sync failed): it
            # finishes on its own, and nothing waits for it
            pool.shutdown(wait=False, cancel_futures=True)

    def page(self, spec: ListSpec, number: int, selector: str) -> Page:
        """One page of a list; past the first, a 404 raises `PastTheEnd`."""
        params = {**spec.params, PAGE_PARAM: number, PAGE_SIZE_PARAM: self.page_size}
        response = self._get(spec.url, params)
        try:
            response.raise_for_status()
        except requests.HTTPError as error:
            if response.status_code != 404 or number == 1:
                raise
            try:
                invalid_page = json_body(response) == {"detail": "Invalid page."}
            except ValueError:
                invalid_page = False
            raise PastTheEnd(error, invalid_page) from error
        return Page(number, checked_list(response, selector), total_count(response))
