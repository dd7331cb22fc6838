"""The schedule and sensors, evaluated as the daemon would, against the sample API."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
)

from analytics_assets import defs
from analytics_assets.orchestration.automation import (
    analytics_change_sensor,
    analytics_daily,
    analytics_failure_sensor,
    failure_cause,
    one_line,
)
from analytics_assets.sample_api import Fault, SampleApiServer, build_account


def poll(cursor: str | None = None) -> SensorResult | SkipReason:
    return analytics_change_sensor(build_sensor_context(cursor=cursor))


def test_nothing_hits_the_api_unless_turned_on() -> None:
    assert analytics_daily.default_status == DefaultScheduleStatus.STOPPED
    assert analytics_change_sensor.default_status == DefaultSensorStatus.STOPPED
    assert analytics_failure_sensor.default_status == DefaultSensorStatus.RUNNING


def test_daily_schedule_requests_the_sync() -> None:
    context = build_schedule_context(scheduled_execution_time=None)

    data = analytics_daily.evaluate_tick(context)

    assert analytics_daily.job_name == "analytics_sync"
    assert analytics_daily.cron_schedule == "0 5 * * *"
    assert len(data.run_requests) == 1


def test_change_sensor_runs_once_per_change(env: SampleApiServer) -> None:
    first = poll()
    assert isinstance(first, SensorResult)
    assert [type(r) for r in first.run_requests] == [RunRequest]
    assert first.run_requests[0].job_name in (None, "analytics_sync")

    unchanged = poll(first.cursor)
    assert isinstance(unchanged, SkipReason)
    assert "No upstream change" in unchanged.skip_message

    env.account.organizations[2]["name"] = "Renamed"
    renamed = poll(first.cursor)
    assert isinstance(renamed, SensorResult) and renamed.cursor != first.cursor

    env.account.tests.append({**env.account.tests[-1], "id": 1})  # sorted first: on page 1
    added = poll(renamed.cursor)
    assert isinstance(added, SensorResult) and added.cursor != renamed.cursor
    assert env.request_count() == 2 * 4


def test_change_sensor_skips_when_the_api_is_down(env: SampleApiServer) -> None:
    env.stop()

    result = poll("previous-cursor")

    assert isinstance(result, SkipReason)
    assert "Cannot reach the analytics API" in result.skip_message
    assert f"SOURCES__ANALYTICS__BASE_URL (now {env.url})" in result.skip_message


def test_an_upstream_back_to_an_earlier_state_syncs_again(env: SampleApiServer) -> None:
    # a run key is deduplicated over a sensor's whole history: A, B, then A needs none
    first = poll()
    env.account.organizations[0]["name"] = "B"
    second = poll(first.cursor)
    env.account.organizations[0]["name"] = build_account().organizations[0]["name"]
    third = poll(second.cursor)

    results = (first, second, third)
    assert all(isinstance(r, SensorResult) and len(r.run_requests) == 1 for r in results)
    assert [r.run_requests[0].run_key for r in results] == [None] * 3
    assert third.cursor == first.cursor != second.cursor


@pytest.mark.parametrize(
    "fault",
    [
        Fault("/v3/organizations", status=429, times=1000, retry_after=3600),
        Fault("/v3/organizations", status=200, times=2, kind="stall", stall_seconds=30),
    ],
    ids=["retry-after-forever", "stalled"],
)
def test_a_slow_api_skips_the_tick_well_inside_the_sensor_timeout(
    env: SampleApiServer, fault: Fault
) -> None:
    env.add_fault(fault)

    started = time.monotonic()
    result = poll("previous-cursor")

    assert time.monotonic() - started < 25, "Dagster times a sensor out after 60 s"
    assert isinstance(result, SkipReason)
    assert f"{env.url}/v3/organizations" in result.skip_message


def test_an_invalid_setting_skips_the_tick_with_the_message(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__DIALECT", "v6")

    result = poll()

    assert isinstance(result, SkipReason)
    assert "SOURCES__ANALYTICS__DIALECT is 'v6'" in result.skip_message
    assert env.request_count() == 0


def test_change_sensor_skips_on_server_errors_and_names_the_status(env: SampleApiServer) -> None:
    env.add_fault(Fault("/v3/organizations", status=503, times=5))

    result = poll("previous-cursor")

    assert isinstance(result, SkipReason)
    assert f"503 Server Error: Service Unavailable for url: {env.url}/v3/organizations" in (
        result.skip_message
    )


def test_change_sensor_without_a_token_says_which_setting(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCES__ANALYTICS__API_TOKEN")

    result = poll()

    assert isinstance(result, SkipReason)
    assert "SOURCES__ANALYTICS__API_TOKEN" in result.skip_message
    assert env.request_count() == 0


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local webhook receiver that records the JSON bodies posted to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def failed_sync_context():
    """A failing analytics_sync run, and the context the run-failure sensor gets for it."""
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("analytics_sync").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    (record,) = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.RUN_FAILURE
    ).records
    return build_run_status_sensor_context(
        sensor_name="analytics_failure_sensor",
        dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()


def test_failure_sensor_names_the_run_and_the_cause(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", "wrong-token-93af")
    context = failed_sync_context()

    cause = failure_cause(context)

    assert cause.startswith("analytics_dlt: ")
    assert "401 Client Error" in cause and env.url in cause
    assert "wrong-token-93af" not in cause
    analytics_failure_sensor(context)  # no webhook configured: logs only, and must not raise


def test_failure_sensor_posts_to_the_webhook(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch, webhook: tuple[str, list[dict]]
) -> None:
    url, received = webhook
    monkeypatch.setenv("ALERTS__WEBHOOK_URL", url)
    monkeypatch.setenv("SOURCES__ANALYTICS__API_TOKEN", "wrong-token-93af")
    context = failed_sync_context()

    analytics_failure_sensor(context)

    (payload,) = received
    assert payload["job"] == "analytics_sync"
    assert payload["run_id"] == context.dagster_run.run_id
    assert "401" in payload["cause"]


def test_failure_sensor_reports_a_failed_blocking_check(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch, webhook: tuple[str, list[dict]]
) -> None:
    url, received = webhook
    monkeypatch.setenv("ALERTS__WEBHOOK_URL", url)
    org = env.account.organizations[0]["id"]
    orphan = {**env.account.projects[0], "id": 55_555, "organization_id": 999_999}
    env.add_fault(
        Fault(f"/v3/organizations/{org}/projects", 200, body=json.dumps({"projects": [orphan]}))
    )
    context = failed_sync_context()

    analytics_failure_sensor(context)

    assert "organization_id_references_organizations" in received[0]["cause"]


def test_the_webhook_gets_the_cause_escaped_once_and_never_cut_mid_character(
    env: SampleApiServer, monkeypatch: pytest.MonkeyPatch, webhook: tuple[str, list[dict]]
) -> None:
    url, received = webhook
    monkeypatch.setenv("ALERTS__WEBHOOK_URL", url)
    # a body without the list: the error names every key found, quotes and unicode included
    keys = {f'clé "{n}" ünïcødé': n for n in range(40)}
    env.add_fault(Fault("/v3/organizations", status=200, times=1, body=json.dumps(keys)))
    context = failed_sync_context()

    analytics_failure_sensor(context)

    cause = received[0]["cause"]
    assert "without a `organizations` list" in cause
    assert 'clé "0" ünïcødé' in cause, "escaped twice"
    assert len(cause) == len("analytics_dlt: ") + 400 and cause.endswith("…"), "not cut"


def test_a_cause_is_cut_hard_so_a_long_url_or_json_is_kept_not_dropped() -> None:
    assert one_line("x" * 500) == "x" * 399 + "…"
    cut = one_line("HTTP 500 from https://h/" + "q" * 450)
    assert cut.startswith("HTTP 500 from https://h/qqq") and len(cut) == 400
    assert one_line("two\n  lines ") == "two lines"
