"""Each wrong setting fails `dagster asset materialize` with one line naming cause and setting.

The line is among the last a user reads: no chain of requests' and urllib3's errors follows it,
only the few frames of the step that raised it.
"""

import os
import socket
import subprocess
import sys
import time
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


def cli_env(tmp_path: Path, **settings: str | None) -> dict[str, str]:
    """The environment of a command line run: these settings over a temporary working set-up."""
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
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def materialize(tmp_path: Path, **settings: str | None) -> str:
    """Run the CLI with these settings on top of a working set-up; its whole output."""
    env = cli_env(tmp_path, **settings)
    done = subprocess.run(MATERIALIZE, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode != 0, "the run did not fail"
    return done.stdout + done.stderr


def last_lines(output: str, count: int = 12) -> str:
    """What a user reads at the end of the output."""
    return "\n".join([line for line in output.splitlines() if line.strip()][-count:])


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

    assert line in last_lines(output), output[-2000:]
    assert api.request_count() == 0


def test_every_setting_problem_is_named_at_once(
    api: SampleApiServer, working: dict[str, str], tmp_path: Path
) -> None:
    output = materialize(
        tmp_path,
        SOURCES__ANALYTICS__BASE_URL=None,
        SOURCES__ANALYTICS__API_TOKEN=None,
        SOURCES__ANALYTICS__PAGE_SIZE="5000",
        RUNTIME__REQUEST_MAX_ATTEMPTS="0",
    )

    end = last_lines(output, 16)
    for variable in ("BASE_URL", "API_TOKEN", "PAGE_SIZE"):
        assert f"SOURCES__ANALYTICS__{variable}" in end, output[-2000:]
    assert "between 1 and 1000" in end
    assert "RUNTIME__REQUEST_MAX_ATTEMPTS is 0; it must be at least 1." in end
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
    ) in last_lines(output)
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
    ) in last_lines(output)
    assert "ConnectionRefusedError" not in output and "NewConnectionError" not in output
    assert TOKEN not in output


@pytest.mark.parametrize("cause", ["refused", "rejected-token"])
def test_dg_launch_ends_with_the_cause_too(
    working: dict[str, str], tmp_path: Path, cause: str
) -> None:
    """`make demo`'s command: dg prints the step's error, then its own last words."""
    refused = f"http://127.0.0.1:{closed_port()}"
    url = refused if cause == "refused" else working["SOURCES__ANALYTICS__BASE_URL"]
    env = cli_env(tmp_path, **{**working, "SOURCES__ANALYTICS__BASE_URL": url})
    env["VIRTUAL_ENV"] = os.path.dirname(os.path.dirname(MATERIALIZE[0]))  # dg wants its venv
    dg_launch = [os.path.join(os.path.dirname(MATERIALIZE[0]), "dg"), "launch", "--assets", "*"]
    done = subprocess.run(dg_launch, cwd=REPO, env=env, capture_output=True, text=True)

    line = {
        "refused": f"Cannot reach the analytics API at {url}: the connection was refused. Check "
        f"SOURCES__ANALYTICS__BASE_URL (now {url}).",
        "rejected-token": "401 Client Error: Unauthorized for url: "
        f"{url}/v3/organizations. The API rejected the token: set SOURCES__ANALYTICS__API_TOKEN",
    }[cause]
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert line in last_lines(output, 12), output[-3000:]
    assert TOKEN not in output


def test_an_api_that_does_not_answer_names_the_timeout(
    api: SampleApiServer, working: dict[str, str], tmp_path: Path
) -> None:
    api.add_fault(Fault("/v3/organizations", 200, times=10, kind="stall", stall_seconds=2))

    output = materialize(
        tmp_path, **working, RUNTIME__REQUEST_TIMEOUT="0.3", RUNTIME__REQUEST_MAX_ATTEMPTS="2"
    )

    assert (
        f"did not answer GET {api.url}/v3/organizations within RUNTIME__REQUEST_TIMEOUT=0.3 s, "
        "2 times."
    ) in last_lines(output)


def test_a_page_past_the_end_that_stalls_does_not_hold_the_process(
    api: SampleApiServer, working: dict[str, str], tmp_path: Path
) -> None:
    stall = 60.0
    api.account.tests[:] = api.account.tests[:40]  # page 2 is short: page 3 is past the end
    api.latency = 0.05  # page 3 goes out while page 2 is on its way
    stalled = Fault(
        "/loadtests/v2/tests", 200, kind="stall", stall_seconds=stall, query={"page": "3"}
    )
    api.add_fault(stalled)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env |= {
        **FAST_RETRY_ENV,
        **working,
        "SOURCES__ANALYTICS__API_TOKEN": api.token,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DLT_DATA_DIR": str(tmp_path / "dlt"),
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
    }
    (tmp_path / "home").mkdir()
    started = time.monotonic()
    command = [*MATERIALIZE[:-1], "analytics/tests"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)

    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert stalled.times == 0, "page 3 was never asked for: the test proves nothing"
    assert time.monotonic() - started < stall / 2, "the process waited for the stalled page"


def test_the_plain_dlt_command_loads_and_ends_a_failure_with_its_cause(
    api: SampleApiServer, working: dict[str, str], tmp_path: Path
) -> None:
    """`python -m analytics_assets`: the same sync without a Dagster run, for debugging."""
    command = [sys.executable, "-m", "analytics_assets"]
    env = cli_env(tmp_path, **{**working, "SOURCES__ANALYTICS__API_TOKEN": api.token})
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"tests: {{'rows_served': {len(api.account.tests)}, 'ghosts_removed': 0" in done.stdout
    assert "RuntimeWarning" not in done.stderr

    url = f"http://127.0.0.1:{closed_port()}"
    env["SOURCES__ANALYTICS__BASE_URL"] = url
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert last_lines(done.stdout + done.stderr, 1) == (
        f"ApiError: Cannot reach the analytics API at {url}: the connection was refused. Check "
        f"SOURCES__ANALYTICS__BASE_URL (now {url})."
    )

    env["SOURCES__ANALYTICS__PAGE_SIZE"] = "many"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert last_lines(done.stdout + done.stderr, 1) == (
        "SettingError: SOURCES__ANALYTICS__PAGE_SIZE is 'many', not a whole number."
    )
