"""The dashboard in headless Chromium against the real web server and the real pipeline behind it.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python; ``playwright install``
is never needed. A missing browser or Playwright is a test failure, not a skip: this tier must run in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from infra.camera_registry import CameraRegistry
from infra.emitter import Emitter
from stack.demo import make_demo_clip
from stack.harness import API_KEY, Stack, running_stack
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from stack.traffic_run import traffic_run
from tests.conftest import ServeApp
from traffic import redis_keys
from traffic.cameras import Camera
from traffic.wire import iso_timestamp

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


# --------------------------------------------------------------------------- events as the workers send them


@dataclass
class Wall:
    """A web server with no pipeline behind it, and the workers' way of sending its pages events."""

    url: str
    redis: redis.Redis
    emitter: Emitter


@pytest.fixture
def wall(redis_url: str, serve_app: ServeApp) -> Iterator[Wall]:
    """The web server on the Socket.IO message queue: an ``Emitter`` reaches its pages as a worker's does."""
    from traffic.config import load_settings
    from web import create_app

    client = redis.Redis.from_url(redis_url)
    url = "http://" + serve_app(create_app(load_settings({"REDIS_URL": redis_url})))
    yield Wall(url, client, Emitter(redis_url))
    client.close()


def detection_result(camera_id: str, at: float, assessment: str, levels: list[str]) -> dict[str, Any]:
    """A ``detection_result`` of a 1280×720 frame with one traffic group (two members) per level in ``levels``."""
    objects, groups = [], []
    for index, level in enumerate(levels):
        x = 100 + 400 * index
        objects += [
            {"class": "car", "confidence": 0.9, "bbox": [x, 300, x + 120, 380]},
            {"class": "person", "confidence": 0.8, "bbox": [x + 130, 290, x + 170, 400]},
        ]
        groups.append(
            {
                "groupIndex": index,
                "objectCount": 2,
                "bbox": [x - 12, 278, x + 182, 412],
                "classes": ["car", "person"],
                "averageConfidence": 0.85,
                "riskLevel": level,
                "memberIndices": [2 * index, 2 * index + 1],
            }
        )
    ranked = ["none", "low", "medium", "high"]
    return {
        "cameraId": camera_id,
        "frameId": f"{camera_id}-{at:.3f}",
        "timestamp": iso_timestamp(at),
        "imageWidth": 1280,
        "imageHeight": 720,
        "detectedObjects": objects,
        "trafficGroups": groups,
        "dangerousDrivingResults": [],
        "hasDangerousDriving": False,
        "maxRiskLevel": max(levels, key=ranked.index) if levels and assessment != "pending" else "none",
        "processTime": 0.05,
        "llmLatency": 0.0,
        "llmModel": "",
        "modelType": "yolo",
        "supportedClasses": ["car", "person"],
        "trackingEnabled": False,
        "assessment": assessment,
    }


def show_camera(page: Any, wall: Wall, camera_id: str, latest: dict[str, Any]) -> str:
    """Register the camera with ``latest`` as its latest final result and open the wall on it; the tile's selector.

    The page subscribes to the camera's room and the server answers with ``latest``: once its verdict is on
    the tile the page is in the room, and events sent from then on reach it.
    """
    CameraRegistry(wall.redis).add(Camera(camera_id, "rtsp://10.0.0.5/stream", f"Camera {camera_id}"))
    wall.redis.set(redis_keys.camera_latest(camera_id), json.dumps(latest))
    page.goto(wall.url + "/")
    tile = f'.tile[data-camera-id="{camera_id}"]'
    page.wait_for_selector(f'{tile} .tile-assessment[data-assessment="{latest["assessment"]}"]', timeout=15_000)
    return tile


def traffic_stats(camera_id: str, at: float) -> dict[str, Any]:
    """A ``traffic_stats`` event in pixels of a 640×360 image: half the size of the frames the tile shows."""
    stamp = iso_timestamp(at)
    return {
        "cameraId": camera_id,
        "timestamp": stamp,
        "trackingEpoch": 3,
        "unit": "m",
        "calibrated": True,
        "imageSize": [640, 360],
        "since": iso_timestamp(at - 3600),
        "lines": [
            {
                "name": "stop-line",
                "start": [50, 250],
                "end": [450, 260],
                "forward": "in",
                "backward": "out",
                "counts": {"in": {"car": 3, "person": 1}, "out": {}},
                "totals": {"in": 4, "out": 0},
            }
        ],
        "zones": [
            {
                "name": "crossing",
                "polygon": [[100, 200], [300, 200], [300, 350]],
                "direction": [0, -1],
                "occupancy": {"person": 2},
                "total": 2,
            }
        ],
        "tracks": [
            {
                "trackId": 7,
                "class": "car",
                "trail": [[205.25, 300], [210, 299.25]],
                "speed": 31.4,
                "speedUnit": "km/h",
                "zones": ["crossing"],
            }
        ],
        "nearMisses": [
            {
                "kind": "near_miss",
                "measure": "ttc",
                "value": 0.8,
                "threshold": 1.5,
                "trackIds": [3, 7],
                "classes": ["car", "person"],
                "position": [200, 305],
                "phase": "start",
                "rule": "rule-based",
                "at": stamp,
            }
        ],
        "events": [],
    }


def test_traffic_stats_draw_trails_lines_zones_and_near_misses_until_they_go_stale(page: Any, wall: Wall) -> None:
    camera = "cam-stats"
    now = time.time()
    tile = show_camera(page, wall, camera, detection_result(camera, now - 1, "skipped", []))
    layer = f"{tile} .tile-analytics"

    wall.emitter.to_camera(camera, "traffic_stats", traffic_stats(camera, now))
    track = f'{layer} g.track[data-track-id="7"]'
    page.wait_for_selector(track, timeout=10_000)
    # Drawn in the frame's pixels (1280×720): the stats' 640×360 coordinates doubled, as the boxes are placed.
    assert page.get_attribute(f"{track} polyline.track-trail", "points") == "410.5,600 420,598.5"
    assert page.text_content(f"{track} .track-label text") == "#7 31 km/h"

    line = f'{layer} g.count-line[data-line="stop-line"]'
    assert page.get_attribute(f"{line} line.count-line-path", "x1") == "100"
    assert page.text_content(f"{line} .count-line-label text") == "stop-line: in 4 · out 0"
    assert page.get_attribute(line, "data-total-in") == "4" and page.get_attribute(line, "data-total-out") == "0"

    zone = f'{layer} g.zone[data-zone="crossing"]'
    assert page.get_attribute(f"{zone} polygon.zone-shape", "points") == "200,400 600,400 600,700"
    assert page.get_attribute(zone, "data-total") == "2"
    assert page.text_content(f"{zone} .zone-label text") == "crossing · 2"

    miss = f"{layer} g.near-miss"
    assert page.get_attribute(miss, "data-track-ids") == "3,7"
    assert page.get_attribute(f"{miss} circle.near-miss-dot", "cx") == "400"
    title = page.text_content(f"{miss} > title")
    assert "ttc 0.80 s" in title and "threshold 1.5 s" in title and "tracks 3, 7" in title, title
    assert page.get_attribute(layer, "data-state") == "live"
    screenshot(page, "dashboard-traffic-stats")

    # No traffic_stats for 5 s: the drawing fades out and is cleared.
    page.wait_for_selector(f'{layer}[data-state="empty"]', state="attached", timeout=15_000)
    assert page.locator(f"{layer} g").count() == 0
    assert not page.script_errors, page.script_errors


def test_a_no_risk_verdict_reads_no_risk_and_a_group_without_one_not_rated(page: Any, wall: Wall) -> None:
    camera = "cam-verdicts"
    now = time.time()
    tile = show_camera(page, wall, camera, detection_result(camera, now - 10, "complete", ["none"]))
    group = f"{tile} .tile-overlay g.box.group"
    risk = f"{tile} .tile-risk"

    # Every group judged, none at risk: the group and the frame read "no risk".
    page.wait_for_selector(f'{group}[data-verdict="rated"]', timeout=10_000)
    assert page.text_content(f"{group} text") == "group 0 · no risk"
    assert page.get_attribute(risk, "data-level") == "none" and page.text_content(risk) == "no risk"

    # A newer frame still being assessed: its group has no verdict yet; the chip keeps the last verdict.
    wall.emitter.to_camera(camera, "detection_result", detection_result(camera, now - 8, "pending", ["none"]))
    page.wait_for_selector(f'{group}[data-verdict="unrated"]', timeout=10_000)
    assert page.text_content(f"{group} text") == "group 0 · not rated"
    assert page.text_content(risk) == "no risk"

    # The model could not be reached: nothing was rated, and the frame says so rather than "no risk".
    wall.emitter.to_camera(camera, "detection_result", detection_result(camera, now - 6, "unavailable", ["none"]))
    page.wait_for_selector(f'{risk}[data-level="unrated"]', timeout=10_000)
    assert page.text_content(risk) == "not rated"
    assert page.text_content(f"{group} text") == "group 0 · not rated"

    # Partly rated: the rated group shows its level, the other is not rated, the frame has the highest level.
    partial = detection_result(camera, now - 4, "partial", ["medium", "none"])
    wall.emitter.to_camera(camera, "detection_result", partial)
    page.wait_for_selector(f'{risk}[data-level="medium"]', timeout=10_000)
    assert page.text_content(risk) == "medium risk"
    labels = page.locator(f"{group} text").all_text_contents()
    assert labels == ["group 0 · medium", "group 1 · not rated"], labels
    assert not page.script_errors, page.script_errors


# --------------------------------------------------------------------------- the simulated-model demo

DOCS_PICTURE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"


def test_the_simulated_model_demo_shows_verdicts_and_alerts_labelled_simulated(
    page: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``traffic run --simulated-model`` as a newcomer starts it: the demo camera's groups get verdicts above
    ``none`` and an alert, each labelled simulated, with no key and no network."""
    with traffic_run(tmp_path_factory.mktemp("newcomer"), "--simulated-model") as running:
        assert "model:       SIMULATED" in running.said()
        page.goto(running.stack.web_url + "/")
        page.wait_for_selector('#connection[data-state="connected"]', timeout=15_000)
        tile = '.tile[data-camera-id="demo"]'
        page.wait_for_selector(tile, timeout=15_000)
        page.wait_for_selector(f'{tile}[data-simulated="true"] .tile-simulated:not([hidden])', timeout=90_000)
        risky = ", ".join(f"{tile}[data-risk='{level}']" for level in ("low", "medium", "high"))
        page.wait_for_selector(risky, timeout=90_000)
        page.wait_for_selector('.alert[data-simulated="true"] .alert-simulated:not([hidden])', timeout=90_000)
        assert page.is_visible("#simulated-banner")
        assert "made up" in page.inner_text("#simulated-banner")
        # The alert's incident gets its evidence: the worker's snapshot, then the capture process's clip.
        page.wait_for_selector('.incident[data-snapshot="true"][data-clip="true"] .incident-thumb', timeout=90_000)
        assert page.script_errors == []
        path = screenshot(page, "dashboard-simulated")
    if os.environ.get("UPDATE_DOCS_PICTURE"):  # `make docs-picture`: the README's picture, kept current
        from PIL import Image

        DOCS_PICTURE.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as picture:  # 256 colours: a third of the bytes, the same to the eye
            picture.convert("RGB").quantize(colors=256).save(DOCS_PICTURE, optimize=True)


# --------------------------------------------------------------------------- incidents


def test_operators_see_incidents_act_on_them_and_see_new_ones_arrive(
    page: Any, redis_url: str, serve_app: ServeApp, tmp_path: Path
) -> None:
    from infra.incident_db import IncidentQuery, IncidentStore, database_engine, migrate
    from traffic.alerts import Alert, AlertEvent, AlertKind
    from traffic.config import load_settings
    from traffic.incidents import IncidentStatus, sighting_of
    from traffic.models import RiskLevel
    from web import create_app
    from workers.context import WorkerContext
    from workers.finalize import emit_alert_events
    from workers.incidents import flush_incidents

    database = f"sqlite:///{tmp_path / 'incidents.db'}"
    engine = database_engine(database)
    migrate(engine)
    store = IncidentStore(engine)
    now = time.time()

    def event(alert_id: str, level: RiskLevel, at: float) -> AlertEvent:
        alert = Alert(
            alert_id, "cam-i", level, ("jaywalking",), "a pedestrian steps out", first_seen=at, last_seen=at,
            frame_id="f1", bbox=(1.0, 2.0, 3.0, 4.0), count=1, model="qwen-vl-plus",
        )  # fmt: skip
        return AlertEvent(AlertKind.NEW, alert)

    store.record(sighting_of(event("cam-i:a", RiskLevel.HIGH, now - 60)))
    store.record(sighting_of(event("cam-i:b", RiskLevel.MEDIUM, now - 30)))
    settings = load_settings({"REDIS_URL": redis_url, "TRAFFIC_DATABASE_URL": database})
    client = redis.Redis.from_url(redis_url)
    CameraRegistry(client).add(Camera("cam-i", "rtsp://10.0.0.5/stream", "Crossing"))  # on the wall: its room
    url = "http://" + serve_app(create_app(settings))
    page.goto(url + "/")
    page.wait_for_selector('#connection[data-state="connected"]', timeout=15_000)
    page.wait_for_selector("#incidents-panel:not([hidden]) .incident", timeout=15_000)
    assert page.locator(".incident").count() == 2
    first = '.incident[data-status="open"][data-level="medium"]'
    assert page.is_visible(f'{first} button[data-action="acknowledge"]')
    assert not page.is_visible(f'{first} button[data-action="reopen"]')

    # No name: the action is refused in the page, before any request.
    page.click(f'{first} button[data-action="acknowledge"]')
    page.wait_for_selector("#incident-error:not([hidden])", timeout=5_000)
    assert "your name" in page.inner_text("#incident-error")
    page.fill("#incident-who", "ann")
    page.fill(f"{first} .incident-note", "crew on the way")
    page.click(f'{first} button[data-action="acknowledge"]')
    page.wait_for_function("() => document.querySelectorAll('.incident').length === 1", timeout=10_000)  # open only
    page.select_option("#incident-status", "acknowledged")
    page.wait_for_selector('.incident[data-status="acknowledged"] button[data-action="reopen"]', timeout=10_000)
    acknowledged = store.query(IncidentQuery(status=IncidentStatus.ACKNOWLEDGED)).incidents
    assert [i.alert_id for i in acknowledged] == ["cam-i:b"]
    found = store.get(acknowledged[0].incident_id)
    assert found is not None and [(a.who, a.note) for a in found[1]] == [("ann", "crew on the way")]

    # A new alert reaches the database through the flush job, and the open list shows it at once.
    page.select_option("#incident-status", "open")
    page.wait_for_function("() => document.querySelectorAll('.incident').length === 1", timeout=10_000)
    ctx = WorkerContext(settings)
    emit_alert_events(ctx, "cam-i", [event("cam-i:c", RiskLevel.HIGH, time.time())])
    assert flush_incidents(ctx) == 1
    page.wait_for_function("() => document.querySelectorAll('.incident').length === 2", timeout=10_000)
    assert page.script_errors == []
    screenshot(page, "dashboard-incidents")
    client.close()
    ctx.redis.close()
    engine.dispose()


def test_operators_open_an_incidents_snapshot_and_see_its_clip_arrive(
    page: Any, redis_url: str, serve_app: ServeApp, tmp_path: Path
) -> None:
    """A new alert's evidence end to end: the worker writes the snapshot, the viewer says the clip is on its
    way, the capture side cuts it, the incident writer records it, and the open viewer plays it."""
    from infra.frame_store import FrameStore
    from stack.harness import bus_jpeg
    from traffic.alerts import Alert, AlertEvent, AlertKind
    from traffic.analysis import FrameAnalysis
    from traffic.config import load_settings
    from traffic.evidence import FrameRing
    from traffic.models import Detection, RiskLevel
    from web import create_app
    from workers.capture.clips import ClipCutter
    from workers.context import WorkerContext
    from workers.evidence import record_evidence
    from workers.finalize import emit_alert_events
    from workers.incidents import flush_incidents

    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}",
            "TRAFFIC_EVIDENCE_DIR": str(tmp_path / "evidence"),
            "TRAFFIC_EVIDENCE_CLIP_BEFORE_S": "1",
            "TRAFFIC_EVIDENCE_CLIP_AFTER_S": "1",
        }
    )
    ctx = WorkerContext(settings)
    CameraRegistry(ctx.redis).add(Camera("cam-v", "rtsp://10.0.0.6/stream", "Junction"))  # on the wall: its room
    photo, now = bus_jpeg(), time.time()
    FrameStore(ctx.redis).put("cam-v-f1", "cam-v", photo, captured_at=now, deadline=now + 45)
    alert = Alert(
        "cam-v:g1", "cam-v", RiskLevel.HIGH, ("jaywalking",), "a pedestrian steps out", first_seen=now,
        last_seen=now, frame_id="cam-v-f1", bbox=(40.0, 390.0, 400.0, 910.0), count=1, model="qwen-vl-plus",
    )  # fmt: skip
    event = AlertEvent(AlertKind.NEW, alert)
    person = Detection("person", 0.9, (50.0, 400.0, 250.0, 900.0), 3)
    record_evidence(ctx, "cam-v", [event], FrameAnalysis((810, 1080), (person,), ()), now)
    emit_alert_events(ctx, "cam-v", [event])
    assert flush_incidents(ctx) == 1

    page.goto("http://" + serve_app(create_app(settings)) + "/")
    page.wait_for_selector('#connection[data-state="connected"]', timeout=15_000)
    item = '.incident[data-snapshot="true"][data-clip="false"]'
    page.wait_for_selector(f"{item} .incident-thumb:not([hidden])", timeout=15_000)
    page.click(f"{item} .incident-thumb")
    page.wait_for_selector("#evidence-viewer[open]", timeout=5_000)
    page.wait_for_function(
        "() => { const i = document.getElementById('evidence-snapshot'); return i.complete && i.naturalWidth === 810 }",
        timeout=10_000,
    )
    assert "being cut" in page.inner_text("#evidence-no-clip")
    assert not page.is_visible("#evidence-clip")

    # The capture process cuts the clip; the incident writer records it; the open viewer plays it.
    ring = FrameRing(fps=5.0, span_s=60.0, max_bytes=64 << 20)
    for k in range(-10, 11):
        ring.add(now + k * 0.2, photo)
    assert ClipCutter(settings, ctx.redis, lambda: {"cam-v": ring}).run_once(now + 2.0) == 1
    flush_incidents(ctx)
    page.wait_for_function(
        "() => { const v = document.getElementById('evidence-clip');"
        " return !v.hidden && v.readyState >= 1 && v.duration > 1 && v.videoWidth > 0 }",
        timeout=15_000,
    )
    assert page.is_hidden("#evidence-no-clip")
    screenshot(page, "dashboard-evidence")
    page.click("#evidence-close")
    page.wait_for_selector("#evidence-viewer:not([open])", state="attached", timeout=5_000)
    page.wait_for_selector('.incident[data-clip="true"] .incident-thumb:not([hidden])', timeout=10_000)
    assert page.script_errors == []
    ctx.redis.close()
