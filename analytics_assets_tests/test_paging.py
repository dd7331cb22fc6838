"""The paging and pacing rules on their own, without HTTP; ParallelPages with a fake fetch."""

import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests

from analytics_assets.sources.analytics.paging import ListPaging, Pacer, ParallelPages, PastTheEnd

PAGE = 32
AHEAD = 4


def rows_on(page: int, total: int) -> int:
    return max(0, min(PAGE, total - (page - 1) * PAGE))


def fewest(total: int, with_total: bool) -> int:
    return max(1, -(-total // PAGE)) if with_total else total // PAGE + 1


def page_through(total: int, with_total: bool, seed: int, past_end: str) -> tuple[list[int], int]:
    """Ask and answer pages as a pool would, answering in flight pages in a random order."""
    paging, in_flight, asked, order = ListPaging(PAGE), [], [], random.Random(seed)
    while paging.end is None:
        while len(in_flight) < AHEAD and (want := paging.next_page(AHEAD)) is not None:
            paging.asked += 1
            in_flight.append(want[0])
            asked.append(want[0])
        page = in_flight.pop(order.randrange(len(in_flight)))
        rows = rows_on(page, total)
        if rows == 0 and page > 1 and past_end == "404":
            paging.receive(page, PastTheEnd(requests.HTTPError("404"), invalid_page=True))
        else:
            paging.receive(page, rows, total if with_total else None)
    return asked, paging.end


@pytest.mark.parametrize("total", [0, 1, 31, 32, 33, 64])
@pytest.mark.parametrize("with_total", [False, True], ids=["no-total", "total"])
@pytest.mark.parametrize("past_end", ["empty", "404"])
def test_a_list_ends_at_its_first_page_that_is_not_full_in_any_answer_order(
    total: int, with_total: bool, past_end: str
) -> None:
    least = fewest(total, with_total)
    # without a total, a full last page is followed by an empty page, or a 404 that ends it too
    last = least - (past_end == "404" and not with_total and total > 0 and total % PAGE == 0)
    for seed in range(20):
        asked, end = page_through(total, with_total, seed, past_end)
        assert end == last
        assert sorted(asked) == list(range(1, len(asked) + 1)), "a page was skipped or asked twice"
        if with_total:
            assert len(asked) == least, "with a total, not one page more than it promises"
        else:
            assert least <= len(asked) <= least + AHEAD - 1


def test_page_1_goes_out_alone_then_pages_ahead_of_the_full_ones() -> None:
    paging = ListPaging(PAGE)
    assert paging.next_page(AHEAD) == (1, True)
    paging.asked = 1
    assert paging.next_page(AHEAD) is None, "nothing ahead of page 1 before it answers"
    paging.receive(1, PAGE)
    assert paging.next_page(AHEAD) == (2, True)
    paging.asked = 2
    assert [paging.next_page(AHEAD)] == [(3, False)]
    paging.asked = 1 + AHEAD
    assert paging.next_page(AHEAD) is None, "at most `ahead` pages beyond the full ones"


def test_a_page_held_up_holds_up_no_other() -> None:
    paging = ListPaging(PAGE)
    paging.asked = 1
    paging.receive(1, PAGE)
    paging.asked = 1 + AHEAD  # pages 2 to 5 are out; page 2 waits out a 429
    for page in range(3, 2 + AHEAD):
        paging.receive(page, PAGE)
    assert paging.full == 1
    assert paging.next_page(AHEAD) == (2 + AHEAD, True), "page 5 came back full: 6 is needed"


def test_with_a_total_every_promised_page_is_surely_needed() -> None:
    paging = ListPaging(PAGE)
    paging.asked = 1
    paging.receive(1, PAGE, total=100)
    wanted = []
    while (want := paging.next_page(AHEAD)) is not None:
        paging.asked += 1
        wanted.append(want)
    assert wanted == [(2, True), (3, True), (4, True)]


def test_a_short_page_ends_the_list_and_pages_past_it_do_not_count() -> None:
    paging = ListPaging(PAGE)
    paging.asked = 5
    paging.receive(5, RuntimeError("503 past the end"))
    paging.receive(4, 0)
    paging.receive(3, PastTheEnd(requests.HTTPError("404"), invalid_page=False))
    assert paging.end is None, "pages 1 and 2 are not answered yet"
    paging.receive(2, 7)
    paging.receive(1, PAGE)
    assert paging.end == 2


def test_an_error_on_a_page_the_list_needs_fails_once_its_turn_comes() -> None:
    paging = ListPaging(PAGE)
    paging.asked = 3
    paging.receive(2, RuntimeError("503 on page 2"))
    paging.receive(3, 5)
    with pytest.raises(RuntimeError, match="503 on page 2"):
        paging.receive(1, PAGE)


def test_an_empty_page_and_a_404_past_page_1_end_the_list() -> None:
    empty, missing = ListPaging(PAGE), ListPaging(PAGE)
    for paging in (empty, missing):
        paging.asked = 2
        paging.receive(1, PAGE)
    empty.receive(2, 0)
    missing.receive(2, PastTheEnd(requests.HTTPError("404"), invalid_page=False))
    assert (empty.end, missing.end) == (2, 1)


def test_a_404_on_a_page_the_total_promises_is_an_error_unless_the_list_shrank() -> None:
    error = requests.HTTPError("404 for page 2")
    real, shrank = ListPaging(PAGE), ListPaging(PAGE)
    for paging in (real, shrank):
        paging.asked = 2
        paging.receive(1, PAGE, total=65)
    shrank.receive(2, PastTheEnd(error, invalid_page=True))
    assert shrank.end == 1
    with pytest.raises(requests.HTTPError, match="404 for page 2"):
        real.receive(2, PastTheEnd(error, invalid_page=False))


def refused(pacer: Pacer, still_out: int) -> None:
    """One request answered 429 while `still_out` others are out."""
    with ExitStack() as others:
        for _ in range(still_out):
            others.enter_context(pacer.slot())
        with pacer.slot():
            pacer.answered(throttled=True)


def test_a_burst_of_429s_leaves_the_limit_at_the_requests_still_out() -> None:
    pacer = Pacer(8)
    sent = [pacer.slot() for _ in range(8)]
    for request in sent:
        request.__enter__()
    for request in sent[3:]:  # five refused, whatever order they took their slots in
        pacer.answered(throttled=True)
        request.__exit__(None, None, None)
    assert (pacer.limit, pacer.in_flight) == (3, 3), "the three the API admitted"


def test_the_limit_climbs_back_slowly_and_a_failed_probe_doubles_the_wait() -> None:
    pacer = Pacer(4, probe_after=10)
    refused(pacer, still_out=3)
    assert pacer.limit == 3
    for _ in range(9):
        pacer.answered(throttled=False)
    assert pacer.limit == 3
    pacer.answered(throttled=False)
    assert pacer.limit == 4, "a probe after 10 answers in a row"
    refused(pacer, still_out=3)
    assert (pacer.limit, pacer.probe_after) == (3, 20)
    for _ in range(19):
        pacer.answered(throttled=False)
    assert pacer.limit == 3


def test_a_probe_that_held_is_not_blamed_for_a_later_429() -> None:
    pacer = Pacer(4, probe_after=10)
    refused(pacer, still_out=2)
    for _ in range(10):
        pacer.answered(throttled=False)
    assert pacer.limit == 3, "the probe: one more in flight"
    for _ in range(3):
        pacer.answered(throttled=False)  # an answer for each slot of the new limit
    refused(pacer, still_out=2)
    assert (pacer.limit, pacer.probe_after) == (2, 10), "a 429 long after the probe"


def test_a_slot_counts_the_requests_out() -> None:
    pacer = Pacer(3)
    with pacer.slot(), pacer.slot():
        assert pacer.in_flight == 2
    assert pacer.in_flight == 0


# ParallelPages: the workers and the reader, with a fetch that is a dict lookup, not HTTP.


class FakeLists:
    """Lists of row numbers: `sizes[name]` rows, paged by PAGE, with a total when asked."""

    def __init__(self, sizes: dict[str, int], with_total: bool, fail: tuple[str, int] = ("", 0)):
        self.sizes, self.with_total, self.fail = sizes, with_total, fail
        self.asked: list[tuple[str, int]] = []
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    def fetch(self, name: str, number: int) -> tuple[list[tuple[str, int]], int | None]:
        with self.lock:
            self.asked.append((name, number))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(random.random() / 1000)  # answers come back in any order
            if (name, number) == self.fail:
                raise requests.ConnectionError(f"{name} page {number}")
            first = (number - 1) * PAGE
            rows = [(name, i) for i in range(first, min(first + PAGE, self.sizes[name]))]
            return rows, self.sizes[name] if self.with_total else None
        finally:
            with self.lock:
                self.in_flight -= 1


SIZES = {"a": 0, "b": 1, "c": 32, "d": 95, "e": 320}


def rows_of(pages: ParallelPages) -> list[tuple[str, int]]:
    """Every row of every page."""
    return [row for page in pages for row in page]


def workers_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """The worker threads this test started: a real sync elsewhere in the suite may have its own."""
    return [t for t in set(threading.enumerate()) - before if t.name.startswith("analytics-")]


@pytest.mark.parametrize("concurrency", [1, 3, 8])
@pytest.mark.parametrize("with_total", [False, True], ids=["no-total", "total"])
def test_parallel_pages_yield_every_row_once_within_the_concurrency(
    concurrency: int, with_total: bool
) -> None:
    lists = FakeLists(SIZES, with_total)

    rows = rows_of(ParallelPages(lists.fetch, SIZES, PAGE, concurrency))

    assert sorted(rows) == sorted((n, i) for n, size in SIZES.items() for i in range(size))
    assert len(set(lists.asked)) == len(lists.asked), "a page was asked for twice"
    assert lists.peak <= concurrency
    extra = len(lists.asked) - sum(fewest(size, with_total) for size in SIZES.values())
    assert 0 <= extra <= (0 if with_total else len(SIZES) * (concurrency - 1))


def test_a_failed_page_a_list_needs_fails_the_iteration() -> None:
    lists = FakeLists(SIZES, with_total=False, fail=("d", 2))

    with pytest.raises(requests.ConnectionError, match="d page 2"):
        for _ in ParallelPages(lists.fetch, SIZES, PAGE, 3):
            pass


def test_a_failed_page_past_the_end_is_nobodys_concern() -> None:
    lists = FakeLists({"c": 40}, with_total=False, fail=("c", 3))  # the list ends on page 2
    page_3_asked = threading.Event()

    def fetch(name: str, number: int) -> tuple[list[tuple[str, int]], int | None]:
        try:
            if number == 2:
                assert page_3_asked.wait(5), "page 3 was never asked for"
            return lists.fetch(name, number)
        finally:
            if number == 3:
                page_3_asked.set()

    rows = rows_of(ParallelPages(fetch, ["c"], PAGE, 4))

    assert len(rows) == 40 and ("c", 3) in lists.asked


def test_a_stalled_page_past_the_end_holds_nothing_up() -> None:
    before, ahead, release = set(threading.enumerate()), threading.Event(), threading.Event()
    lists = FakeLists({"c": 32}, with_total=False)  # page 2, empty, ends it; 3 to 5 go ahead

    def fetch(name: str, number: int) -> tuple[list[tuple[str, int]], int | None]:
        if number > 2:
            ahead.set()
            release.wait(30)  # a request past the end that never answers in time
        elif number == 2:
            ahead.wait(5)
        return lists.fetch(name, number)

    try:
        started = time.monotonic()
        rows = rows_of(ParallelPages(fetch, ["c"], PAGE, 4))

        assert len(rows) == 32 and time.monotonic() - started < 5
        stalled = workers_since(before)
        assert stalled and all(t.daemon for t in stalled), "a stalled worker would hold the exit"
    finally:
        release.set()
    for t in workers_since(before):
        t.join(5)
    assert not workers_since(before), "a worker outlived the iteration"


def test_no_worker_outlives_an_iteration_the_reader_stops() -> None:
    before, lists = set(threading.enumerate()), FakeLists(SIZES, with_total=False)

    for _ in ParallelPages(lists.fetch, SIZES, PAGE, 3):
        break

    deadline = time.monotonic() + 5
    while workers_since(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not workers_since(before)


def test_a_reader_that_stops_frees_a_full_pager_and_asks_for_nothing_more() -> None:
    """The pager waits for room with its queue full; the reader stops: both end, soon."""
    before, lists = set(threading.enumerate()), FakeLists({"e": 320 * 8}, with_total=False)
    pages = iter(ParallelPages(lists.fetch, ["e"], PAGE, 1))
    next(pages)
    deadline = time.monotonic() + 5
    while len(lists.asked) < 10 and time.monotonic() < deadline:  # the queue holds 8 pages
        time.sleep(0.01)

    pages.close()
    time.sleep(0.2)

    asked = len(lists.asked)
    assert asked < 15, "the pager went on paging for a reader that had stopped"
    deadline = time.monotonic() + 5
    while workers_since(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not workers_since(before), "the pager or a worker outlived the iteration"
    assert len(lists.asked) == asked


def test_a_list_given_again_is_paged_once_while_open_and_anew_once_ended() -> None:
    """The same list twice (an organization served twice): each listing is whole, none mixed."""
    at_once, later = FakeLists({"d": 95}, with_total=False), FakeLists(SIZES, with_total=False)

    twice = rows_of(ParallelPages(at_once.fetch, ["d", "d"], PAGE, 3))
    again = rows_of(ParallelPages(later.fetch, ["d", "b", "d"], PAGE, 1))

    assert sorted(twice) == [("d", i) for i in range(95)]
    assert sorted(again) == sorted([("b", 0)] + [("d", i) for i in range(95)] * 2)


def test_a_failing_list_of_lists_fails_the_iteration() -> None:
    """The lists come from a generator (each organization's projects): its error is the sync's."""

    def lists() -> Iterator[str]:
        yield "d"
        raise RuntimeError("the organizations could not be read")

    with pytest.raises(RuntimeError, match="could not be read"):
        rows_of(ParallelPages(FakeLists(SIZES, with_total=False).fetch, lists(), PAGE, 2))


def test_a_page_a_list_needs_goes_before_the_next_list() -> None:
    """At concurrency 1, each list is paged to its end before the next one starts."""
    lists = FakeLists({"d": 95, "e": 70}, with_total=False)

    rows_of(ParallelPages(lists.fetch, ["d", "e"], PAGE, 1))

    assert lists.asked == [("d", 1), ("d", 2), ("d", 3), ("e", 1), ("e", 2), ("e", 3)]
