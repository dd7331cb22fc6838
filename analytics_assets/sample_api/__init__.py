"""A deterministic, stdlib-only imitation of the load-testing analytics REST API.

Why: the demo, the tests and the benchmarks need an offline API with real auth, pagination,
errors and rate limits. It serves the seed's bare contract by default (no ``meta.count``, an
empty page past the end); options add totals, DRF's 404 past the end, a concurrency cap that
answers 429, injected faults (:class:`Fault`) and lists that change while they are paged
(:class:`ListChange`). Start it in-process with ``SampleApiServer().start()`` or as a process
with ``python -m analytics_assets.sample_api`` (console script ``analytics-sample-api``).
"""

from analytics_assets.sample_api.data import (
    DEMO_PROJECT_COUNTS,
    DEMO_TESTS_PER_PROJECT,
    Account,
    RecordList,
    build_account,
    build_scaled_account,
)
from analytics_assets.sample_api.server import (
    Fault,
    ListChange,
    RequestRecord,
    SampleApiServer,
    main,
)

__all__ = [
    "DEMO_PROJECT_COUNTS",
    "DEMO_TESTS_PER_PROJECT",
    "Account",
    "Fault",
    "ListChange",
    "RecordList",
    "RequestRecord",
    "SampleApiServer",
    "build_account",
    "build_scaled_account",
    "main",
]
