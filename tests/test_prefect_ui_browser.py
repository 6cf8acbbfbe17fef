"""The Prefect UI in a real headless Chromium: what a person sees after ``make ui``.

A real server with the deployments served (as ``make ui`` starts them); the browser opens the deployment
list, fills the run form (a bad value first, then a good one), presses Submit, watches the run complete
and reads the artifacts. Checks are on the rendered page text, after the UI's JavaScript ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.151')")
pytest.importorskip("websockets", reason="websockets (a prefect dependency) is not installed")

from flows.artifacts import artifact_key, funnel_rows  # noqa: E402
from flows.ui import PrefectServer  # noqa: E402
from pipeline.core.parts import document_files, total_stats  # noqa: E402
from tests import prefect_api  # noqa: E402
from tests.headless_chromium import Chromium, find_chromium  # noqa: E402
from tests.outputs import document_pass_dirs, run_stats  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not found: install it (Debian: `apt-get install -y chromium`) or set CC_REFINERY_CHROMIUM",
)

RUN_NAME = "browser-run"
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
# the first form field after the text that describes it (the form shows each field's description above it)
_SET_FIELD_AFTER = (
    "((text, value) => {const label = [...document.querySelectorAll('*')]"
    ".find(e => e.children.length === 0 && e.textContent.trim() === text); if (!label) return false;"
    " const el = [...document.querySelectorAll('input, textarea')]"
    ".find(i => label.compareDocumentPosition(i) & Node.DOCUMENT_POSITION_FOLLOWING);"
    " if (!el) return false;" + _SET_VALUE + "})(%s, %s)"
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrefectServer, Path]]:
    """Server + served deployments; flow runs execute with ``workdir`` as cwd (so output lands in workdir/out)."""
    workdir = tmp_path_factory.mktemp("ui-cwd")
    with prefect_api.live_prefect(tmp_path_factory.mktemp("ui-home"), workdir) as server:
        yield server, workdir


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    assert CHROMIUM is not None
    b = Chromium(CHROMIUM)
    yield b
    b.close()


def _set_field(browser: Chromium, old: str, new: str) -> None:
    assert browser.evaluate(_SET_FIELD % (json.dumps(old), json.dumps(new))), f"no form field holds {old!r}"
    time.sleep(0.3)
    assert new in browser.evaluate(_FIELD_VALUES), f"the form did not keep {new!r}"


def _set_field_after(browser: Chromium, description: str, new: str) -> None:
    found = browser.evaluate(_SET_FIELD_AFTER % (json.dumps(description), json.dumps(new)))
    assert found, f"no form field described as {description!r}"
    time.sleep(0.3)
    assert new in browser.evaluate(_FIELD_VALUES), f"the form did not keep {new!r}"


def _open_run_form(browser: Chromium, server: PrefectServer) -> None:
    """The sample deployment's Custom run form, once it holds the deployment's values (loaded after the schema)."""
    browser.goto(f"{server.url}/deployments/deployment/{prefect_api.deployment_id(server.api_url, 'sample')}/run")
    browser.wait_for_text("Crawl id, e.g. CC-MAIN-2024-22.", "Submit")
    browser.wait_for(f"{_FIELD_VALUES}.includes('sample')")  # config.name of the sample deployment
    time.sleep(0.5)  # let the form settle before editing it


def _runs_of(server: PrefectServer, deployment: str) -> list[dict]:
    dep = prefect_api.deployment_id(server.api_url, deployment)
    return prefect_api.post(server.api_url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep]}}})


@pytest.fixture(scope="module")
def browser_run(live: tuple[PrefectServer, Path], browser: Chromium) -> dict:
    """Custom run from the form: the run name changed to RUN_NAME, then Submit; waits until the run is final."""
    server, workdir = live
    _open_run_form(browser, server)
    _set_field(browser, "sample", RUN_NAME)
    browser.click_text("Submit", "button")
    browser.wait_for_text("scheduled to start now")
    runs = [r for r in _runs_of(server, "sample") if r["parameters"]["config"]["name"] == RUN_NAME]
    assert len(runs) == 1, runs
    run = prefect_api.wait_final(server.api_url, runs[0]["id"], timeout_s=150)
    return {"run": run, "id": run["id"], "run_dir": workdir / "out" / RUN_NAME}


def test_deployments_page_lists_the_deployments(live: tuple[PrefectServer, Path], browser: Chromium) -> None:
    server, _ = live
    browser.goto(f"{server.url}/deployments")
    browser.wait_for_text(
        "4 Deployments", "local refinery", "sample refinery", "weekly-newest-dump refinery", "spark-cluster refinery"
    )
    weekly = prefect_api.deployment_id(server.api_url, "weekly-newest-dump")
    browser.goto(f"{server.url}/deployments/deployment/{weekly}")
    browser.wait_for_text("weekly-newest-dump", "At 03:00 AM, only on Monday", "flows.refinery_flow.refinery")


def test_run_form_shows_the_config_with_defaults_and_descriptions(
    live: tuple[PrefectServer, Path], browser: Chromium
) -> None:
    server, _ = live
    _open_run_form(browser, server)
    browser.wait_for_text(
        "Minimum score of a kept language.",
        "Base URL of a Common Crawl mirror",
        "Build and serve the embedded sample crawl",  # the flow's own parameters, from its docstring
    )
    values = browser.evaluate(_FIELD_VALUES)
    for default in ("https://data.commoncrawl.org/", "CC-MAIN-2024-22", "0.65", "sample", "out", "en"):
        assert default in values, f"form field with {default!r} missing: {values}"


def test_out_of_range_value_in_the_form_is_refused(live: tuple[PrefectServer, Path], browser: Chromium) -> None:
    server, _ = live
    before = len(_runs_of(server, "sample"))
    _open_run_form(browser, server)
    _set_field_after(browser, "Minimum score of a kept language.", "1.5")
    browser.click_text("Submit", "button")
    browser.wait_for_text("Validation failed for field 'config.langid.threshold'", "1.5 is greater than the maximum")
    assert len(_runs_of(server, "sample")) == before, "an invalid form created a flow run"


def test_custom_run_from_the_form_completes(browser_run: dict) -> None:
    run = browser_run["run"]
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["parameters"]["sample"] is True
    assert len(document_files(document_pass_dirs(browser_run["run_dir"])[-1])) == 4


def test_finished_run_page_shows_completed_logs_and_artifacts(
    live: tuple[PrefectServer, Path], browser: Chromium, browser_run: dict
) -> None:
    server, _ = live
    warc = total_stats(browser_run["run_dir"])
    browser.goto(f"{server.url}/runs/flow-run/{browser_run['id']}")
    browser.wait_for_text("Completed", "warc pass finished: 4/4 parts done", f"run {RUN_NAME} finished")
    browser.click_text("Artifacts", "li")
    browser.wait_for_text(
        artifact_key(RUN_NAME, "funnel"),
        artifact_key(RUN_NAME, "drop-reasons"),
        artifact_key(RUN_NAME, "outputs"),
        artifact_key(RUN_NAME, "report"),
        f"warc pass: 4/4 parts done, {warc.source['documents']:,} documents read, {warc.docs_out:,} kept",
    )


def test_funnel_artifact_page_shows_the_numbers(
    live: tuple[PrefectServer, Path], browser: Chromium, browser_run: dict
) -> None:
    server, _ = live
    funnel = prefect_api.artifacts(server.api_url, browser_run["id"])[artifact_key(RUN_NAME, "funnel")]
    browser.goto(f"{server.url}/artifacts/artifact/{funnel['id']}")
    rows = funnel_rows(run_stats(document_pass_dirs(browser_run["run_dir"])))
    assert [r["stage"] for r in rows][:3] == ["url_filter", "extract", "langid"]
    browser.wait_for_text(*(f"{r['stage']} {r['docs in']} {r['docs out']} {r['dropped']} {r['kept %']}" for r in rows))
