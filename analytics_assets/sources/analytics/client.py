"""HTTP for the analytics source: dlt's retrying client, paced on 429s, pages in parallel."""

import functools
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from weakref import WeakKeyDictionary

import requests
from dlt.common import logger
from dlt.sources.helpers.requests import Client, Response
from requests.auth import AuthBase

from analytics_assets.sources.analytics import settings as s
from analytics_assets.sources.analytics.paging import Pacer, ParallelPages, PastTheEnd


class ApiError(Exception):
    """The API cannot be synced as configured; the message names the setting to change."""


RETRIED_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_UNREACHABLE = {
    "the host name does not resolve": (
        "Name or service not known",
        "nodename nor servname",
        "name resolution",
        "Failed to resolve",
    ),
    "the connection was refused": ("Connection refused",),
    "its TLS certificate was not accepted": ("CERTIFICATE_VERIFY_FAILED",),
    "the connection timed out": ("timed out",),
}


def retry_after(response: Response) -> float | None:
    """The server's `Retry-After` in seconds (a number or an HTTP date), when it sends one."""
    value = response.headers.get("Retry-After", "").strip()
    with suppress(ValueError, TypeError):
        return max(0.0, float(value))
    with suppress(ValueError, TypeError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


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
        self.pacer = Pacer(self.concurrency)
        self._attempts: WeakKeyDictionary[Any, int] = WeakKeyDictionary()

    def _retry(self, response: Response | None, error: BaseException | None) -> bool:
        request = response.request if response is not None else getattr(error, "request", None)
        if response is not None and response.status_code in s.SERVER_ERROR_STATUS_CODES:
            cause = f"{response.status_code} {response.reason}"
        elif isinstance(error, RETRIED_ERRORS):
            cause = type(error).__name__
        else:
            return False
        attempt = self._attempts.get(request, 0) + 1 if request is not None else 1
        if request is not None:
            self._attempts[request] = attempt
        if attempt < self.request_max_attempts:
            wait = min(
                self.request_max_retry_delay, self.request_backoff_factor * 2 ** (attempt - 1)
            )
            logger.warning(
                f"GET {getattr(request, 'url', self.base_url)} failed ({cause}): attempt {attempt} "
                f"of {self.request_max_attempts}, trying again in {wait:g} s"
            )
        return True

    def get(self, path: str, params: dict[str, Any] | None = None) -> Response:
        """One GET: 5xx retried by dlt, 429s waited out; what a user can fix names its setting."""
        url, waited, attempt = f"{self.base_url}{path}", 0.0, 0
        while True:
            with self.pacer.slot():
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
                f"{_status_line(response)}. The API rejected the token: set "
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
        causes = (why for why, marks in _UNREACHABLE.items() if any(m in str(error) for m in marks))
        return (
            f"Cannot reach the analytics API at {self.base_url}: "
            f"{next(causes, type(error).__name__)}. Check SOURCES__ANALYTICS__BASE_URL (now "
            f"{self.base_url})."
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
        if response.status_code == 404 and (number > 1 or missing_ok):
            if number == 1:
                return [], None
            invalid_page = False
            with suppress(ValueError, TypeError):
                invalid_page = response.json() == {"detail": "Invalid page."}
            raise PastTheEnd(requests.HTTPError(_status_line(response)), invalid_page)
        response.raise_for_status()
        return checked_list(response, spec.selector)

    def pages(self, lists: Iterable[ListSpec], missing_ok: bool = False) -> Iterator[list[Any]]:
        """The records of every list, as they arrive; at most `concurrency` requests in flight."""
        fetch = functools.partial(self.page, missing_ok=missing_ok)
        return iter(ParallelPages(fetch, lists, self.page_size, self.concurrency))


def _status_line(response: Response) -> str:
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
