"""The dashboard in headless Chromium against the real web server and the real pipeline behind it.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python; ``playwright install``
is never needed. A missing browser or Playwright is a test failure, not a skip: this tier must run in CI.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.demo import make_demo_clip
from stack.harness import API_KEY, Stack, running_stack
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from tests.conftest import ServeApp

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
VIEWPORT = {"width": 1280, "height": 720}
CAMERA_ID = "demo-crossing"
FINAL_STATES = ("complete", "partial", "skipped", "unavailable")
PIPELINE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    """The provider answers every group ``high`` with a severe risk type, so an alert is raised."""
    config = SimConfig(keys={API_KEY: SimKey(key_id="k1")}, levels={"high": 1.0})
    with ProviderSimulator(config) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim: ProviderSimulator) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("dashboard"), sim, "web", "gpu", "llm", "default", "capture") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium under Playwright; fails (never skips) when either is missing."""
    executable = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    if executable is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -r requirements-dev.txt", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page at 1280×720 that records its uncaught script errors in ``page.script_errors``."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.script_errors = []
    page.on("pageerror", lambda exc: page.script_errors.append(str(exc)))
    yield page
    screenshot(page, "dashboard-last")  # the page as the test left it: what to look at when it failed
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot under artifacts/ (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def add_camera(page: Any, camera_id: str, url: str, name: str = "") -> None:
    """Fill and submit the page's own add-camera form (it emits start_stream)."""
    page.fill("#camera-id", camera_id)
    page.fill("#camera-url", url)
    page.fill("#camera-name", name)
    page.click("#add-camera-submit")


def test_camera_wall_shows_frames_boxes_verdicts_and_alerts(page: Any, stack: Stack, tmp_path: Path) -> None:
    clip = make_demo_clip(tmp_path / "demo.avi")
    page.goto(stack.web_url + "/")
    page.wait_for_selector('#connection[data-state="connected"]', timeout=15_000)
    assert "Connected" in page.inner_text("#connection")

    # A refused start_stream is explained inline, and the connection stays up.
    add_camera(page, "bad-cam", "ftp://example.invalid/stream")
    page.wait_for_selector("#add-camera-error:not([hidden])", timeout=10_000)
    assert "scheme" in page.inner_text("#add-camera-error")
    assert page.get_attribute("#connection", "data-state") == "connected"

    add_camera(page, CAMERA_ID, str(clip), "Demo crossing")
    tile = f'.tile[data-camera-id="{CAMERA_ID}"]'
    page.wait_for_selector(tile, timeout=10_000)
    page.wait_for_selector("#add-camera-error", state="hidden", timeout=10_000)
    page.wait_for_selector(f'{tile} .tile-status[data-status="online"]', timeout=PIPELINE_TIMEOUT_MS)

    # The latest frame is a picture that really loaded, with detection and group boxes over it.
    page.wait_for_function(
        """sel => { const img = document.querySelector(sel + ' .tile-frame');
                    return img && !img.hidden && img.complete && img.naturalWidth > 0; }""",
        arg=tile,
        timeout=PIPELINE_TIMEOUT_MS,
    )
    page.wait_for_function(
        "sel => Number(document.querySelector(sel + ' .tile-overlay').dataset.boxCount) >= 1",
        arg=tile,
        timeout=PIPELINE_TIMEOUT_MS,
    )
    final = ", ".join(f'{tile} .tile-assessment[data-assessment="{state}"]' for state in FINAL_STATES)
    page.wait_for_selector(final, timeout=PIPELINE_TIMEOUT_MS)
    page.wait_for_selector(f"{tile}[data-risk='high']", timeout=PIPELINE_TIMEOUT_MS)
    page.wait_for_selector('#alert-feed .alert[data-level="high"]', timeout=PIPELINE_TIMEOUT_MS)

    # The overlay is redrawn for every newer result: wait for detection boxes rather than sample it once.
    page.wait_for_selector(f"{tile} .tile-overlay g.box.detection", state="attached", timeout=PIPELINE_TIMEOUT_MS)
    # The demo clip alternates a scene with a group and one without: wait for a frame with a group.
    page.wait_for_selector(f"{tile} .tile-overlay g.box.group", timeout=PIPELINE_TIMEOUT_MS)
    assessment = page.inner_text(f"{tile} .tile-assessment")
    assert assessment in FINAL_STATES or assessment == "assessing…", assessment
    page.wait_for_selector(f'{tile} .tile-alerts[data-level="high"]', timeout=PIPELINE_TIMEOUT_MS)
    assert page.locator(f"{tile} .tile-risk").inner_text().strip()
    assert page.locator(f"{tile} .tile-counts .count").count() >= 1

    alert = page.locator("#alert-feed .alert").first
    assert alert.get_attribute("data-camera-id") == CAMERA_ID
    assert alert.locator(".alert-types").inner_text().strip(), "an alert names its risk types"
    screenshot(page, "dashboard")
    alert.locator("button").click()
    page.wait_for_selector(f"{tile}.highlight", timeout=5_000)

    # Any other refused event is a toast with its code; the connection stays.
    page.evaluate("() => window.trafficDashboard.state.socket.emit('stop_stream', {cameraId: 'no-such-cam'})")
    page.wait_for_selector(".toast:has-text('camera_not_found')", timeout=10_000)
    assert page.get_attribute("#connection", "data-state") == "connected"

    # Removal from the tile: two clicks (arm, confirm) emit stop_stream and the tile goes.
    remove = page.locator(f"{tile} .tile-remove")
    remove.click()
    remove.click()
    page.wait_for_selector(tile, state="detached", timeout=15_000)
    assert page.get_attribute("#connection", "data-state") == "connected"
    assert not page.script_errors, page.script_errors


TOKEN = "wall-token-0123456789"


@pytest.fixture
def protected_url(redis_url: str, serve_app: ServeApp) -> str:
    """A web server (no pipeline behind it) that requires ``TOKEN``."""
    from traffic.config import load_settings
    from web import create_app

    return "http://" + serve_app(create_app(load_settings({"REDIS_URL": redis_url, "TRAFFIC_AUTH_TOKEN": TOKEN})))


def test_signing_in_keeps_the_token_out_of_every_url(browser: Any, protected_url: str) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(protected_url + "/")
        page.wait_for_selector("#login-form:not([hidden])", timeout=15_000)
        assert page.get_attribute("#connection", "data-state") == "failed"
        page.fill("#login-token", "not-the-token")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])", timeout=5_000)
        assert page.text_content("#login-error") == "Wrong token."
        page.fill("#login-token", TOKEN)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector('#connection[data-state="connected"]', timeout=15_000)
        assert page.is_hidden("#login-form")
        (cookie,) = [c for c in context.cookies() if c["name"] == "traffic_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != TOKEN

        # An old bookmark with ?token= signs in too, and the token leaves the address bar.
        fresh = browser.new_context(viewport=VIEWPORT)
        bookmarked = fresh.new_page()
        bookmarked.on("request", lambda request: requested.append(request.url))
        bookmarked.goto(f"{protected_url}/?token={TOKEN}")
        bookmarked.wait_for_selector('#connection[data-state="connected"]', timeout=15_000)
        assert "token" not in bookmarked.url
        assert bookmarked.evaluate("document.cookie") == "", "the session cookie is not readable by scripts"
        fresh.close()
        # Only the bookmark itself named the token; nothing the page requested did.
        assert [url for url in requested if TOKEN in url] == [f"{protected_url}/?token={TOKEN}"]
    finally:
        screenshot(page, "dashboard-sign-in")
        context.close()
