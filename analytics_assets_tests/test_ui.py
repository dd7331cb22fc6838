"""End to end: `dagster dev` (webserver + daemon) from workspace.yaml, driven like a user would.

One `dagster dev` serves the whole module: the GraphQL test launches `analytics_sync` through the
API and waits for it; the browser tests then look at what a data engineer sees (the asset graph,
checks tabs and their SQL, an asset's freshness policy and columns, the catalog's descriptions)
in headless Chromium (Debian's package, driven by Playwright; no browser is downloaded).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from analytics_assets import defs
from analytics_assets.sample_api import SampleApiServer, build_account
from analytics_assets.sources.analytics.settings import COLUMN_DESCRIPTIONS, TESTS
from analytics_assets_tests.conftest import CHECK_KEYS, CHECKS_PER_ASSET, SQL_CHECKS

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "screenshots"
STARTUP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 300
# The daemon evaluates freshness every 30 s by default; the freshness test waits for one pass.
FRESHNESS_DAEMON_INTERVAL_S = 5
FRESHNESS_TIMEOUT_S = 60
# The SQL dialog of a check: lines a reader takes in without scrolling sideways.
MAX_SQL_LINE_CHARS = 100

ASSETS_QUERY = """
query {
  assetNodes(group: {groupName: "analytics", repositoryName: "__repository__",
                     repositoryLocationName: "analytics_assets"}) {
    assetKey { path }
    assetMaterializations(limit: 1) { runId }
    assetChecksOrError {
      ... on AssetChecks {
        checks { name executionForLatestMaterialization { runId status } }
      }
    }
  }
}
"""


@dataclass
class DagsterDev:
    url: str
    api: SampleApiServer
    log: Path

    def graphql(self, query: str, **variables: object) -> dict:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    tmp = tmp_path_factory.mktemp("dagster-dev")
    home = tmp / "dagster_home"
    home.mkdir()
    # The community dialog ("Join the Dagster community") opens a second after a page loads on a
    # new instance and covers whatever a test clicks next; this file says a user dismissed it.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    port = free_port()
    log = tmp / "dagster-dev.log"
    with SampleApiServer(build_account()) as api, open(log, "w") as out:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "SOURCES__ANALYTICS__BASE_URL": api.url,
            "SOURCES__ANALYTICS__API_TOKEN": api.token,
            "DESTINATION__DUCKDB__CREDENTIALS": str(tmp / "warehouse.duckdb"),
            "DLT_DATA_DIR": str(tmp / "dlt"),
            "FRESHNESS_DAEMON_INTERVAL_SECONDS": str(FRESHNESS_DAEMON_INTERVAL_S),
        }
        dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
        command = [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            ui = DagsterDev(f"http://127.0.0.1:{port}", api, log)
            wait_until_loaded(ui, process)
            yield ui
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until_loaded(ui: DagsterDev, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited:\n{ui.log.read_text()[-3000:]}"
        try:
            data = ui.graphql(ASSETS_QUERY)
            if len(data["assetNodes"]) == 3:
                return
        except (requests.RequestException, AssertionError, KeyError):
            pass
        time.sleep(1)
    pytest.fail(f"dagster dev did not load the code location:\n{ui.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def synced(dagster_dev: DagsterDev) -> str:
    """Launch analytics_sync through GraphQL, as the UI's launchpad does; wait for success."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    host, port = dagster_dev.url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    run_id = client.submit_job_execution(
        "analytics_sync",
        repository_location_name="analytics_assets",
        repository_name="__repository__",
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        try:
            status = client.get_run_status(run_id).value
        except DagsterGraphQLClientError:
            status = None
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(1)
    assert status == "SUCCESS", (
        f"run {run_id} ended {status}:\n{dagster_dev.log.read_text()[-3000:]}"
    )
    return run_id


def test_sync_launched_through_graphql_materializes_everything_and_checks_it(
    dagster_dev: DagsterDev, synced: str
) -> None:
    nodes = {
        node["assetKey"]["path"][-1]: node
        for node in dagster_dev.graphql(ASSETS_QUERY)["assetNodes"]
    }

    assert set(nodes) == set(CHECKS_PER_ASSET)
    for table, node in nodes.items():
        assert node["assetMaterializations"] == [{"runId": synced}], table
        checks = node["assetChecksOrError"]["checks"]
        assert len(checks) == CHECKS_PER_ASSET[table]
        for check in checks:
            execution = check["executionForLatestMaterialization"]
            assert execution == {"runId": synced, "status": "SUCCEEDED"}, (table, check)
    assert dagster_dev.api.request_count("/loadtests/v2/tests") > 0


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Debian's chromium is not installed (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def open_page(browser, url: str):
    """A fresh page at `url` (the instance has seen the community dialog: `dagster_dev`)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url, wait_until="networkidle")
    return page


def sidebar_section(page, title: str):
    """The content of an asset page's collapsible section (overview or sidebar) named `title`."""
    button = page.locator("button[aria-controls]").filter(has=page.get_by_text(title, exact=True))
    button.wait_for(timeout=60_000)
    return page.locator(f"[id='{button.get_attribute('aria-controls')}']")


def test_asset_graph_shows_the_three_tables_and_their_edges(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    page = open_page(browser, f"{dagster_dev.url}/asset-groups/analytics")
    passed = {table: f"{n} / {n} Passed" for table, n in CHECKS_PER_ASSET.items()}
    page.get_by_text(passed["tests"]).wait_for(timeout=60_000)  # tests' checks, once loaded
    for label in (passed["organizations"], passed["projects"]):  # once per table with that count
        assert page.get_by_text(label).count() == list(passed.values()).count(label), label
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "asset-graph.png")

    boxes = page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('svg foreignObject'))
             .filter(fo => fo.querySelector('[data-tooltip]'))
             .map(fo => [fo.querySelector('[data-tooltip]').getAttribute('data-tooltip'),
                         [+fo.getAttribute('x'), +fo.getAttribute('width')]]))"""
    )
    assert set(boxes) == {"organizations", "projects", "tests"}
    edges = page.evaluate(
        """() => Array.from(document.querySelectorAll('svg path[marker-end]'))
             .map(p => p.getAttribute('d').match(/-?[\\d.]+/g).map(Number))"""
    )
    # an edge starts at its source's right side and ends (arrow head) at its target's left side
    drawn = {
        (source, target)
        for source, (sx, sw) in boxes.items()
        for target, (tx, _) in boxes.items()
        for d in edges
        if abs(d[0] - (sx + sw)) < 15 and abs(d[-2] - tx) < 15
    }
    assert drawn == {("organizations", "projects"), ("projects", "tests")}


def test_checks_tab_lists_every_check_with_its_status(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    page = open_page(browser, f"{dagster_dev.url}/assets/analytics/projects?view=checks")
    rows = page.locator("[class*='AssetChecks_checkRow']")
    rows.nth(CHECKS_PER_ASSET["projects"] - 1).wait_for(timeout=60_000)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "projects-checks.png")

    statuses = {
        rows.nth(i).locator("[title]").first.get_attribute("title"): rows.nth(i).inner_text()
        for i in range(rows.count())
    }
    assert (
        set(statuses)
        == {key.name for key in CHECK_KEYS if key.asset_key.path[-1] == "projects"}
        >= {"id_is_unique_and_not_null", "matches_seed_schema", "column_schema_change"}
    )
    assert all("Succeeded" in text for text in statuses.values()), statuses
    page.get_by_text("Passed", exact=True).first.wait_for(timeout=30_000)


def test_asset_page_states_the_freshness_policy_in_days(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    page = open_page(browser, f"{dagster_dev.url}/assets/analytics/tests")
    panel = sidebar_section(page, "Freshness policy")
    panel.get_by_text("since last materialization").first.wait_for(timeout=60_000)
    panel.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "tests-freshness-policy.png")

    lines = panel.inner_text().splitlines()
    assert lines[-2:] == [
        "Fails if more than 3 days since last materialization",
        "Warns if more than 2 days since last materialization",
    ], lines


def test_freshness_daemon_marks_the_synced_table_passing(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    deadline = time.monotonic() + FRESHNESS_TIMEOUT_S
    lines: list[str] = []
    while time.monotonic() < deadline:
        page = open_page(browser, f"{dagster_dev.url}/assets/analytics/tests")
        panel = sidebar_section(page, "Freshness policy")
        panel.get_by_text("since last materialization").first.wait_for(timeout=60_000)
        lines = panel.inner_text().splitlines()
        if lines[0] != "Not evaluated":  # the daemon has not evaluated it since the sync
            break
        page.close()
        time.sleep(FRESHNESS_DAEMON_INTERVAL_S / 2)
    panel.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "tests-freshness-passing.png")

    assert lines[0] == "Passing", lines
    assert lines[1].startswith("Last materialized "), lines
    assert lines[1].endswith(" ago"), lines


def test_columns_table_describes_every_seed_column(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    page = open_page(browser, f"{dagster_dev.url}/assets/analytics/tests")
    section = sidebar_section(page, "Columns")
    section.get_by_text("test_run_ids", exact=True).wait_for(timeout=60_000)
    section.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "tests-columns.png")

    shown = section.locator("table").first.evaluate(
        """table => Object.fromEntries(Array.from(table.querySelectorAll('tbody tr'))
             .map(tr => tr.querySelectorAll('td'))
             .map(td => [td[0].querySelector('span').innerText, td[2].innerText.trim()]))"""
    )
    assert shown["test_run_ids"] == "Ids of every run of the test, as a JSON array."
    assert shown["id"] == "The test's id, the primary key."
    assert {name: shown.get(name) for name in COLUMN_DESCRIPTIONS[TESTS]} == COLUMN_DESCRIPTIONS[
        TESTS
    ]


def test_check_sql_dialog_shows_every_statement_line_by_line_in_full(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    checks = f"{dagster_dev.url}/assets/analytics/tests?view=checks"
    page = open_page(browser, checks)
    rows = page.locator("[class*='AssetChecks_checkRow']")
    rows.nth(CHECKS_PER_ASSET["tests"] - 1).wait_for(timeout=60_000)
    names = [
        rows.nth(i).locator("[title]").first.get_attribute("title") for i in range(rows.count())
    ]
    assert len(names) == CHECKS_PER_ASSET["tests"]
    SCREENSHOTS.mkdir(exist_ok=True)

    for name in (n for n in names if n in {key.name for key in SQL_CHECKS}):
        page.close()
        page = open_page(browser, f"{checks}&checkDetail={name}")
        sql_row = page.locator("tr:has(> td:text-is('sql'))")
        sql_row.get_by_text("[Show Markdown]").click(timeout=60_000)
        dialog = page.get_by_role("dialog")
        code = dialog.locator("pre code")
        code.wait_for(timeout=10_000)
        # the dialog fades and grows in: measure and screenshot it once it stands still
        page.evaluate("() => Promise.all(document.getAnimations().map(a => a.finished))")
        page.screenshot(path=SCREENSHOTS / f"tests-check-sql-{name}.png")

        text = code.inner_text()
        lines = text.rstrip("\n").splitlines()
        assert dialog.get_by_text("sql", exact=True).count() == 1, name  # the dialog's title
        assert text.count("\n") > 1, (name, text)
        assert any(line.startswith("SELECT ") for line in lines), (name, text)
        assert lines[-1].endswith(";"), (name, text)
        assert max(len(line) for line in lines) <= MAX_SQL_LINE_CHARS, (name, text)
        # nothing is cut off: the code block fits its dialog, with no sideways scrolling
        fits = code.evaluate(
            """code => {
                 const box = code.closest('[role=dialog]').getBoundingClientRect();
                 const pre = code.parentElement;
                 const edges = pre.getBoundingClientRect();
                 const scroller = code.closest('[style*="overflow: auto"]');
                 return edges.left >= box.left && edges.right <= box.right
                   && pre.scrollWidth <= pre.clientWidth
                   && scroller.scrollWidth <= scroller.clientWidth;
               }"""
        )
        assert fits, (name, text)
        dialog.get_by_role("button", name="Close").click()
        dialog.wait_for(state="detached")


def test_catalog_shows_each_description_as_plain_words(
    dagster_dev: DagsterDev, synced: str, browser
) -> None:
    descriptions = {spec.key.path[-1]: spec.description for spec in defs.resolve_all_asset_specs()}
    page = open_page(browser, f"{dagster_dev.url}/assets")
    page.get_by_text(descriptions[TESTS], exact=True).wait_for(timeout=60_000)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "catalog-descriptions.png")

    for table, description in descriptions.items():
        shown = page.get_by_text(description, exact=True)
        assert shown.count() == 1, table
        assert "`" not in shown.inner_text(), table
    assert "`" not in page.locator("body").inner_text()
