"""Deterministic sample account data for the sample analytics API.

Why: the demo, the tests and the benchmarks need realistic payloads (unicode, nulls, parents
without children, pagination boundaries) that are identical on every run and need no network,
no fixtures on disk and no clock.
"""

from __future__ import annotations

import calendar
import functools
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex

DEMO_PROJECT_COUNTS: tuple[int, ...] = (3, 0, 32, 33)
"""Projects per organization in the demo account: 0, 32 and 33 hit the page-size-32 edges."""

DEMO_TESTS_PER_PROJECT: tuple[int, ...] = (0, 1, 2, 3)
"""Tests per project in the demo account, cycled over the projects (68 projects -> 102 tests)."""

ORGANIZATION_ID_BASE = 1001
PROJECT_ID_BASE = 20001
TEST_ID_BASE = 300001
TEST_RUN_ID_BASE = 4000001

# Parents are always created before their children; nothing is ever "in the future" of 2025.
_ORG_WINDOW = (calendar.timegm((2022, 1, 3, 9, 0, 0)), calendar.timegm((2022, 6, 30, 18, 0, 0)))
_PROJECT_WINDOW = (calendar.timegm((2022, 7, 1, 9, 0, 0)), calendar.timegm((2023, 6, 30, 18, 0, 0)))
_TEST_WINDOW = (calendar.timegm((2023, 7, 1, 9, 0, 0)), calendar.timegm((2024, 6, 30, 18, 0, 0)))
_LATEST_UPDATE = calendar.timegm((2024, 12, 31, 23, 59, 59))
_DAY = 86400

_USER_IDS = tuple(range(501, 541))

_ORG_NAMES = (
    "Acme Load Co",
    "Zürich Lasttests",
    "東京チーム",
    "Ωmega — QA",
    "Café Perf 🚀",
    "São Paulo Engenharia",
    "Kraków Reliability",
    "Ørsted Labs",
    "서울 성능팀",
    "Nordlys 🌌 AS",
)
_ORG_DESCRIPTIONS = (
    "Performance engineering for the checkout platform.",
    "Lasttests für alle Zürcher Dienste — täglich um 8 Uhr 🕗",
    "負荷試験チーム（本番前の検証）",  # noqa: RUF001 (real Japanese punctuation)
    'QA "Ωmega" squad\nsecond line after a newline',
    "Équipe perf ✨ — tests de charge",
    "Shared org for 🔥 incident drills",
)
# (address, country, VAT prefix): picked together so a billing record is self-consistent.
_BILLING = (
    ("1 Market Street, San Francisco, CA 94105", "United States", "US"),
    ("Bahnhofstrasse 1, 8001 Zürich", "Switzerland", "CHE-"),
    ("東京都千代田区丸の内1-1-1", "Japan", "JP"),
    ("Rua Augusta 1500, São Paulo", "Brazil", "BR"),
    ("ul. Floriańska 3, 31-019 Kraków", "Poland", "PL"),
    ("Drottninggatan 5, 111 51 Stockholm", "Sweden", "SE"),
)
_PROJECT_NAMES = (
    "checkout 🛒",
    "Zahlungsdienst",
    "ログインAPI",
    "Δelta service",
    "café-frontend",
    "Search — v2",
    "Ünïcode gateway",
    "mobile-backend",
    "Почта сервис",
    "données-pipeline",
    "🚀 launch readiness",
)
_PROJECT_DESCRIPTIONS = (
    "Smoke and load tests for the checkout flow.",
    "Lasttests der Zahlungs-API — Grenzwerte prüfen",
    "ログイン処理の負荷試験",
    'Tests with "quotes", back\\slashes and a\ttab',
    "Nightly soak 🌙 runs",
    "Équipe données — débit maximal",
)
_TEST_NAMES = (
    "Smoke test",
    "Spike テスト",
    "Soak 🌙 nightly",
    "Stress: Zahlungen",
    "Breakpoint ⚡",
    "Ramp-up São Paulo",
    "Average load — checkout",
    "Шторм API",
    "Login flow 🔐",
    "Search p95 ≤ 300 ms",
)
_SCRIPTS = (
    "import http from 'k6/http';\n"
    "import { sleep } from 'k6';\n\n"
    "export const options = { vus: 10, duration: '30s' };\n\n"
    "export default function () {\n"
    "  http.get('https://test.k6.io');\n"
    "  sleep(1);\n"
    "}\n",
    "import http from 'k6/http';\n"
    "import { check } from 'k6';\n\n"
    "export default function () {\n"
    "  const res = http.get('https://test.k6.io/contacts.php');\n"
    "  check(res, { 'status is 200': (r) => r.status === 200 });\n"
    "}\n",
    "// Lasttest für Zürich 🇨🇭\n"
    "import http from 'k6/http';\n\n"
    "export const options = {\n"
    "  stages: [\n"
    "    { duration: '1m', target: 50 },\n"
    "    { duration: '3m', target: 50 },\n"
    "    { duration: '1m', target: 0 },\n"
    "  ],\n"
    "};\n\n"
    "export default function () {\n"
    "  http.post('https://test.k6.io/login', JSON.stringify({ user: 'ユーザー' }));\n"
    "}\n",
    "import http from 'k6/http';\n\n"
    "export const options = { thresholds: { http_req_duration: ['p(95)<300'] } };\n\n"
    "export default function () {\n"
    "  http.get('https://test.k6.io/search?q=caf%C3%A9');\n"
    "}\n",
)


class RecordList(list):  # type: ignore[type-arg]
    """A list that counts its own mutations.

    Why: the server caches sorted/grouped views of 100k+ records; a mutation counter lets it
    notice in O(1) when a test appends, removes or replaces records in place.
    """

    version: int = 0

    def _touch(self) -> None:
        self.version += 1

    def append(self, item: Any) -> None:
        """Append and bump the version."""
        super().append(item)
        self._touch()

    def extend(self, items: Iterable[Any]) -> None:
        """Extend and bump the version."""
        super().extend(items)
        self._touch()

    def insert(self, index: SupportsIndex, item: Any) -> None:
        """Insert and bump the version."""
        super().insert(index, item)
        self._touch()

    def pop(self, index: SupportsIndex = -1) -> Any:
        """Pop and bump the version."""
        item = super().pop(index)
        self._touch()
        return item

    def remove(self, item: Any) -> None:
        """Remove and bump the version."""
        super().remove(item)
        self._touch()

    def clear(self) -> None:
        """Clear and bump the version."""
        super().clear()
        self._touch()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        """Sort and bump the version."""
        super().sort(*args, **kwargs)
        self._touch()

    def reverse(self) -> None:
        """Reverse and bump the version."""
        super().reverse()
        self._touch()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._touch()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._touch()

    def __iadd__(self, items: Iterable[Any]) -> RecordList:  # type: ignore[override]
        super().__iadd__(items)
        self._touch()
        return self

    def __imul__(self, count: SupportsIndex) -> RecordList:
        super().__imul__(count)
        self._touch()
        return self


_LIST_FIELDS = frozenset({"organizations", "projects", "tests"})


@dataclass
class Account:
    """Everything one API token can see: the server serves exactly these records.

    Why a dataclass of plain dict lists: tests mutate records in place (rename, add, remove)
    between runs and the server must reflect that without any reload step. Assigned lists are
    stored as :class:`RecordList` (a copy, if a plain list is given) so the server can cache
    sorted views and still notice in-place list mutations.
    """

    organizations: list[dict[str, Any]]
    projects: list[dict[str, Any]]
    tests: list[dict[str, Any]]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LIST_FIELDS and not isinstance(value, RecordList):
            value = RecordList(value)
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return (
            f"Account(organizations={len(self.organizations)}, projects={len(self.projects)}, "
            f"tests={len(self.tests)})"
        )


def build_account(
    project_counts: Sequence[int] = DEMO_PROJECT_COUNTS,
    tests_per_project: Sequence[int] = DEMO_TESTS_PER_PROJECT,
    seed: int = 7,
    script_kb: float = 0,
) -> Account:
    """Build a small account with an exact shape, for the demo and the tests.

    Why: tests need to know precisely how many records each parent has (0, 32, 33 -> the
    pagination edges at page size 32). The default demo account has 4 organizations,
    68 projects and 102 tests (4 pages of 32).

    Args:
        project_counts: Organization ``i`` gets ``project_counts[i]`` projects.
        tests_per_project: Project ``j`` (over all organizations) gets
            ``tests_per_project[j % len(tests_per_project)]`` tests.
        seed: Seed of the private random generator; same arguments, same account.
        script_kb: Size of each test's script in KiB (see :func:`script_of`); 0 keeps the short
            sample scripts.

    Returns:
        A fresh account; nothing is shared between calls.
    """
    if not tests_per_project:
        raise ValueError("tests_per_project must not be empty")
    if any(n < 0 for n in (*project_counts, *tests_per_project)):
        raise ValueError("counts must be >= 0")
    n_projects = sum(project_counts)
    test_counts = [tests_per_project[j % len(tests_per_project)] for j in range(n_projects)]
    return _build(random.Random(seed), list(project_counts), test_counts, script_kb)


def build_scaled_account(
    organizations: int, projects: int, tests: int, seed: int = 7, script_kb: float = 0
) -> Account:
    """Build a large account with the given totals, for the benchmarks.

    Why: benchmarks need realistic skew (some organizations without projects, some projects
    without tests, some parents with several pages of children) at a chosen size.

    Args:
        organizations: Number of organizations (the first one is always non-empty).
        projects: Number of projects, spread unevenly over the organizations.
        tests: Number of tests, spread unevenly over the projects.
        seed: Seed of the private random generator; same arguments, same account.
        script_kb: Size of each test's script in KiB; 0 keeps the short sample scripts.

    Returns:
        A fresh account with exactly the requested totals.
    """
    if min(organizations, projects, tests) < 0:
        raise ValueError("counts must be >= 0")
    rng = random.Random(seed)
    project_counts = _spread(rng, projects, organizations, zero_share=0.1, what="projects")
    test_counts = _spread(rng, tests, projects, zero_share=0.15, what="tests")
    return _build(rng, project_counts, test_counts, script_kb)


def _spread(
    rng: random.Random, total: int, buckets: int, zero_share: float, what: str
) -> list[int]:
    """Split ``total`` unevenly into ``buckets``; about ``zero_share`` of them stay empty."""
    if buckets == 0:
        if total:
            raise ValueError(f"cannot spread {total} {what} over 0 parents")
        return []
    counts = [0] * buckets
    if total == 0:
        return counts
    n_zero = min(buckets - 1, int(buckets * zero_share))
    empty = set(rng.sample(range(1, buckets), n_zero))
    active = [b for b in range(buckets) if b not in empty]
    weights = [0.1 + rng.random() ** 2 for _ in active]
    scale = total / sum(weights)
    for bucket, weight in zip(active, weights, strict=True):
        counts[bucket] = int(weight * scale)
    for bucket in rng.choices(active, weights=weights, k=total - sum(counts)):
        counts[bucket] += 1
    return counts


def _timestamps(rng: random.Random, n: int, window: tuple[int, int]) -> list[int]:
    """Return ``n`` non-decreasing epoch seconds inside ``window`` (so created follows id)."""
    start, end = window
    span = end - start
    return [start + int(span * (k + rng.random()) / n) for k in range(n)]


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _updated(rng: random.Random, created: int) -> int:
    """A fifth of the records were never edited; the rest some days to months later."""
    if rng.random() < 0.2:
        return created
    return min(_LATEST_UPDATE, created + rng.randint(_DAY // 24, 180 * _DAY))


def _cycled(pool: Sequence[str], k: int) -> str:
    """Pick names round-robin, suffixing a round number so names stay unique."""
    name = pool[k % len(pool)]
    return name if k < len(pool) else f"{name} #{k // len(pool) + 1}"


# Lines a real load-test script is made of; `script_of` fills in a test's id and its own values
# (tokens, ids in payloads), so that no two scripts are alike and they compress like real ones.
_SCRIPT_LINES = (
    "  const res{k} = http.get(`${{{{BASE}}}}/api/v{v}/orders/{{{k}}}?page={k}`, params);\n",
    "  check(res{k}, {{{{ 'status {k} is 200': (r) => r.status === 200 }}}}); // {{{k}}}\n",
    "  http.post(`${{{{BASE}}}}/cart/{v}`, JSON.stringify({{{{ sku: '{{{k}}}', qty: {k} }}}}));\n",
    "  group('step {k} — checkout {v}', () => {{{{ sleep({k} % 3 + 0.5); }}}}); // {{{k}}}\n",
    "  headers['X-Trace-{k}'] = '{{{k}}}'; // budget p95 < {v}00 ms\n",
)


@functools.cache
def _script_template(kib: float, base: str) -> tuple[str, int]:
    """The script's text with a `{k}` slot per line for a 16-character value, and its slots."""
    head = "// test @ID@\nconst BASE = 'https://svc-@ID@.example.com';\n"
    parts = [head, base.replace("{", "{{").replace("}", "}}")]
    size, k = len(head) + len(base), 0
    while size < kib * 1024:
        line = _SCRIPT_LINES[k % len(_SCRIPT_LINES)].format(k=k, v=k % 7 + 1)
        parts.append(line)
        size, k = size + len(line) - len(f"{{{k}}}") + 16, k + 1  # the slot takes 16 characters
    return "".join(parts), k


def script_of(test_id: int, kib: float, base: str) -> str:
    """A k6 script of about `kib` KiB: `base`, then lines with values of the test's own.

    Why: real scripts are kilobytes, and no two are alike; a warehouse sized on one-line scripts
    runs out of memory on real accounts.
    """
    template, slots = _script_template(kib, base)
    values = random.Random(test_id).randbytes(8 * slots).hex()
    tokens = [values[i : i + 16] for i in range(0, 16 * slots, 16)]
    return template.format(*tokens).replace("@ID@", str(test_id))


def _build(
    rng: random.Random, project_counts: list[int], test_counts: list[int], script_kb: float = 0
) -> Account:
    organizations: list[dict[str, Any]] = []
    projects: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []

    org_times = _timestamps(rng, len(project_counts), _ORG_WINDOW)
    project_times = _timestamps(rng, len(test_counts), _PROJECT_WINDOW)
    test_times = _timestamps(rng, sum(test_counts), _TEST_WINDOW)

    def maybe(value: Callable[[], str], forced: bool | None) -> str | None:
        # forced=True: always set; forced=False: always null; None: null about a third of the time
        if forced is None:
            forced = rng.random() >= 1 / 3
        return value() if forced else None

    run_id = TEST_RUN_ID_BASE
    project_index = 0
    for i, n_projects in enumerate(project_counts):
        org_id = ORGANIZATION_ID_BASE + i
        # The first org is fully populated and the second fully null, so that even the small
        # demo account covers both cases for every nullable field.
        forced = True if i == 0 else False if i == 1 else None
        address, country, vat_prefix = rng.choice(_BILLING)
        created = org_times[i]
        organizations.append(
            {
                "billing_address": maybe(lambda a=address: a, forced),
                "billing_country": maybe(lambda c=country: c, forced),
                "billing_email": maybe(lambda o=org_id: f"billing+{o}@example.com", forced),
                "created": _iso(created),
                "description": maybe(lambda: rng.choice(_ORG_DESCRIPTIONS), forced),
                "id": org_id,
                "is_default": i == 0,
                "is_saml_org": rng.random() < 0.25,
                "name": _cycled(_ORG_NAMES, i),
                "owner_id": rng.choice(_USER_IDS),
                "updated": _iso(_updated(rng, created)),
                "vat_number": maybe(
                    lambda p=vat_prefix: f"{p}{rng.randrange(10**8, 10**9)}", forced
                ),
            }
        )
        for k in range(n_projects):
            project_id = PROJECT_ID_BASE + project_index
            created = project_times[project_index]
            projects.append(
                {
                    "created": _iso(created),
                    "description": maybe(lambda: rng.choice(_PROJECT_DESCRIPTIONS), None),
                    "id": project_id,
                    "is_default": k == 0,
                    "name": "Default project" if k == 0 else _cycled(_PROJECT_NAMES, project_index),
                    "organization_id": org_id,
                    "updated": _iso(_updated(rng, created)),
                }
            )
            for _ in range(test_counts[project_index]):
                test_index = len(tests)
                created = test_times[test_index]
                run_ids: list[int] = []
                if rng.random() >= 1 / 3:
                    for _ in range(rng.randint(1, 5)):
                        run_id += rng.randint(1, 40)
                        run_ids.append(run_id)
                script = rng.choice(_SCRIPTS)
                if script_kb:
                    script = script_of(TEST_ID_BASE + test_index, script_kb, script)
                tests.append(
                    {
                        "created": _iso(created),
                        "id": TEST_ID_BASE + test_index,
                        "last_test_run_id": str(max(run_ids)) if run_ids else None,
                        "name": _cycled(_TEST_NAMES, test_index),
                        "project_id": project_id,
                        "script": script,
                        "test_run_ids": run_ids,
                        "updated": _iso(_updated(rng, created)),
                        "user_id": rng.choice(_USER_IDS),
                    }
                )
            project_index += 1
    return Account(organizations=organizations, projects=projects, tests=tests)
