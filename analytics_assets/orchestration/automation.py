"""Jobs, the daily schedule and the sensors that keep the analytics tables fresh.

Nothing calls the API unless the user turns it on: the schedule and the change sensor start
STOPPED; the run-failure sensor, which only reads Dagster's own events, starts RUNNING.
"""

import hashlib
import json

import dagster as dg
import dlt
import requests

from analytics_assets.orchestration.assets import GROUP_NAME, analytics_tables
from analytics_assets.sources import analytics
from analytics_assets.sources.analytics import settings

WEBHOOK_SETTING = "alerts.webhook_url"
WEBHOOK_TIMEOUT_S = 10
LIMIT = 400  # characters of a failure cause: on one line, JSON escapes it once, when posted

# A poll's two requests take at most 2 x (2 attempts x 5 s + 0.5 s + 5 s of 429s) = 31 s, well
# inside the 60 s Dagster gives a sensor evaluation.
POLL_SETTINGS: dict[str, float] = dict(concurrency=1, rate_limit_max_wait=5.0, request_timeout=5.0)
POLL_SETTINGS.update(request_max_attempts=2, request_backoff_factor=0.5, request_max_retry_delay=5)


def upstream_fingerprint() -> str:
    """A cheap digest of what the API serves now: the organizations and the first page of tests."""
    client = analytics.from_config(analytics.configured_client, **POLL_SETTINGS)
    organizations = client.get_list(settings.ORGANIZATIONS_PATH, settings.ORGANIZATIONS)
    first_tests = client.page(analytics.ListSpec(settings.TESTS_PATH, client.tests_key), 1)
    served = json.dumps([organizations, first_tests], sort_keys=True)
    return hashlib.sha256(served.encode()).hexdigest()


analytics_sync = dg.define_asset_job(
    "analytics_sync",
    selection=dg.AssetSelection.groups(GROUP_NAME),
    description="Sync organizations, projects and tests from the analytics API, with all checks.",
)

analytics_checks = dg.define_asset_job(
    "analytics_checks",
    selection=dg.AssetSelection.checks_for_assets(analytics_tables),
    description="Run every asset check against the warehouse as it is, without syncing.",
)

analytics_daily = dg.ScheduleDefinition(
    name="analytics_daily",
    job=analytics_sync,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="The full daily sync at 05:00 UTC. Off by default: turn it on in the UI.",
)


@dg.sensor(
    job=analytics_sync,
    minimum_interval_seconds=15 * 60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Every 15 minutes, polls the organizations and the first page of tests (two requests, "
        "inside the 60 s a sensor may take) and launches analytics_sync when they changed since "
        "the last poll. Its first poll (or the first after a cursor reset) launches a sync."
    ),
)
def analytics_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """A sync when the API's fingerprint differs from the cursor's: the cursor alone decides.

    A run key is deduplicated over the sensor's history: an upstream at A, B, A would not sync.
    """
    try:
        fingerprint = upstream_fingerprint()
    except (analytics.SettingError, analytics.ApiError, requests.HTTPError) as e:
        # a setting to fix, the API out of reach, or a 5xx after the poll's retries (with its URL)
        context.log.warning(f"Poll skipped: {e}")
        return dg.SkipReason(f"Poll skipped: {e}")
    if fingerprint == context.cursor:
        return dg.SkipReason("No upstream change since the last poll.")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={"analytics/trigger": "upstream"})],
        cursor=fingerprint,
    )


@dg.run_failure_sensor(
    name="analytics_failure_sensor",
    # no monitored_jobs: every job of the code location, the UI's implicit "Materialize" too
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reports a failed run of this code location (a sync, the checks, the UI's Materialize), "
        f"each failed step's cause on one line; posts it as JSON to {WEBHOOK_SETTING} if set."
    ),
)
def analytics_failure_sensor(context: dg.RunFailureSensorContext) -> None:
    """One line naming the run and the cause; the optional webhook gets the same as JSON."""
    run = context.dagster_run
    cause = failure_cause(context)
    context.log.error(f"Run {run.run_id} of {run.job_name} failed: {cause}")
    url = dlt.secrets.get(WEBHOOK_SETTING, str)
    if not url:
        return
    payload = {"run_id": run.run_id, "job": run.job_name, "status": "FAILURE", "cause": cause}
    try:
        requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S).raise_for_status()
    except requests.RequestException as e:
        # the webhook URL may itself be a secret: name the failure, not the URL
        status = e.response.status_code if e.response is not None else type(e).__name__
        context.log.warning(f"Failure webhook ({WEBHOOK_SETTING}) was not delivered: {status}")


def failure_cause(context: dg.RunFailureSensorContext) -> str:
    """Each failed step's root error (the HTTP status, the broken check), or the run's message."""
    causes = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause  # Dagster and dlt wrap the error that says what went wrong
        message = (error.message if error else event.message or "").strip()
        causes.append(f"{event.step_key}: {one_line(message)}")
    return "; ".join(causes) or one_line(context.failure_event.message or "unknown cause")


def one_line(message: str) -> str:
    """At most LIMIT characters, cut hard: a URL or JSON without spaces is kept, not dropped."""
    text = " ".join(message.split())
    return text if len(text) <= LIMIT else text[: LIMIT - 1] + "…"
