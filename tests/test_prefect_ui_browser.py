"""The Prefect UI in a real headless Chromium: what a person sees after ``make ui``.

A real server with the deployments served and the outputs on HTTP (as ``make ui`` starts them); the browser
opens the deployment list, fills the run form (a bad value first, then a good one), presses Submit, waits for
the run to complete, reads the artifacts and opens the report from its link. Checks are on durable page text
after the UI's JavaScript ran, or on the run's state through the API: never on a toast, which vanishes after
a few seconds and may be gone before a loaded machine looks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.151')")
pytest.importorskip("websockets", reason="websockets (a prefect dependency) is not installed")

from flows.artifacts import artifact_key, funnel_rows  # noqa: E402
from flows.ui import PrefectServer  # noqa: E402
from pipeline.app.passes import run_stats  # noqa: E402
from pipeline.core.parts import document_files, total_stats  # noqa: E402
from tests import prefect_api  # noqa: E402
from tests.headless_chromium import Chromium, find_chromium  # noqa: E402
from tests.outputs import document_pass_dirs  # noqa: E402
from tests.prefect_api import LiveUI  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not found: install it (Debian: `apt-get install -y chromium`) or set CC_REFINERY_CHROMIUM",
)

RUN_NAME = "browser-run"
SUBMIT_ATTEMPTS = 5
"""Presses of Submit while the API answers 503 (SQLite locked), as many as Prefect's client retries."""
RUN_CREATED_S = 120.0
"""Submit to flow run in the API: one request, but the UI and the server share 2 busy cores with the test run."""
_FIELD_VALUES = "[...document.querySelectorAll('input, textarea')].map(e => e.value)"
_SET_VALUE = """
  const proto = el.tagName === 'TEXTAREA' ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
  Object.getOwnPropertyDescriptor(proto, 'value').set.call(el, value);
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
"""
# the form field holding a given value (fine where that value is unique in the form)
_SET_FIELD = (
    "((old, value) => {const el = [...document.querySelectorAll('input, textarea')].find(e => e.value === old);"
    " if (!el) return false;" + _SET_VALUE + "})(%s, %s)"
)
# Submit once the form holds ``value``; until then (re)apply the edit old -> value and answer false, so a form
# that re-renders with the deployment's values while a loaded machine loads the page gets the edit again
_SUBMIT_WHEN_KEPT = (
    "((old, value) => {const fields = [...document.querySelectorAll('input, textarea')];"
    " if (!fields.some(e => e.value === value)) {const el = fields.find(e => e.value === old);"
    " if (el) {" + _SET_VALUE.replace("return true;", "") + "} return false;}"
    " const button = [...document.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Submit').pop();"
    " if (!button || button.disabled) return false; button.click(); return true;})(%s, %s)"
)
# the first form field after the text that describes it (the form shows each field's description above it)
_SET_FIELD_AFTER = (
    "((text, value) => {const label = [...document.querySelectorAll('*')]"
    ".find(e => e.children.length === 0 && e.textContent.trim() === text); if (!label) return false;"
    " const el = [...document.querySelectorAll('input, textarea')]"
    ".find(i => label.compareDocumentPosition(i) & Node.DOCUMENT_POSITION_FOLLOWING);"
    " if (!el) return false;" + _SET_VALUE + "})(%s, %s)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    assert CHROMIUM is not None
    b = Chromium(CHROMIUM)
    yield b
    b.close()


def _set_field_after(browser: Chromium, description: str, new: str) -> None:
    found = browser.evaluate(_SET_FIELD_AFTER % (json.dumps(description), json.dumps(new)))
    assert found, f"no form field described as {description!r}"
    _wait_kept(browser, new)


def _wait_kept(browser: Chromium, value: str) -> None:
    """Until the form holds ``value`` and the requests the edit set off (if any) are answered."""
    browser.wait_for(f"{_FIELD_VALUES}.includes({json.dumps(value)})")
    browser.wait_for_requests()


def _open_run_form(browser: Chromium, server: PrefectServer) -> None:
    """The sample deployment's Custom run form, once it holds the deployment's values (loaded after the schema)."""
    browser.goto(f"{server.url}/deployments/deployment/{prefect_api.deployment_id(server.api_url, 'sample')}/run")
    browser.wait_for_text("Crawl id, e.g. CC-MAIN-2024-22.", "Submit")
    browser.wait_for(f"{_FIELD_VALUES}.includes('sample')")  # config.name of the sample deployment
    browser.wait_for_requests()  # the form re-renders as late data arrives, which would undo an edit made earlier


def _runs_of(server: PrefectServer, deployment: str) -> list[dict]:
    dep = prefect_api.deployment_id(server.api_url, deployment)
    return prefect_api.post(server.api_url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep]}}})


def _wait_for_run(server: PrefectServer, browser: Chromium, before: int, timeout_s: float = RUN_CREATED_S) -> dict:
    """The flow run Submit created, read through the API (the UI's "scheduled" toast is gone within seconds)."""
    deadline = time.monotonic() + timeout_s
    while len(runs := _runs_of(server, "sample")) == before:
        if time.monotonic() > deadline:
            shown = [t for t in browser.evaluate("window.__shownText") if len(t) < 300][-10:]
            raise AssertionError(f"the created flow run is not in the API after {timeout_s:.0f} s; page: {shown}")
        time.sleep(0.5)
    assert len(runs) == before + 1, runs
    return max(runs, key=lambda r: r["created"])


def _submit(browser: Chromium, server: PrefectServer) -> None:
    """Press Submit on the open run form (once it keeps the edited run name) until the API creates the run.

    The server answers 503 "Service Unavailable" when SQLite reports ``database is locked``: creating a flow run
    reads the deployment and then inserts the run in one deferred transaction, and another process writing in
    between (the serve process marking its deployments polled every second, the server's event persister and
    scheduler) makes the insert fail at once, whatever the busy timeout. Prefect's own client retries such an
    answer; the UI only shows "Something went wrong trying to create a flow run" and keeps the form, so the test
    presses Submit again, as a person would. Any other failed answer fails the test at once.
    """
    for attempt in range(SUBMIT_ATTEMPTS):
        browser.wait_for(_SUBMIT_WHEN_KEPT % (json.dumps("sample"), json.dumps(RUN_NAME)))
        answer = browser.wait_for_answer("/create_flow_run", skip=attempt, timeout_s=RUN_CREATED_S)
        if answer["status"] in (200, 201):
            return
        if answer["status"] != 503:
            break
    raise AssertionError(
        f"Submit did not create the run: {browser.failed_requests('/create_flow_run')}\n"
        f"console: {browser.console}\nserver log:\n{server.child.log_tail(80)}"
    )


@pytest.fixture(scope="module")
def browser_run(prefect_ui: LiveUI, browser: Chromium) -> dict:
    """Custom run from the form: the run name changed to RUN_NAME, then Submit; waits until the run is final."""
    before = len(_runs_of(prefect_ui.server, "sample"))
    _open_run_form(browser, prefect_ui.server)
    _submit(browser, prefect_ui.server)
    created = _wait_for_run(prefect_ui.server, browser, before)
    assert created["parameters"]["config"]["name"] == RUN_NAME, "the form lost the edited run name"
    run = prefect_api.wait_final(prefect_ui.server.api_url, created["id"])
    return {"run": run, "id": run["id"], "run_dir": prefect_ui.workdir / "out" / RUN_NAME}


def test_deployments_page_lists_the_deployments(prefect_ui: LiveUI, browser: Chromium) -> None:
    server = prefect_ui.server
    browser.goto(f"{server.url}/deployments")
    browser.wait_for_text(
        "5 Deployments",
        "local refinery",
        "sample refinery",
        "weekly-newest-dump refinery",
        "spark-cluster refinery",
        "ablate ablate",
    )
    weekly = prefect_api.deployment_id(server.api_url, "weekly-newest-dump")
    browser.goto(f"{server.url}/deployments/deployment/{weekly}")
    browser.wait_for_text("weekly-newest-dump", "At 03:00 AM, only on Monday", "flows.refinery_flow.refinery")


def test_run_form_shows_the_config_with_defaults_and_descriptions(prefect_ui: LiveUI, browser: Chromium) -> None:
    server = prefect_ui.server
    _open_run_form(browser, server)
    browser.wait_for_text(
        "Minimum score of a kept language.",
        "Where Common Crawl is read from",
        "Build and serve the embedded sample crawl",  # the flow's own parameters, from its docstring
    )
    values = browser.evaluate(_FIELD_VALUES)
    for default in ("https://data.commoncrawl.org/", "CC-MAIN-2024-22", "0.65", "sample", "out", "en"):
        assert default in values, f"form field with {default!r} missing: {values}"


def test_out_of_range_value_in_the_form_is_refused(prefect_ui: LiveUI, browser: Chromium) -> None:
    server = prefect_ui.server
    before = len(_runs_of(server, "sample"))
    _open_run_form(browser, server)
    _set_field_after(browser, "Minimum score of a kept language.", "1.5")
    browser.click_text("Submit", "button")
    # a toast: checked in what the page showed, since it may be gone before a loaded machine looks
    browser.wait_for_shown("Validation failed for field 'config.langid.threshold'", "1.5 is greater than the maximum")
    browser.wait_for_requests()
    assert len(_runs_of(server, "sample")) == before, "an invalid form created a flow run"


def test_custom_run_from_the_form_completes(browser_run: dict) -> None:
    run = browser_run["run"]
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["parameters"]["sample"] is True
    assert len(document_files(document_pass_dirs(browser_run["run_dir"])[-1])) == 4


def test_finished_run_page_shows_completed_logs_and_artifacts(
    prefect_ui: LiveUI, browser: Chromium, browser_run: dict
) -> None:
    server = prefect_ui.server
    warc = total_stats(browser_run["run_dir"])
    browser.goto(f"{server.url}/runs/flow-run/{browser_run['id']}")
    browser.wait_for_text("Completed", "warc pass finished: 4/4 parts done", f"run {RUN_NAME} finished")
    browser.click_text("Artifacts", "li")
    browser.wait_for_text(
        artifact_key(RUN_NAME, "funnel"),
        artifact_key(RUN_NAME, "drop-reasons"),
        artifact_key(RUN_NAME, "outputs"),
        artifact_key(RUN_NAME, "report"),
        artifact_key(RUN_NAME, "report-link"),
        f"warc pass: 4/4 parts done, {warc.source['documents']:,} documents read, {warc.docs_out:,} kept",
    )


def test_funnel_artifact_page_shows_the_numbers(prefect_ui: LiveUI, browser: Chromium, browser_run: dict) -> None:
    server = prefect_ui.server
    funnel = prefect_api.artifacts(server.api_url, browser_run["id"])[artifact_key(RUN_NAME, "funnel")]
    browser.goto(f"{server.url}/artifacts/artifact/{funnel['id']}")
    rows = funnel_rows(run_stats(document_pass_dirs(browser_run["run_dir"])))
    assert [r["stage"] for r in rows][:4] == ["url_filter", "prescreen", "extract", "langid"]
    shown = (" ".join(_as_shown(r[k]) for k in ("stage", "docs in", "docs out", "dropped", "kept %")) for r in rows)
    browser.wait_for_text(*shown)


def _as_shown(value: object) -> str:
    """A table cell as the UI prints it: JavaScript numbers, so 100.0 is "100"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_report_artifact_links_to_the_report_and_it_opens(
    prefect_ui: LiveUI, browser: Chromium, browser_run: dict
) -> None:
    """The headline artifact shows the numbers and an http link (file:// links are dropped by the UI) that loads."""
    report = prefect_api.artifacts(prefect_ui.server.api_url, browser_run["id"])[artifact_key(RUN_NAME, "report")]
    url = f"{prefect_ui.outputs.url}{RUN_NAME}/report/index.html"
    docs_out = run_stats(document_pass_dirs(browser_run["run_dir"])).docs_out
    browser.goto(f"{prefect_ui.server.url}/artifacts/artifact/{report['id']}")
    browser.wait_for_text(f"Dataset report of run {RUN_NAME}", f"documents out {docs_out}", "Top drop reasons")
    href = browser.wait_for(f"[...document.querySelectorAll('a')].map(a => a.href).find(h => h === {json.dumps(url)})")
    browser.goto(href)
    browser.wait_for_text(f"Dataset report: {RUN_NAME}", "Funnel", "Drop reasons")
