"""Browser tests: Debian's Chromium, driven by Playwright, against the service as `make run` starts it.

The browser is the system's ``chromium`` (``shutil.which``), never one Playwright downloads. Without
it the tests are skipped with the command that installs it, unless ``COSTROUTE_REQUIRE_BROWSER=1``
(CI sets it), which makes a missing browser a failure. Screenshots of each state, and the service's
log, go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, sync_playwright

from tests.conftest import _SERVICE_VARIABLES
from tests.payloads import repo_root

REQUIRE_BROWSER = "COSTROUTE_REQUIRE_BROWSER"
INSTALL_COMMAND = "apt-get update && apt-get install -y chromium"
ARTIFACTS = Path(__file__).with_name("artifacts")
# The flags that work on these machines; without the background-networking ones Chromium floods the
# closed network with connections. Playwright gives every launch a fresh, empty --user-data-dir
# itself (and refuses one in args).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 30.0
# The page probes GET usage, which this service does not have yet: Chromium itself logs the 404.
USAGE_PROBE = "/usage?group_by=day"


def no_browser(reason: str) -> NoReturn:
    """Skip, or fail where a browser is required (CI)."""
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{reason}; {REQUIRE_BROWSER}=1 requires the browser tests to run. Install it: {INSTALL_COMMAND}",
                    pytrace=False)
    pytest.skip(f"{reason}: the browser tests need Debian's Chromium; install it with `{INSTALL_COMMAND}` (as root)")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The system's Chromium, or a skip (a failure under COSTROUTE_REQUIRE_BROWSER=1)."""
    found = shutil.which("chromium")
    if found is None:
        no_browser("`chromium` was not found on PATH")
    return found


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Browser]:
    """One headless Chromium for the session."""
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_FLAGS)
        except Error as exc:
            no_browser(f"`{chromium_executable}` did not start ({exc.message.splitlines()[0]})")
        yield launched
        launched.close()


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def service(chromium_executable: str) -> Iterator[str]:
    """`make run` on a free port with the built-in registry, serving the page; its base URL (trailing slash)."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    # None of the developer's service settings: an OpenAI key, say, takes the mock models out of routing.
    env = {name: value for name, value in os.environ.items() if name not in _SERVICE_VARIABLES}
    log_path = ARTIFACTS / "make-run.log"
    with open(log_path, "wb") as log:
        # The log goes to a file: a pipe nobody reads would fill up with request lines and stall the server.
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=repo_root(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                api(base, "health")
                break
            except OSError:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, f"make run did not answer within {STARTUP_TIMEOUT_S:.0f} s"
                time.sleep(0.2)
        assert_serves_the_page(base)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def assert_serves_the_page(base: str) -> None:
    """GET / is the playground's HTML, or the tests fail saying what is missing."""
    try:
        with urllib.request.urlopen(base, timeout=5) as page:
            status, content_type = page.status, page.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, content_type = exc.code, exc.headers.get_content_type()
    if status == 404:
        pytest.fail("GET / answered 404: create_app does not register the playground blueprint "
                    "(costroute.web.playground.playground)", pytrace=False)
    assert (status, content_type) == (200, "text/html"), f"GET / answered {status} {content_type}"


def api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST a JSON body) over plain HTTP and decode the JSON answer; an error status raises HTTPError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def api_error(base: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST a body the service refuses; its status and error object."""
    try:
        api(base, path, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]
    raise AssertionError(f"{path} accepted {body}")


@dataclass
class Playground:
    """One browser tab on the playground, with what its console said."""

    page: Page
    base: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def open(self, path: str = "") -> None:
        """Load the page and wait until the registry table is filled."""
        self.page.goto(self.base + path)
        self.page.locator("#registry-rows tr").first.wait_for()

    def fill(self, values: dict[str, str]) -> None:
        """Fill form controls by id: selects by value, checkboxes by "on", the rest as typed text."""
        for control_id, value in values.items():
            control = self.page.locator(f"#{control_id}")
            kind = control.evaluate("node => node.type")
            if kind == "select-one":
                control.select_option(value)
            elif kind == "checkbox":
                control.set_checked(value == "on")
            else:
                control.fill(value)

    def screenshot(self, name: str) -> None:
        """Save the whole page as tests/browser/artifacts/<name>.png."""
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def unexpected_console_errors(self) -> list[str]:
        """Console errors, but for the browser's own line about the usage probe's 404."""
        return [e for e in self.console_errors if not (e.startswith("404 ") and e.endswith(USAGE_PROBE))]


@pytest.fixture
def open_tab(browser: Browser, service: str) -> Iterator[Callable[[int], Playground]]:
    """Fresh tabs (each its own sessionStorage) on windows of a given width; no script error may happen in any."""
    tabs: list[tuple[BrowserContext, Playground]] = []

    def new_tab(width: int = 1280) -> Playground:
        context = browser.new_context(viewport={"width": width, "height": 900})
        context.set_default_timeout(10_000)
        tab = Playground(context.new_page(), service)
        tab.page.on("console", lambda message: record_console(tab, message))
        tab.page.on("pageerror", lambda exc: tab.page_errors.append(str(exc)))
        tabs.append((context, tab))
        return tab

    yield new_tab
    for context, _ in tabs:
        context.close()
    assert [tab.page_errors for _, tab in tabs if tab.page_errors] == [], "the page's script failed"


def record_console(tab: Playground, message: ConsoleMessage) -> None:
    """Keep a console error as "<status> <text> at <url>" (Chromium's "Failed to load resource" lines name a status)."""
    if message.type == "error":
        status = message.text.split("status of ")[-1].split(" ")[0] if "status of " in message.text else "-"
        tab.console_errors.append(f"{status} {message.text} at {message.location.get('url', '')}")


@pytest.fixture
def playground(open_tab: Callable[[int], Playground]) -> Playground:
    """One fresh tab on a 1280 px wide window."""
    return open_tab(1280)
