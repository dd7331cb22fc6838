"""Pages of many lists in parallel, with or without a total; nothing here speaks HTTP.

dlt pages an endpoint one page at a time (dlt-hub/dlt#2844): requests x latency. Here up to
`concurrency` requests are in flight over every list given.
"""

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

READY_ROWS_PER_WORKER = 256  # arrived rows that may wait for the reader (two pages at least)


class PastTheEnd(Exception):
    """A 404 for a page after the first; `invalid_page` if its body is DRF's "Invalid page."."""

    def __init__(self, error: Exception, invalid_page: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.invalid_page = invalid_page


@dataclass
class ListPaging:
    """One list's pages, asked for and answered in any order.

    The list ends at its first page that is not full (short, empty, a 404 past page 1, or the
    last its total promises); an error before that fails the sync, an answer past it is dropped.
    Without a total, pages go up to `ahead` past the highest full one, so a page held up holds
    up no other.
    """

    page_size: int
    asked: int = 0  # pages 1..asked were asked for
    full: int = 0  # pages 1..full came back full
    end: int | None = None  # the last page, once every page up to it is answered
    total: int | None = None  # the list's length, when page 1 tells it
    answers: dict[int, int | BaseException] = field(default_factory=dict)  # rows, or the error

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
        if top and page <= top + ahead:
            return page, False
        return None

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

    A 429 means the API admits no more than the requests still out, so the limit drops to that.
    It climbs back by one after `probe_after` answers in a row without a 429; a probe that draws
    a 429 doubles that wait, so few requests go over the cap.
    """

    def __init__(self, concurrency: int, probe_after: int = 32) -> None:
        self.concurrency = self.limit = concurrency
        self.probe_after = probe_after
        self.in_flight = 0
        self._streak = 0
        self._probing = False
        self._changed = threading.Condition()

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
    """The records of many lists, fetched by `concurrency` worker threads under one lock.

    `fetch(spec, number)` answers `(items, total or None)` or raises. A worker asks first for a
    page a list surely needs, then for the next list's first page, then for pages ahead. Pages
    wait in `ready`, so workers go on while dlt reads another resource.
    """

    def __init__(
        self, fetch: Callable[[Any, int], Any], lists: Iterable[Any], size: int, concurrency: int
    ) -> None:
        self.fetch, self.todo, self.size, self.concurrency = fetch, iter(lists), size, concurrency
        self.active: dict[Any, ListPaging] = {}
        self.ready: deque[Any] = deque()
        self.room = max(2, READY_ROWS_PER_WORKER // size) * concurrency  # pages, at most
        self.exhausted = self.stopped = False
        self.changed = threading.Condition()

    def __iter__(self) -> Iterator[list[Any]]:
        # daemon threads: a request past a list's end may stall, and nothing waits for it (a
        # ThreadPoolExecutor's threads are joined at interpreter exit)
        for n in range(self.concurrency):
            threading.Thread(target=self._work, name=f"analytics-{n}", daemon=True).start()
        try:
            yield from self._arrived()
        finally:
            with self.changed:  # ask for nothing more; a worker still waiting drops its answer
                self.stopped = True
                self.changed.notify_all()

    def _over(self) -> bool:
        return self.stopped or (self.exhausted and not self.active)

    def _next(self) -> tuple[Any, ListPaging, int] | None:
        if len(self.ready) >= self.room:
            return None
        wanted = {spec: paging.next_page(self.concurrency) for spec, paging in self.active.items()}
        sure = [spec for spec, want in wanted.items() if want and want[1]]
        if not sure and not self.exhausted:
            try:
                spec = next(self.todo, None)
            except BaseException as error:  # the lists come from a generator: it may fail too
                self.ready.append(error)
                self.stopped = True
                return None
            if spec is None:
                self.exhausted = True
            elif spec not in self.active:
                self.active[spec] = ListPaging(self.size)
                sure = [spec]
        chosen = sure or [spec for spec, want in wanted.items() if want]
        if not chosen:
            return None
        paging = self.active[chosen[0]]
        paging.asked += 1
        return chosen[0], paging, paging.asked

    def _work(self) -> None:
        while True:
            with self.changed:
                task = None
                while task is None and not self._over():
                    if (task := self._next()) is None and not self._over():
                        self.changed.wait()
                if task is None:  # over, maybe by this worker's asking: the reader must hear it
                    self.changed.notify_all()
                    return
            spec, paging, number = task
            try:
                answer: Any = self.fetch(spec, number)
            except BaseException as error:  # recorded: it fails the sync only if the page counts
                answer = error
            with self.changed:
                self._record(spec, paging, number, answer)
                self.changed.notify_all()

    def _record(self, spec: Any, paging: ListPaging, number: int, answer: Any) -> None:
        if self.stopped or self.active.get(spec) is not paging:
            return  # a page past the end of a list that has ended
        try:
            if isinstance(answer, BaseException):
                paging.receive(number, answer)
            else:
                items, total = answer
                paging.receive(number, len(items), total)
                if items:
                    self.ready.append(items)
        except BaseException as error:  # a page the list needs failed: so does the sync
            self.ready.append(error)
            self.stopped = True
            return
        if paging.end is not None:
            del self.active[spec]

    def _arrived(self) -> Iterator[list[Any]]:
        """All that has arrived, at once: dlt takes one item per resource in turn."""
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.ready or self._over())
                items, self.ready = list(self.ready), deque()
                self.changed.notify_all()  # room in `ready`: the workers may ask again
            if not items:
                return
            if errors := [item for item in items if isinstance(item, BaseException)]:
                raise errors[0]
            yield [record for page in items for record in page]
