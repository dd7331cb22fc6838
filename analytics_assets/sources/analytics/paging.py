"""Many lists' pages in parallel, with or without a total, and 429 pacing; no HTTP here.

dlt fetches the pages of an endpoint one after another (dlt-hub/dlt#2844): requests x latency.
"""

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from queue import Empty, Queue, SimpleQueue
from typing import Any

READY_ROWS = 256  # rows per request in flight that may wait for the reader: 8 pages of 32


@dataclass
class PastTheEnd(Exception):
    """A 404 for a page after the first; `invalid_page` if its body is DRF's "Invalid page."."""

    error: Exception
    invalid_page: bool


@dataclass
class ListPaging:
    """One list's pages, asked for and answered in any order.

    It ends at its first page that is not full (short, empty, a 404 past page 1, or the last its
    total promises); an error before that fails the sync, one after it is dropped. Without a
    total, pages go up to `ahead` past the highest full one: a page held up holds up no other.
    """

    page_size: int
    asked: int = 0  # pages 1..asked were asked for
    full: int = 0  # pages 1..full came back full
    end: int | None = None  # the last page, once every page up to it is answered
    total: int | None = None  # the list's length, when page 1 tells it
    answers: dict[int, int | BaseException] = field(default_factory=dict)  # rows, or the error

    @property
    def out(self) -> int:
        """Pages asked for and not answered yet."""
        return self.asked - self.full - len(self.answers)

    @property
    def promised(self) -> int | None:
        """The last page the total promises."""
        return None if self.total is None else max(1, -(-self.total // self.page_size))

    def next_page(self, ahead: int) -> tuple[int, bool] | None:
        """The next page to ask for and whether it is surely needed, or None for none now."""
        page = self.asked + 1
        if self.end is not None or (self.promised is not None and page > self.promised):
            return None
        top = max([self.full, *(p for p, rows in self.answers.items() if rows == self.page_size)])
        if self.asked == top or self.promised is not None:  # a full page: the next one counts
            return page, True
        return (page, False) if top and page <= top + ahead else None

    def receive(self, page: int, answer: int | BaseException, total: int | None = None) -> None:
        """Raises the error of a page the list needs."""
        if page == 1:
            self.total = total
        self.answers[page] = answer
        while self.end is None and self.full + 1 in self.answers:
            page = self.full + 1
            got = self.answers.pop(page)
            if isinstance(got, PastTheEnd) and (got.invalid_page or page > (self.promised or 0)):
                self.end = page - 1  # the list ended on the full page before (or shrank to it)
            elif isinstance(got, PastTheEnd):
                raise got.error  # the total promises this page: a real 404
            elif isinstance(got, BaseException):
                raise got
            elif got < self.page_size or page == self.promised:
                self.end = page
            else:
                self.full = page


class Pacer:
    """How many requests may be in flight: `concurrency` at most, and below what the API refused.

    A 429 means the API admits no more than the requests still out: the limit drops to that. It
    climbs back by one after `probe_after` answers in a row without one; a refused probe doubles it.
    """

    def __init__(self, concurrency: int, probe_after: int = 32) -> None:
        self.concurrency = self.limit = concurrency
        self.probe_after, self.in_flight = probe_after, 0
        self._streak, self._probing, self._changed = 0, False, threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for room and hold it while a request is out."""
        with self._changed:
            self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    def answered(self, throttled: bool) -> None:
        """Called while the slot is held: a request sent after a 429 never counts as still out."""
        with self._changed:
            if throttled:
                if self._probing:
                    self.probe_after *= 2
                self._probing, self._streak = False, 0
                self.limit = max(1, min(self.limit, self.in_flight - 1))
                return
            self._streak += 1
            if self._probing and self._streak >= self.limit:  # every slot answered: it held
                self._probing = False
            if self.limit < self.concurrency and self._streak >= self.probe_after:
                self.limit, self._streak, self._probing = self.limit + 1, 0, True
                self._changed.notify_all()


class ParallelPages:
    """The pages of many lists, with up to `concurrency` requests in flight, read as they arrive.

    `fetch(spec, number)` answers `(items, total or None)` or raises. Daemon threads only fetch;
    one pager thread decides what to ask for (first a page a list surely needs, then the next
    list's first page, then a page ahead), so the state needs no lock, and it goes on while dlt
    works elsewhere. A request past a list's end may stall: neither the sync nor the process waits.
    """

    def __init__(
        self, fetch: Callable[[Any, int], Any], lists: Iterable[Any], size: int, concurrency: int
    ) -> None:
        self.fetch, self.lists, self.size, self.concurrency = fetch, lists, size, concurrency

    def __iter__(self) -> Iterator[list[Any]]:
        """Each page's items, in the order the pages arrive."""
        room = max(2, READY_ROWS // self.size) * self.concurrency  # pages waiting for the reader
        ready: Queue[Any] = Queue(maxsize=room)  # pages, then None or an error
        stop = threading.Event()

        def pager() -> None:
            try:
                for items in self._paged(stop):
                    ready.put(items)
                ready.put(None)
            except BaseException as error:  # the reader raises it
                ready.put(error)

        threading.Thread(target=pager, name="analytics-pager", daemon=True).start()
        try:
            while (items := ready.get()) is not None:
                if isinstance(items, BaseException):
                    raise items
                yield items
        finally:
            stop.set()
            while not ready.empty():  # a pager waiting for room goes on, and sees `stop`
                ready.get()

    def _paged(self, stop: threading.Event) -> Iterator[list[Any]]:
        tasks: SimpleQueue[tuple[Any, ListPaging, int] | None] = SimpleQueue()
        answers: SimpleQueue[tuple[Any, ListPaging, int, Any]] = SimpleQueue()

        def work() -> None:
            while (task := tasks.get()) is not None:
                try:
                    answers.put((*task, self.fetch(task[0], task[2])))
                except BaseException as error:  # its list decides whether it counts
                    answers.put((*task, error))

        for n in range(self.concurrency):
            threading.Thread(target=work, name=f"analytics-{n}", daemon=True).start()
        todo, active = iter(self.lists), dict[Any, ListPaging]()

        def ask() -> None:
            while not stop.is_set() and sum(p.out for p in active.values()) < self.concurrency:
                if (spec := self._next(todo, active)) is None:
                    return
                paging = active[spec]
                paging.asked += 1
                tasks.put((spec, paging, paging.asked))

        try:
            ask()
            while active and not stop.is_set():
                spec, paging, number, answer = answers.get()
                if active.get(spec) is not paging:
                    continue  # a page past the end of a list that has ended
                if isinstance(answer, BaseException):
                    items = []
                    paging.receive(number, answer)  # raises if the list needs this page
                else:
                    items, total = answer
                    paging.receive(number, len(items), total)
                if paging.end is not None:
                    del active[spec]
                ask()
                if items:
                    yield items
        finally:
            with suppress(Empty):  # what no worker took yet is not needed any more
                while True:
                    tasks.get_nowait()
            for _ in range(self.concurrency):
                tasks.put(None)

    def _next(self, todo: Iterator[Any], active: dict[Any, ListPaging]) -> Any:
        """The list to ask a page of next, or None; a list taken from `todo` becomes active."""
        wanted = {spec: paging.next_page(self.concurrency) for spec, paging in active.items()}
        if sure := [spec for spec, want in wanted.items() if want and want[1]]:
            return sure[0]
        if (spec := next(todo, None)) is not None and spec not in active:
            active[spec] = ListPaging(self.size)
            return spec
        return next((spec for spec, want in wanted.items() if want), None)
