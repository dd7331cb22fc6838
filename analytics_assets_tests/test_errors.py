"""Each wrong setting fails `dagster asset materialize` with one line naming cause and setting.

The line is what a user reads at the end of the error; the traceback is still printed above it.
"""

import os
import socket
import subprocess
from pathlib import Path

import pytest

from analytics_assets.sample_api import Fault, SampleApiServer
from analytics_assets.sources.analytics.settings import PLACEHOLDER_TOKEN
from analytics_assets_tests.conftest import FAST_RETRY_ENV, MATERIALIZE, REPO

TOKEN = "tok-never-printed-51c0"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def materialize(tmp_path: Path, **settings: str | None) -> str:
    """Run the CLI with these settings on top of a working set-up; its whole output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env |= {
        **FAST_RETRY_ENV,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
    }
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    (tmp_path / "home").mkdir()
    done = subprocess.run(MATERIALIZE, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode != 0, "the run did not fail"
    return done.stdout + done.stderr


@pytest.fixture
def working(api: SampleApiServer) -> dict[str, str]:
    """Settings each case breaks one of; the API rejects this token, should a request go out."""
    return {"SOURCES__ANALYTICS__BASE_URL": api.url, "SOURCES__ANALYTICS__API_TOKEN": TOKEN}


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "SOURCES__ANALYTICS__BASE_URL",
            None,
            "SOURCES__ANALYTICS__BASE_URL is not configured: it is still the placeholder "
            "https://api.example.com.",
        ),
        (
            "SOURCES__ANALYTICS__API_TOKEN",
            PLACEHOLDER_TOKEN,
            "SOURCES__ANALYTICS__API_TOKEN is not configured: it is empty or still the "
            "placeholder of .dlt/example.secrets.toml. Set SOURCES__ANALYTICS__API_TOKEN",
        ),
        (
            "SOURCES__ANALYTICS__PAGE_SIZE",
            "0",
            "SOURCES__ANALYTICS__PAGE_SIZE is 0; it must be between 1 and 1000.",
        ),
        (
            "SOURCES__ANALYTICS__CONCURRENCY",
            "100",
            "SOURCES__ANALYTICS__CONCURRENCY is 100; it must be between 1 and 64.",
        ),
        (
            "SOURCES__ANALYTICS__CONCURRENCY",
            "many",
            "SOURCES__ANALYTICS__CONCURRENCY is 'many', not a whole number.",
        ),
        ("RUNTIME__REQUEST_TIMEOUT", "0", "RUNTIME__REQUEST_TIMEOUT is 0.0; it must be at least"),
    ],
    ids=[
        "placeholder-url",
        "placeholder-token",
        "page-size",
        "concurrency",
        "not-a-number",
        "timeout",
    ],
)
def test_a_setting_out_of_range_fails_before_any_request_naming_it(
    api: SampleApiServer,
    working: dict[str, str],
    tmp_path: Path,
    name: str,
    value: str | None,
    line: str,
) -> None:
    output = materialize(tmp_path, **{**working, name: value})

    assert line in output
    assert api.request_count() == 0


@pytest.mark.parametrize(("status", "reason"), [(401, "Unauthorized"), (403, "Forbidden")])
def test_a_rejected_token_names_the_token_setting(
    api: SampleApiServer, working: dict[str, str], tmp_path: Path, status: int, reason: str
) -> None:
    if status == 403:  # the token is known but lacks access
        api.add_fault(Fault("/v3/organizations", status=403, times=10))

    output = materialize(tmp_path, **working)

    assert (
        f"{status} Client Error: {reason} for url: {api.url}/v3/organizations. The API rejected "
        "the token: set SOURCES__ANALYTICS__API_TOKEN, or api_token under [sources.analytics] "
        "in .dlt/secrets.toml."
    ) in output
    assert TOKEN not in output


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (f"http://127.0.0.1:{closed_port()}", "the connection was refused"),
        ("https://analytics.invalid", "the host name does not resolve"),
    ],
    ids=["refused", "dns"],
)
def test_an_unreachable_api_names_the_base_url(
    working: dict[str, str], tmp_path: Path, url: str, cause: str
) -> None:
    output = materialize(tmp_path, **{**working, "SOURCES__ANALYTICS__BASE_URL": url})

    assert (
        f"Cannot reach the analytics API at {url}: {cause}. Check SOURCES__ANALYTICS__BASE_URL "
        f"(now {url})."
    ) in output
    assert TOKEN not in output
