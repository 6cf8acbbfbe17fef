"""Drive a headless Chromium (the Debian package) over the DevTools protocol: open pages, read the rendered text.

The one browser launcher of the tests. Only what they need: navigate, wait until text appears after the page's
JavaScript ran, click by text, evaluate JavaScript, take a screenshot, and a record of what the page did (console
errors, every HTTP response with its status, the body of failed ones) for checks and for failure messages.
Every wait has a timeout; the browser runs in its own process group and is killed with it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

WAIT_S = 90.0
"""How long a wait for page content lasts: the UI renders slowly when a busy 2-core machine also runs a flow."""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


# counts the page's requests in flight (fetch and XMLHttpRequest), so a test can wait until the page has its data;
# keeps the text of every element added to the page, so a transient toast can be checked after it vanished
_TRACK_PAGE = """
window.__shownText = [];
new MutationObserver(records => { for (const r of records) for (const n of r.addedNodes)
  if (n.nodeType === 1 && n.textContent) window.__shownText.push(n.textContent.slice(0, 2000)); })
  .observe(document, {childList: true, subtree: true});
window.__pendingRequests = 0;
const done = () => { window.__pendingRequests -= 1; };
const fetch0 = window.fetch;
window.fetch = (...args) => { window.__pendingRequests += 1; return fetch0(...args).finally(done); };
const send0 = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.send = function (...args) {
  window.__pendingRequests += 1; this.addEventListener('loadend', done, {once: true}); return send0.apply(this, args);
};
"""


def find_chromium() -> str | None:
    """The browser binary: $CC_REFINERY_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    if os.environ.get("CC_REFINERY_CHROMIUM"):
        return os.environ["CC_REFINERY_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def visible_text(raw: str) -> str:
    """Rendered text with runs of whitespace (table cells, line breaks) collapsed to one space."""
    return re.sub(r"\s+", " ", raw).strip()


class Chromium:
    """One headless browser with one page; records the page's console errors and HTTP responses."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 2000) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise RuntimeError("Chromium not found: install it or set CC_REFINERY_CHROMIUM")
        self.profile = Path(tempfile.mkdtemp(prefix="cc-refinery-chromium-"))
        cmd = [binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0"]
        cmd += [f"--window-size={width},{height}", "about:blank"]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._id = 0
        self.requests: dict[str, dict[str, Any]] = {}
        """Every HTTP request of the page since the last ``goto``, by DevTools request id, in order."""
        self.console: list[str] = []
        """Console errors, uncaught exceptions and browser log errors since the last ``goto``."""
        try:
            port = self._devtools_port(timeout_s=30)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = json.load(resp)
            page = next(t for t in targets if t["type"] == "page")
            # no keepalive pings (a local socket; a test busy elsewhere for minutes would miss the pong) and no
            # cap on queued events (a full queue stops reading the socket, pongs included)
            self.ws = connect(
                page["webSocketDebuggerUrl"],
                max_size=64 * 1024 * 1024,
                max_queue=None,
                open_timeout=10,
                ping_interval=None,
            )
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Page.addScriptToEvaluateOnNewDocument", source=_TRACK_PAGE)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout_s: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open its DevTools port within {timeout_s} s")

    def call(self, method: str, timeout_s: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are recorded)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._record(message["method"], message.get("params", {}))

    def _record(self, event: str, params: dict[str, Any]) -> None:
        if event == "Network.requestWillBeSent":
            request = params["request"]
            self.requests[params["requestId"]] = {
                "method": request["method"],
                "url": request["url"],
                "body": request.get("postData"),
                "status": None,
                "error": None,
                "done": False,
            }
        elif event == "Network.responseReceived" and params["requestId"] in self.requests:
            self.requests[params["requestId"]]["status"] = params["response"]["status"]
        elif event == "Network.loadingFinished" and params["requestId"] in self.requests:
            self.requests[params["requestId"]]["done"] = True
        elif event == "Network.loadingFailed" and params["requestId"] in self.requests:
            self.requests[params["requestId"]].update(done=True, error=params.get("errorText", "failed"))
        elif event == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif event == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif event == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.console.append(params["entry"]["text"])

    def failed_requests(self, url_part: str = "") -> list[dict[str, Any]]:
        """Requests (whose URL contains ``url_part``) answered with an HTTP error or never answered, with the
        response body where the browser still holds it: what a failure message needs to say what went wrong."""
        failed = []
        for request_id, request in self.requests.items():
            if url_part not in request["url"] or not (request["error"] or (request["status"] or 0) >= 400):
                continue
            try:
                body = self.call("Network.getResponseBody", requestId=request_id)["body"]
            except RuntimeError as e:
                body = f"(body unavailable: {e})"
            failed.append({**request, "response": body[:2000]})
        return failed

    def wait_for_answer(self, url_suffix: str, skip: int = 0, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The first request whose URL ends with ``url_suffix``, after ``skip`` earlier ones, once it has an answer
        (an HTTP status, or a network error) since the last ``goto``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.evaluate("0")  # reads the events that arrived meanwhile
            matching = [r for r in self.requests.values() if r["url"].endswith(url_suffix)][skip:]
            if matching and (matching[0]["status"] is not None or matching[0]["error"]):
                return matching[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to a request to ...{url_suffix} in {timeout_s:.0f} s: {matching}")
            time.sleep(0.25)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def goto(self, url: str, timeout_s: float = WAIT_S) -> None:
        """Open ``url`` in a fresh document (via about:blank, so no text of the previous page can match a wait).

        The record of requests and console errors starts anew with it.
        """
        self.call("Page.navigate", url="about:blank")
        deadline = time.monotonic() + timeout_s
        while self.evaluate("location.href") != "about:blank":
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not go blank")
            time.sleep(0.05)
        self.requests.clear()
        self.console.clear()
        self.call("Page.navigate", url=url)

    def load(self, url: str, timeout_s: float = WAIT_S) -> None:
        """``goto`` and wait until the document and its subresources (images, scripts) have loaded."""
        self.goto(url, timeout_s)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout_s=timeout_s)

    def text(self) -> str:
        return visible_text(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def wait_for_text(self, *needles: str, timeout_s: float = WAIT_S) -> str:
        """The page's rendered text once it contains every needle; AssertionError with what it showed instead."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"page never showed {missing}; it showed: {text[:3000]}")
            time.sleep(0.5)

    def wait_for(self, expression: str, timeout_s: float = WAIT_S) -> Any:
        """The value of a JavaScript expression once it is truthy (polled)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"never true on {self.evaluate('location.href')}: {expression}")
            time.sleep(0.25)

    def wait_for_shown(self, *needles: str, timeout_s: float = WAIT_S) -> None:
        """Until every needle was shown on this page at some point (toasts included, however briefly)."""
        shown = "window.__shownText.map(t => t.replace(/\\s+/g, ' '))"
        self.wait_for(
            f"((seen, needles) => needles.every(n => seen.some(t => t.includes(n))))({shown}, "
            f"{json.dumps(list(needles))})",
            timeout_s,
        )

    def wait_for_requests(self, timeout_s: float = WAIT_S) -> None:
        """Until the page has no request in flight (its data arrived and was applied)."""
        self.wait_for("window.__pendingRequests === 0", timeout_s)

    def click_text(self, text: str, selector: str = "*") -> None:
        """Click the innermost element matching ``selector`` whose whole visible text is ``text``."""
        found = self.evaluate(
            f"""(() => {{
                const els = [...document.querySelectorAll({json.dumps(selector)})]
                    .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
                const el = els[els.length - 1];
                if (!el) return false;
                el.click();
                return true;
            }})()"""
        )
        if not found:
            raise AssertionError(f"no {selector} element with text {text!r} on {self.evaluate('location.href')}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)
