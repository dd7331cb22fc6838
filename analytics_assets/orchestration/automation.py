"""Jobs, the daily schedule and the sensors that keep the analytics tables fresh.

Defaults are chosen so that nothing calls the API unless the user turns it on: the schedule and
the change sensor start STOPPED; the run-failure sensor, which only reads Dagster's own events,
starts RUNNING.
"""

import hashlib
import json

import dlt
import requests
from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    run_failure_sensor,
    sensor,
)

from analytics_assets.orchestration.assets import GROUP_NAME, analytics_tables
from analytics_assets.sources.analytics import (
    ApiError,
    SettingError,
    configured_client,
    from_config,
)
from analytics_assets.sources.analytics.settings import (
    ORGANIZATIONS,
    ORGANIZATIONS_PATH,
    TESTS_PATH,
)

WEBHOOK_SETTING = "alerts.webhook_url"
WEBHOOK_TIMEOUT_S = 10

# A poll's two requests take at most 2 x (2 attempts x 5 s + 0.5 s + 5 s of 429s) = 31 s, well
# inside the 60 s Dagster gives a sensor evaluation.
POLL_SETTINGS: dict[str, float] = {
    "concurrency": 1,
    "rate_limit_max_wait": 5.0,
    "request_max_attempts": 2,
    "request_backoff_factor": 0.5,
    "request_timeout": 5.0,
    "request_max_retry_delay": 5.0,
}


def upstream_fingerprint() -> str:
    """A cheap digest of what the API serves now: the organizations and the first page of tests.

    Two bounded requests: a poll must be quick, and a failure only means "try again later".
    """
    client = from_config(configured_client, **POLL_SETTINGS)
    organizations = client.get_list(ORGANIZATIONS_PATH, ORGANIZATIONS)
    first_tests = client.page(client.list_spec(TESTS_PATH), 1, client.tests_key)
    return hashlib.sha256(
        json.dumps([organizations, first_tests], sort_keys=True).encode()
    ).hexdigest()


analytics_sync = define_asset_job(
    "analytics_sync",
    selection=AssetSelection.groups(GROUP_NAME),
    description="Sync organizations, projects and tests from the analytics API, with all checks.",
)

analytics_checks = define_asset_job(
    "analytics_checks",
    selection=AssetSelection.checks_for_assets(analytics_tables),
    description="Run every asset check against the warehouse as it is, without syncing.",
)

analytics_daily = ScheduleDefinition(
    name="analytics_daily",
    job=analytics_sync,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="The full daily sync at 05:00 UTC. Off by default: turn it on in the UI.",
)


@sensor(
    job=analytics_sync,
    minimum_interval_seconds=15 * 60,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Every 15 minutes, polls the organizations list and the first page of tests (two "
        "requests, bounded well inside the 60 s a sensor may take) and launches analytics_sync "
        "when they changed since the last poll. Its first poll ever (or after its cursor is "
        "reset) launches a sync."
    ),
)
def analytics_change_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    """Launch a sync when the API's cheap fingerprint differs from the one in the cursor.

    The cursor alone decides what is new. A run key would be deduplicated over the sensor's
    whole history: an upstream that returns to an earlier state (A, B, then A again) would
    never sync again.
    """
    try:
        fingerprint = upstream_fingerprint()
    except (SettingError, ApiError) as e:
        return SkipReason(f"Poll skipped: {e}")
    except requests.RequestException as e:
        context.log.warning(f"Analytics API unreachable, poll skipped: {_describe(e)}")
        return SkipReason(f"Analytics API unreachable: {_describe(e)}")
    if fingerprint == context.cursor:
        return SkipReason("No upstream change since the last poll.")
    return SensorResult(
        run_requests=[RunRequest(tags={"analytics/trigger": "upstream"})],
        cursor=fingerprint,
    )


def _describe(error: requests.RequestException) -> str:
    response = error.response
    if response is not None:
        return f"HTTP {response.status_code} from {response.url}"
    return f"{type(error).__name__} for {error.request.url if error.request else 'the API'}"


@run_failure_sensor(
    name="analytics_failure_sensor",
    # no monitored_jobs: every job of the code location, the UI's "Materialize" (an implicit
    # asset job) included
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Reports a failed run of this code location (a sync, the checks, a materialization from "
        "the UI), each failed step's cause on one line, and posts it as JSON "
        f"to the webhook in the {WEBHOOK_SETTING} secret when one is set."
    ),
)
def analytics_failure_sensor(context: RunFailureSensorContext) -> None:
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


def failure_cause(context: RunFailureSensorContext) -> str:
    """Each failed step's root error (the HTTP status, the broken check), or the run's message."""
    causes = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause  # Dagster and dlt wrap the error that says what went wrong
        message = (error.message if error else event.message or "").strip()
        causes.append(f"{event.step_key}: {_first_lines(message)}")
    return "; ".join(causes) or _first_lines(context.failure_event.message or "unknown cause")


def _first_lines(message: str, limit: int = 400) -> str:
    """The message on one line, at most `limit` characters: JSON escapes it once, when posted."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"
