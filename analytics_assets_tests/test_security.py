"""The API token never leaks: not in files, logs, events or errors, not to another host."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics_assets.sample_api import Fault, SampleApiServer, build_account
from analytics_assets.sources.analytics import SettingError, configured_client, from_config
from analytics_assets_tests.conftest import REPO, run_sync
from analytics_assets_tests.test_http import failure_message

TOKEN = "tok-RECOGNIZABLE-7f3a9c51"


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_token_appears_nowhere_a_run_writes(tmp_path: Path) -> None:
    home, data = tmp_path / "dagster_home", tmp_path / "dlt"
    home.mkdir()
    with SampleApiServer(build_account(), token=TOKEN) as api:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DLT_DATA_DIR": str(data),
            "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "warehouse.duckdb"),
            "SOURCES__ANALYTICS__BASE_URL": api.url,
            "SOURCES__ANALYTICS__API_TOKEN": TOKEN,
            "RUNTIME__LOG_LEVEL": "DEBUG",
        }
        dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
        command = [dagster, "asset", "materialize", "-m", "analytics_assets", "--select", "*"]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert api.request_count() > 0

        # a failing run too: its error messages and events must not carry the token either
        api.add_fault(Fault("/v3/organizations", status=401, times=1))
        failed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert failed.returncode != 0

    for output in (done.stdout, done.stderr, failed.stdout, failed.stderr):
        assert TOKEN not in output
    assert "401 Client Error" in failed.stderr + failed.stdout
    assert list(home.rglob("*.db")), "the Dagster instance wrote no event storage"
    assert files_containing(tmp_path, TOKEN.encode()) == []


def test_failed_run_errors_name_the_status_not_the_token(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", TOKEN)

    result = run_sync(raise_on_error=False)

    message = failure_message(result)
    assert "401" in message and TOKEN not in message
    for event in result.all_events:
        assert TOKEN not in repr(event)


def test_redirect_to_another_host_does_not_carry_the_token(env: SampleApiServer) -> None:
    with SampleApiServer(build_account(), host="127.0.0.2") as other:
        env.add_fault(
            Fault("/v3/organizations", status=302, location=f"{other.url}/v3/organizations")
        )

        run_sync("organizations", raise_on_error=False)

        assert other.request_count() == 1, "the redirect was not followed"
        assert all("authorization" not in r.headers for r in other.requests)


@pytest.mark.parametrize(
    "url", ["http://api.example.com", "http://10.0.0.5:8080", "ftp://api.example.com", "api"]
)
def test_plain_http_is_refused_off_loopback(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__BASE_URL", url)

    with pytest.raises(SettingError, match="SOURCES__ANALYTICS__BASE_URL"):
        from_config(configured_client)
    result = run_sync(raise_on_error=False)

    assert "https://" in failure_message(result)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_is_allowed_on_loopback(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__BASE_URL", url)

    assert from_config(configured_client).base_url == url


def test_secrets_and_warehouses_are_never_tracked_by_git() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    forbidden = [
        path
        for path in tracked
        if Path(path).name in {"secrets.toml", ".env"} or path.endswith((".duckdb", ".duckdb.wal"))
    ]
    assert forbidden == []
    for path in (".dlt/secrets.toml", ".env", "analytics_assets.duckdb"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    assert (REPO / ".dlt" / "example.secrets.toml").exists()
