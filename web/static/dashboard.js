/*
 * Camera wall: live camera tiles, an alert feed and a health strip.
 *
 * Events arrive over Socket.IO (the official client, served locally); pictures are fetched over REST,
 * because events never carry frames (docs/DESIGN.md: frames travel by reference). Plain ES2020, no build.
 */
"use strict";

(() => {
  const LEVELS = ["none", "low", "medium", "high"];
  const FINAL_STATES = new Set(["complete", "partial", "skipped", "unavailable"]);
  const ASSESSMENT_LABELS = {
    pending: "assessing…",
    complete: "complete",
    partial: "partial",
    skipped: "skipped",
    unavailable: "unavailable",
  };
  const ASSESSMENT_HINTS = {
    pending: "Boxes are in; the vision model is still judging the traffic groups",
    complete: "Every traffic group was assessed",
    partial: "Some traffic groups could not be assessed in time",
    skipped: "Not sent to the vision model (no groups, cooldown or an unchanged scene)",
    unavailable: "The vision model could not be reached for this frame",
  };
  const RISK_LABELS = { none: "no risk", low: "low risk", medium: "medium risk", high: "high risk" };
  /** A group or frame without a verdict (pending, skipped, failed, left out by the budget) is not rated. */
  const UNRATED_LABEL = "not rated";
  /** How long the camera's latest verdict is shown beside newer frames that were not sent to the model. */
  const JUDGED_FRESH_S = 30;

  const HEALTH_REFRESH_MS = 5000;
  const CAMERA_REFRESH_MS = 15000;
  const PING_INTERVAL_MS = 10000;
  const MAX_FEED_ITEMS = 80;
  const TOAST_MS = 7000;
  const REMOVE_CONFIRM_MS = 3000;
  const HIGHLIGHT_MS = 2600;
  const OLD_TOKEN_STORAGE_KEY = "traffic.token"; // earlier versions kept the token here: removed on load
  const SVG_NS = "http://www.w3.org/2000/svg";
  /** Detection labels are drawn only when a box is at least this wide on screen, to keep small tiles legible. */
  const MIN_LABELLED_BOX_PX = 34;
  /** traffic_stats come about once a second: after this long without one, the camera's analytics fade out. */
  const STATS_STALE_MS = 5000;
  const STATS_FADE_MS = 600;
  /** Near-miss measures given in seconds (time to collision, post-encroachment time). */
  const SECONDS_MEASURES = new Set(["ttc", "pet"]);

  const state = {
    socket: null,
    /** camera key (the id as a string, as the server keys it) → tile record */
    tiles: new Map(),
    /** alertId → {el, alert} (the feed) */
    alerts: new Map(),
    /** camera key → Map(alertId → level) of its alerts not yet ended; kept apart from tiles, which may come later */
    activeAlerts: new Map(),
    /** the camera id the add form waits for, so its refusal is shown inline rather than as a toast */
    pendingStart: null,
  };

  const el = {
    connection: document.getElementById("connection"),
    tiles: document.getElementById("tiles"),
    wallEmpty: document.getElementById("wall-empty"),
    wallSummary: document.getElementById("wall-summary"),
    tileTemplate: document.getElementById("tile-template"),
    alertTemplate: document.getElementById("alert-template"),
    simulatedBanner: document.getElementById("simulated-banner"),
    incidentsPanel: document.getElementById("incidents-panel"),
    incidentList: document.getElementById("incident-list"),
    incidentTemplate: document.getElementById("incident-template"),
    incidentEmpty: document.getElementById("incident-empty"),
    incidentCount: document.getElementById("incident-count"),
    incidentStatus: document.getElementById("incident-status"),
    incidentLevel: document.getElementById("incident-level"),
    incidentWho: document.getElementById("incident-who"),
    incidentError: document.getElementById("incident-error"),
    evidenceViewer: document.getElementById("evidence-viewer"),
    evidenceCaption: document.getElementById("evidence-caption"),
    evidenceSnapshot: document.getElementById("evidence-snapshot"),
    evidenceClip: document.getElementById("evidence-clip"),
    evidenceNoClip: document.getElementById("evidence-no-clip"),
    evidenceClose: document.getElementById("evidence-close"),
    alertFeed: document.getElementById("alert-feed"),
    alertEmpty: document.getElementById("alert-empty"),
    alertCount: document.getElementById("alert-count"),
    healthKeys: document.getElementById("health-keys"),
    healthQueues: document.getElementById("health-queues"),
    form: document.getElementById("add-camera-form"),
    formError: document.getElementById("add-camera-error"),
    login: document.getElementById("login-form"),
    loginToken: document.getElementById("login-token"),
    loginError: document.getElementById("login-error"),
    formSubmit: document.getElementById("add-camera-submit"),
    toasts: document.getElementById("toasts"),
  };

  // ---------------------------------------------------------------- token and REST

  /**
   * The token never travels in a URL (page and image URLs end up in proxy logs and history): it is
   * traded once for an HttpOnly session cookie, which every later request and the socket carry.
   * A `?token=` in the page URL (old bookmarks) is traded the same way and removed from the address bar.
   */
  async function startSession() {
    try {
      window.localStorage.removeItem(OLD_TOKEN_STORAGE_KEY);
    } catch {
      // storage can be disabled (private mode): nothing was stored then
    }
    const params = new URLSearchParams(window.location.search);
    const fromUrl = params.get("token");
    if (fromUrl === null) return;
    params.delete("token");
    const query = params.toString();
    window.history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}${window.location.hash}`);
    await login(fromUrl);
  }

  /** Trade `token` for the session cookie; true when the server accepted it. */
  async function login(token) {
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
      cache: "no-store",
    });
    return response.ok;
  }

  function showLogin(message) {
    el.login.hidden = false;
    el.loginError.textContent = message || "";
    el.loginError.hidden = !message;
    el.loginToken.focus();
  }

  async function onLogin(event) {
    event.preventDefault();
    const token = el.loginToken.value;
    if (!token) return;
    let accepted = false;
    try {
      accepted = await login(token);
    } catch {
      showLogin("The server did not answer; try again.");
      return;
    }
    if (!accepted) {
      showLogin("Wrong token.");
      return;
    }
    el.loginToken.value = "";
    el.login.hidden = true;
    setConnection("connecting", "Connecting…");
    if (state.socket) state.socket.connect();
    refreshHealth();
  }

  /** GET a `{code, msg, data}` endpoint and return `data`; throws with the server's message on failure. */
  async function getJson(path) {
    const headers = { Accept: "application/json" };
    const response = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch {
      // a non-JSON answer (an HTML 404 page, a proxy error) is reported by its HTTP status below
    }
    if (!response.ok || (body && typeof body.code === "number" && body.code >= 400)) {
      throw new Error((body && body.msg) || `HTTP ${response.status}`);
    }
    return body && "data" in body ? body.data : body;
  }

  // ---------------------------------------------------------------- connection

  function connect() {
    if (typeof window.io !== "function") {
      setConnection("failed", "Socket.IO client missing");
      toast("client_missing", "The Socket.IO client did not load (/static/vendor/socket.io.min.js).");
      return;
    }
    const socket = window.io({ transports: ["websocket"] }); // the session cookie goes with the handshake
    state.socket = socket;
    socket.on("connect", onConnected);
    socket.on("disconnect", (reason) => setConnection("disconnected", `Disconnected (${reason}) · retrying`));
    socket.on("connect_error", onConnectError);
    socket.io.on("reconnect_attempt", (n) => setConnection("connecting", `Reconnecting… (${n})`));
    socket.on("connection_ack", () => setConnection("connected", "Connected"));
    socket.on("detection_result", onDetectionResult);
    socket.on("traffic_stats", onTrafficStats);
    socket.on("camera_status", onCameraStatus);
    socket.on("stream_stopped", onStreamStopped);
    socket.on("alert", onAlert);
    socket.on("incident", scheduleIncidents);
    socket.on("incident_updated", scheduleIncidents);
    socket.on("incident_updated", refreshEvidence);
    socket.on("error", onServerError);
    window.setInterval(measurePing, PING_INTERVAL_MS);
  }

  function setConnection(kind, text) {
    el.connection.dataset.state = kind;
    el.connection.querySelector(".conn-text").textContent = text;
  }

  function onConnected() {
    setConnection("connected", "Connected");
    loadCameras();
    loadAlerts();
    scheduleIncidents(); // events missed while away: the list as the server has it now
    measurePing();
  }

  function onConnectError(error) {
    // The server refuses a wrong or missing token by rejecting the connection; say so plainly.
    const refused = /unauthori[sz]ed|refused|rejected/i.test(String(error && error.message));
    const text = refused ? "Sign in with the access token" : "Cannot reach the server · retrying";
    setConnection(refused ? "failed" : "disconnected", text);
    if (refused) showLogin();
  }

  /** Round-trip time of the `ping` event, shown next to the connection state. */
  function measurePing() {
    const socket = state.socket;
    if (!socket || !socket.connected) return;
    const started = performance.now();
    socket.timeout(5000).emit("ping", {}, (err) => {
      if (err || !socket.connected) return;
      setConnection("connected", `Connected · ${Math.round(performance.now() - started)} ms`);
    });
  }

  /** Join the cameras' rooms; the server replays each camera's latest result in reply. */
  function subscribe(wireIds) {
    if (!wireIds.length || !state.socket || !state.socket.connected) return;
    state.socket.emit("subscribe", { cameraIds: wireIds });
  }

  // ---------------------------------------------------------------- cameras

  /** Fetch the camera set, add tiles for cameras not on the wall and subscribe to all of them. */
  async function loadCameras() {
    let cameras;
    try {
      cameras = cameraList(await getJson("/api/cameras"));
    } catch (error) {
      toast("cameras_unavailable", `Camera list unavailable: ${error.message}`);
      cameras = [];
    }
    for (const camera of cameras) {
      const tile = ensureTile(camera.wireId, camera.name);
      if (camera.status) applyStatus(tile, camera.status);
    }
    // Also re-subscribe cameras added from this page, since rooms are lost with a reconnect.
    subscribe([...state.tiles.values()].map((tile) => tile.wireId));
  }

  /** Add tiles for cameras started elsewhere (another browser, the CLI) since the last look. */
  async function refreshCameras() {
    if (!state.socket || !state.socket.connected) return;
    let cameras;
    try {
      cameras = cameraList(await getJson("/api/cameras"));
    } catch {
      return; // loadCameras already told the user once; polling stays quiet
    }
    const fresh = cameras.filter((camera) => !state.tiles.has(String(camera.wireId)));
    for (const camera of fresh) {
      const tile = ensureTile(camera.wireId, camera.name);
      if (camera.status) applyStatus(tile, camera.status);
    }
    subscribe(fresh.map((camera) => camera.wireId));
  }

  /** `[{wireId, name, status}]` from GET /api/cameras: a list, or an object holding `cameras`. */
  function cameraList(data) {
    const list = Array.isArray(data) ? data : (data && Array.isArray(data.cameras) ? data.cameras : []);
    return list
      .map((camera) => ({
        wireId: camera.wireId ?? camera.cameraId ?? camera.id,
        name: camera.name || "",
        status: normaliseStatus(camera.status, camera),
      }))
      .filter((camera) => camera.wireId !== undefined && camera.wireId !== null);
  }

  /** A camera's status as {status, message, latencyMs}: the API may give an object or a bare 1/0. */
  function normaliseStatus(status, camera) {
    if (status && typeof status === "object") return status;
    if (status === 1 || status === 0) return { status, message: camera.statusMessage || "" };
    return null;
  }

  // ---------------------------------------------------------------- tiles

  /** The tile of a camera, created (and the wall re-laid out) on first sight. */
  function ensureTile(wireId, name) {
    const key = String(wireId);
    let tile = state.tiles.get(key);
    if (!tile) {
      tile = createTile(key, wireId);
      state.tiles.set(key, tile);
      el.tiles.append(tile.el);
      layoutWall();
      renderRisk(tile); // alerts may have come in before the tile
    }
    if (name && name !== tile.name) {
      tile.name = name;
      tile.parts.name.textContent = name;
      tile.parts.id.textContent = key;
      tile.parts.id.hidden = false;
      tile.el.setAttribute("aria-label", `Camera ${name} (${key})`);
    }
    return tile;
  }

  function createTile(key, wireId) {
    const node = el.tileTemplate.content.firstElementChild.cloneNode(true);
    node.dataset.cameraId = key;
    node.setAttribute("aria-label", `Camera ${key}`);
    const parts = {
      name: node.querySelector(".tile-name"),
      id: node.querySelector(".tile-id"),
      status: node.querySelector(".tile-status"),
      alerts: node.querySelector(".tile-alerts"),
      remove: node.querySelector(".tile-remove"),
      removeText: node.querySelector(".tile-remove-text"),
      media: node.querySelector(".tile-media"),
      img: node.querySelector(".tile-frame"),
      overlay: node.querySelector(".tile-overlay"),
      analytics: node.querySelector(".tile-analytics"),
      placeholder: node.querySelector(".tile-placeholder"),
      banner: node.querySelector(".tile-banner"),
      assessment: node.querySelector(".tile-assessment"),
      risk: node.querySelector(".tile-risk"),
      counts: node.querySelector(".tile-counts"),
      model: node.querySelector(".tile-model"),
      simulated: node.querySelector(".tile-simulated"),
      latency: node.querySelector(".tile-latency"),
      time: node.querySelector(".tile-time"),
    };
    parts.name.textContent = key;
    parts.id.hidden = true;
    parts.img.alt = `Latest frame of camera ${key}`;
    parts.remove.setAttribute("aria-label", `Remove camera ${key}`);
    const tile = {
      key, wireId, name: "", el: node, parts, current: null, lastFinal: null, lastJudged: null, shownFrameId: null,
      /** the latest traffic_stats of the camera (null once stale) and the timer that fades it */
      stats: null, statsTimer: null,
    };
    parts.remove.addEventListener("click", () => onRemoveClick(tile));
    // Labels are sized in screen pixels, so the overlays are redrawn when the tile changes size.
    new ResizeObserver(() => {
      drawOverlay(tile);
      drawAnalytics(tile);
    }).observe(parts.media);
    return tile;
  }

  function removeTile(key) {
    const tile = state.tiles.get(key);
    if (!tile) return;
    state.tiles.delete(key);
    window.clearTimeout(tile.statsTimer);
    tile.el.remove();
    layoutWall();
  }

  /** A near-square grid that fills the wall: 1, 2×1, 2×2, 3×2, 3×3 … */
  function layoutWall() {
    const count = state.tiles.size;
    const cols = Math.max(1, Math.ceil(Math.sqrt(count)));
    const rows = Math.max(1, Math.ceil(count / cols));
    el.tiles.style.setProperty("--cols", String(cols));
    el.tiles.style.setProperty("--rows", String(rows));
    el.tiles.dataset.count = String(count);
    el.wallEmpty.hidden = count > 0;
    renderSummary();
  }

  /** "4/5 online · 1 high · 2 medium" in the top bar: the wall at a glance. */
  function renderSummary() {
    const tiles = [...state.tiles.values()];
    if (!tiles.length) {
      el.wallSummary.textContent = "";
      return;
    }
    const online = tiles.filter((tile) => tile.el.dataset.status === "online").length;
    const parts = [`${online}/${tiles.length} online`];
    for (const level of ["high", "medium", "low"]) {
      const n = tiles.filter((tile) => tile.el.dataset.risk === level).length;
      if (n) parts.push(`${n} ${level}`);
    }
    el.wallSummary.textContent = parts.join(" · ");
  }

  function onRemoveClick(tile) {
    // Two clicks: a stray click must not stop a live stream (and confirm() would block the page).
    if (!tile.el.classList.contains("confirm-remove")) {
      tile.el.classList.add("confirm-remove");
      tile.parts.removeText.textContent = "Confirm";
      window.setTimeout(() => {
        tile.el.classList.remove("confirm-remove");
        tile.parts.removeText.textContent = "Remove";
      }, REMOVE_CONFIRM_MS);
      return;
    }
    tile.parts.remove.disabled = true;
    state.socket.timeout(10000).emit("stop_stream", { cameraId: tile.wireId }, (err, ack) => {
      tile.parts.remove.disabled = false;
      if (err) {
        toast("timeout", `Camera ${tile.key}: the server did not answer stop_stream`);
        return;
      }
      // On success, or when the server says it is not running (reported by the error event), drop the tile.
      state.socket.emit("unsubscribe", { cameraIds: [tile.wireId] });
      if (ack === undefined || ack === null || (ack && ack.stopped)) removeTile(tile.key);
    });
  }

  // ---------------------------------------------------------------- results

  /** A detection_result: the fast-path one (pending) or the final one of a frame. */
  function onDetectionResult(result) {
    if (!result || result.cameraId === undefined) return;
    const tile = ensureTile(result.cameraId);
    // Results of one camera can interleave (the final of frame A after the pending of frame B):
    // the picture follows the newest frame, the risk follows the newest final verdict.
    if (!tile.current || result.frameId === tile.current.frameId || isNewer(result, tile.current)) {
      tile.current = result;
    }
    if (FINAL_STATES.has(result.assessment) && (!tile.lastFinal || !isNewer(tile.lastFinal, result))) {
      tile.lastFinal = result;
    }
    // The model answers slower than frames are detected: its verdict often lands after newer frames that
    // the cooldown or the gate kept from it. Keep the newest judged frame apart, to show beside those.
    if (FINAL_STATES.has(result.assessment) && result.llmModel && (!tile.lastJudged || !isNewer(tile.lastJudged, result))) {
      tile.lastJudged = result;
    }
    renderTile(tile);
  }

  /** ISO-8601 UTC strings of one format sort as text. */
  function isNewer(a, b) {
    return String(a.timestamp || "") > String(b.timestamp || "");
  }

  function renderTile(tile) {
    const result = tile.current;
    if (!result) return;
    refreshFrame(tile, result);
    drawOverlay(tile);
    drawAnalytics(tile); // the frame size may have changed
    renderAssessment(tile, result);
    renderRisk(tile);
    renderCounts(tile, result);
    renderMeta(tile, result);
  }

  /**
   * Load the frame of `result` off-screen, then put that very element in place of the old one: the frame
   * endpoint answers `no-store`, so setting the old <img>'s src again would fetch (and blank) once more.
   */
  function refreshFrame(tile, result) {
    if (tile.shownFrameId === result.frameId) return;
    tile.shownFrameId = result.frameId;
    // The preview of exactly this frame, so boxes line up with the picture they were found in; the
    // camera's latest frame only if that preview has expired already.
    const preview = `/api/frames/${encodeURIComponent(result.frameId || "")}/preview.jpg`;
    const latest = `/api/cameras/${encodeURIComponent(tile.key)}/frame.jpg?t=${Date.now()}`;
    const src = result.frame || (result.frameId ? preview : latest);
    const loader = new Image();
    loader.onload = () => {
      if (tile.shownFrameId !== result.frameId) return; // a newer frame overtook this one
      loader.className = "tile-frame";
      loader.alt = tile.parts.img.alt;
      tile.parts.img.replaceWith(loader);
      tile.parts.img = loader;
      tile.parts.placeholder.hidden = true;
      tile.el.dataset.frame = "loaded";
    };
    loader.onerror = () => {
      if (loader.src !== new URL(latest, location.href).href && !result.frame) {
        loader.src = latest; // preview expired: fall back to the camera's latest picture
        return;
      }
      if (tile.shownFrameId !== result.frameId || !tile.parts.img.hidden) return; // keep the last good picture
      tile.parts.placeholder.textContent = "No picture for this frame (expired or unavailable)";
      tile.el.dataset.frame = "missing";
    };
    loader.src = src;
  }

  function renderAssessment(tile, result) {
    const assessment = result.assessment || "complete";
    const chip = tile.parts.assessment;
    chip.dataset.assessment = assessment;
    chip.textContent = ASSESSMENT_LABELS[assessment] || assessment;
    chip.title = ASSESSMENT_HINTS[assessment] || "";
    tile.el.dataset.assessment = assessment;
  }

  /**
   * The chip shows the newest final verdict (a pending frame keeps the previous one showing). The border
   * shows the camera's risk: that verdict or its highest alert still active, whichever is higher, so it
   * does not flicker with every frame of a scene that is still dangerous.
   */
  /**
   * The camera's newest judged frame when the newest final frame was not judged (skipped by the cooldown
   * or the gate, no LLM call) and is at most JUDGED_FRESH_S newer: with its age in seconds; else null.
   */
  function recentJudgement(tile) {
    const final = tile.lastFinal;
    const judged = tile.lastJudged;
    if (!final || !judged || final.llmModel || judged === final) return null;
    const age = (Date.parse(final.timestamp) - Date.parse(judged.timestamp)) / 1000;
    if (!Number.isFinite(age) || age < 0 || age > JUDGED_FRESH_S) return null;
    return { result: judged, age: age < 10 ? age.toFixed(1) : Math.round(age).toString() };
  }

  function renderRisk(tile) {
    let verdict = frameVerdict(tile.lastFinal);
    const recent = recentJudgement(tile);
    if (recent && verdict.level === "unrated") {
      const last = frameVerdict(recent.result);
      verdict = {
        level: last.level,
        label: `${last.label} · ${recent.age} s ago`,
        hint: `The camera's latest verdict, on a frame ${recent.age} s older; the newest frame was not sent to the model (${tile.lastFinal.assessment})`,
      };
    }
    const frameLevel = verdict.level;
    tile.parts.risk.dataset.level = frameLevel;
    tile.parts.risk.textContent = verdict.label;
    tile.parts.risk.title = verdict.hint;
    const active = [...(state.activeAlerts.get(tile.key) || new Map()).values()];
    const alertLevel = maxLevel(active);
    tile.parts.alerts.hidden = active.length === 0;
    tile.parts.alerts.dataset.level = alertLevel;
    tile.parts.alerts.replaceChildren(
      `${active.length} `,
      textSpan("tile-alerts-level", `${alertLevel} `),
      `alert${active.length === 1 ? "" : "s"}`,
    );
    tile.parts.alerts.title = "Alerts on this camera that have not ended yet";
    tile.el.dataset.risk = frameLevel === "unknown" && !active.length ? "none" : maxLevel([frameLevel, alertLevel]);
    renderSummary();
  }

  /**
   * Whether a group of `result` has a verdict. A level above none only comes from a verdict; `none` is a
   * verdict only in a complete frame (every group judged OK). In a pending, skipped, unavailable or partial
   * frame a `none` group may have had no verdict at all, so it reads "not rated" unless the group says
   * otherwise with a boolean `assessed` (not sent by every server).
   */
  function groupRated(group, result) {
    if (typeof group.assessed === "boolean") return group.assessed;
    if (levelOf(group.riskLevel) !== "none") return true;
    return result.assessment === "complete";
  }

  /** The risk chip of a final result: {level, label, hint}; level "unrated" when the frame has no verdict. */
  function frameVerdict(result) {
    if (!result) return { level: "unknown", label: "risk —", hint: "No verdict yet" };
    const level = levelOf(result.maxRiskLevel);
    const groups = result.trafficGroups || [];
    const rated = groups.filter((group) => groupRated(group, result)).length;
    if (level !== "none") {
      const hint = rated < groups.length ? `${rated} of ${groups.length} groups rated` : "Every group rated";
      return { level, label: RISK_LABELS[level], hint };
    }
    if (!groups.length) return { level: "none", label: RISK_LABELS.none, hint: "No traffic groups in this frame" };
    if (rated === groups.length) return { level: "none", label: RISK_LABELS.none, hint: "Every group rated: no risk" };
    const hint = rated
      ? `${rated} of ${groups.length} groups rated, none at risk; the others have no verdict`
      : "No group of this frame has a verdict";
    return { level: "unrated", label: UNRATED_LABEL, hint };
  }

  function maxLevel(levels) {
    return levels.reduce((best, level) => (LEVELS.indexOf(level) > LEVELS.indexOf(best) ? level : best), "none");
  }

  function renderCounts(tile, result) {
    const counts = new Map();
    for (const object of result.detectedObjects || []) {
      counts.set(object.class, (counts.get(object.class) || 0) + 1);
    }
    const items = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const groups = (result.trafficGroups || []).length;
    tile.parts.counts.replaceChildren(
      ...items.map(([cls, n]) => listItem("count", `${cls} ${n}`)),
      ...(groups ? [listItem("count count-groups", `${groups} group${groups === 1 ? "" : "s"}`)] : []),
      ...(items.length ? [] : [listItem("count count-empty", "no objects")]),
    );
  }

  function renderMeta(tile, result) {
    const shown = tile.lastFinal && tile.lastFinal.frameId === result.frameId ? tile.lastFinal : result;
    const recent = shown === tile.lastFinal ? recentJudgement(tile) : null;
    const model = shown.llmModel || (recent ? recent.result.llmModel : "");
    tile.parts.model.textContent = recent && !shown.llmModel
      ? `${model} · ${recent.age} s ago`
      : shown.llmModel || (shown.assessment === "pending" ? "" : "no LLM call");
    const simulated = isSimulated(model);
    tile.parts.simulated.hidden = !simulated;
    tile.el.dataset.simulated = String(simulated);
    if (simulated) el.simulatedBanner.hidden = false;
    const parts = [];
    if (shown.llmLatency) parts.push(`LLM ${formatSeconds(shown.llmLatency)}`);
    if (shown.processTime) parts.push(`detect ${formatSeconds(shown.processTime)}`);
    tile.parts.latency.textContent = parts.join(" · ");
    tile.parts.time.dateTime = result.timestamp || "";
    tile.parts.time.textContent = formatTime(result.timestamp);
  }

  // ---------------------------------------------------------------- overlay

  /** Detection and traffic-group boxes over the picture, in image pixels (the SVG viewBox scales them). */
  function drawOverlay(tile) {
    const result = tile.current;
    const svg = tile.parts.overlay;
    if (!result) return;
    const width = result.imageWidth || 1280;
    const height = result.imageHeight || 720;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    tile.parts.media.style.setProperty("--aspect", `${width} / ${height}`);
    const rect = tile.parts.media.getBoundingClientRect();
    // Screen pixels per image pixel, as `meet` scales the viewBox (and object-fit: contain the picture).
    const scale = Math.min(rect.width / width, rect.height / height) || 1;
    const earlier = earlierVerdicts(tile, result);
    const groups = (result.trafficGroups || []).map((group) => groupBox(group, result, scale, height, earlier));
    const detections = (result.detectedObjects || []).map((object) => detectionBox(object, scale, height));
    svg.replaceChildren(...groups, ...detections);
    svg.dataset.detections = String(detections.length);
    svg.dataset.groups = String(groups.length);
    svg.dataset.boxCount = String(detections.length + groups.length);
  }

  /**
   * Verdicts of the camera's latest judged frame by group key (tracked groups only), when ``result`` was
   * not judged and is at most JUDGED_FRESH_S newer: shown, with their age, on groups with no verdict.
   */
  function earlierVerdicts(tile, result) {
    const judged = tile.lastJudged;
    const byKey = new Map();
    if (!judged || judged === result || result.llmModel) return byKey;
    const age = (Date.parse(result.timestamp) - Date.parse(judged.timestamp)) / 1000;
    if (!Number.isFinite(age) || age < 0 || age > JUDGED_FRESH_S) return byKey;
    for (const group of judged.trafficGroups || []) {
      if (group.groupKey && groupRated(group, judged)) {
        byKey.set(group.groupKey, { level: levelOf(group.riskLevel), age: age < 10 ? age.toFixed(1) : Math.round(age) });
      }
    }
    return byKey;
  }

  function groupBox(group, result, scale, height, earlier = new Map()) {
    const rated = groupRated(group, result);
    const before = !rated && group.groupKey ? earlier.get(group.groupKey) : undefined;
    const level = before ? before.level : levelOf(group.riskLevel);
    const named = level === "none" ? RISK_LABELS.none : level;
    const verdict = rated ? named : before ? `${named} · ${before.age} s ago` : UNRATED_LABEL;
    const label = `group ${group.groupIndex ?? ""} · ${verdict}`;
    const className = `box group level-${level}${rated ? "" : " unrated"}`;
    // Group labels sit under the box: the top edge is where its members' own labels are.
    const g = box(group.bbox, className, label, scale, { always: true, below: true, height });
    g.dataset.verdict = rated ? "rated" : "unrated";
    return g;
  }

  function detectionBox(object, scale, height) {
    const confidence = typeof object.confidence === "number" ? object.confidence.toFixed(2) : "";
    return box(object.bbox, "box detection", `${object.class} ${confidence}`, scale, { height });
  }

  /** One labelled rectangle; the label is sized in screen pixels so it stays readable on small tiles. */
  function box(bbox, className, label, scale, { always = false, below = false, height }) {
    const [x1, y1, x2, y2] = bbox || [0, 0, 0, 0];
    const g = document.createElementNS(SVG_NS, "g");
    g.setAttribute("class", className);
    g.append(svgElement("rect", { x: x1, y: y1, width: Math.max(0, x2 - x1), height: Math.max(0, y2 - y1) }));
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = label;
    g.append(title);
    if (always || (x2 - x1) * scale >= MIN_LABELLED_BOX_PX) {
      const fontSize = 11 / scale;
      const labelWidth = label.length * fontSize * 0.62 + 6 / scale;
      const labelHeight = fontSize * 1.4;
      // Outside the box where there is room, inside it at the picture's edge.
      const top = below
        ? (y2 + labelHeight <= height ? y2 : y2 - labelHeight)
        : (y1 - labelHeight >= 0 ? y1 - labelHeight : y1);
      g.append(svgElement("rect", { class: "label-bg", x: x1, y: top, width: labelWidth, height: labelHeight }));
      const text = svgElement("text", { x: x1 + 3 / scale, y: top + fontSize * 1.05, "font-size": fontSize });
      text.textContent = label;
      g.append(text);
    }
    return g;
  }

  function svgElement(name, attributes) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [attribute, value] of Object.entries(attributes)) node.setAttribute(attribute, String(value));
    return node;
  }

  // ---------------------------------------------------------------- traffic analytics

  /** A traffic_stats: the camera's lines, zones, tracks and near misses now; drawn until it goes stale. */
  function onTrafficStats(stats) {
    if (!stats || stats.cameraId === undefined) return;
    const tile = ensureTile(stats.cameraId);
    // Events of one camera may overtake each other: never go back to an older frame's stats.
    if (tile.stats && String(tile.stats.timestamp || "") > String(stats.timestamp || "")) return;
    tile.stats = stats;
    window.clearTimeout(tile.statsTimer);
    tile.statsTimer = window.setTimeout(() => fadeAnalytics(tile), STATS_STALE_MS);
    drawAnalytics(tile);
  }

  /** No traffic_stats for a while (camera stopped, analytics off, worker gone): fade the drawing out, then clear it. */
  function fadeAnalytics(tile) {
    tile.stats = null;
    const svg = tile.parts.analytics;
    svg.dataset.state = "stale";
    tile.statsTimer = window.setTimeout(() => {
      if (tile.stats) return; // fresh stats came in while fading
      svg.replaceChildren();
      svg.dataset.state = "empty";
      setAnalyticsCounts(svg, 0, 0, 0, 0);
    }, STATS_FADE_MS);
  }

  /**
   * Zones, counting lines, track trails and near misses over the picture. The SVG's viewBox is the displayed
   * frame (as the boxes'), and the stats' coordinates, in pixels of their own `imageSize`, are scaled to it.
   */
  function drawAnalytics(tile) {
    const stats = tile.stats;
    const svg = tile.parts.analytics;
    if (!stats) return;
    const [statsWidth, statsHeight] = pair(stats.imageSize) || [0, 0];
    const width = (tile.current && tile.current.imageWidth) || statsWidth || 1280;
    const height = (tile.current && tile.current.imageHeight) || statsHeight || 720;
    const sx = statsWidth ? width / statsWidth : 1;
    const sy = statsHeight ? height / statsHeight : 1;
    const at = (point) => {
      const p = pair(point);
      return p ? [p[0] * sx, p[1] * sy] : null;
    };
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const rect = tile.parts.media.getBoundingClientRect();
    const scale = Math.min(rect.width / width, rect.height / height) || 1;
    const zones = (stats.zones || []).map((zone) => zoneShape(zone, at, scale)).filter(Boolean);
    const lines = (stats.lines || []).map((line) => countLine(line, at, scale)).filter(Boolean);
    const tracks = (stats.tracks || []).map((track) => trackTrail(track, at, scale)).filter(Boolean);
    const misses = (stats.nearMisses || [])
      .filter((miss) => miss && miss.phase !== "end")
      .map((miss) => nearMissMarker(miss, at, scale))
      .filter(Boolean);
    svg.replaceChildren(...zones, ...lines, ...tracks, ...misses);
    svg.dataset.state = "live";
    svg.dataset.unit = stats.unit || "";
    svg.dataset.timestamp = stats.timestamp || "";
    setAnalyticsCounts(svg, zones.length, lines.length, tracks.length, misses.length);
  }

  function setAnalyticsCounts(svg, zones, lines, tracks, misses) {
    svg.dataset.zones = String(zones);
    svg.dataset.lines = String(lines);
    svg.dataset.tracks = String(tracks);
    svg.dataset.nearMisses = String(misses);
  }

  function zoneShape(zone, at, scale) {
    const points = (Array.isArray(zone.polygon) ? zone.polygon : []).map(at).filter(Boolean);
    if (points.length < 3) return null;
    const total = number(zone.total);
    const g = svgGroup("zone", { zone: String(zone.name ?? ""), total: String(total) });
    g.append(svgElement("polygon", { class: "zone-shape", points: points.map((p) => p.join(",")).join(" ") }));
    const occupancy = Object.entries(zone.occupancy || {}).map(([cls, n]) => `${cls} ${n}`).join(", ");
    g.append(svgTitle(`Zone ${zone.name}: ${total} inside${occupancy ? ` (${occupancy})` : ""}`));
    // The label at the zone's top-left corner, inside the picture.
    const [x, y] = points.reduce((best, p) => (p[1] < best[1] || (p[1] === best[1] && p[0] < best[0]) ? p : best));
    g.append(svgLabel("zone-label", `${zone.name} · ${total}`, x, y, scale));
    return g;
  }

  function countLine(line, at, scale) {
    const start = at(line.start);
    const end = at(line.end);
    if (!start || !end) return null; // a line since removed from the configuration: counted, not drawn
    const totals = line.totals || {};
    const directions = [line.forward, line.backward].filter((name) => typeof name === "string");
    for (const name of Object.keys(totals)) if (!directions.includes(name)) directions.push(name);
    const text = directions.map((name) => `${name} ${number(totals[name])}`).join(" · ");
    const g = svgGroup("count-line", { line: String(line.name ?? "") });
    for (const name of directions) g.dataset[`total${capitalise(name)}`] = String(number(totals[name]));
    g.append(svgElement("line", { class: "count-line-path", x1: start[0], y1: start[1], x2: end[0], y2: end[1] }));
    g.append(svgTitle(`Line ${line.name}: ${text || "no crossings"}`));
    const mid = [(start[0] + end[0]) / 2, (start[1] + end[1]) / 2];
    g.append(svgLabel("count-line-label", `${line.name}: ${text || "0"}`, mid[0], mid[1], scale));
    return g;
  }

  function trackTrail(track, at, scale) {
    const points = (Array.isArray(track.trail) ? track.trail : []).map(at).filter(Boolean);
    if (!points.length) return null;
    const g = svgGroup("track", { trackId: String(track.trackId), class: String(track.class || "") });
    g.append(svgElement("polyline", { class: "track-trail", points: points.map((p) => p.join(",")).join(" ") }));
    const [x, y] = points[points.length - 1];
    g.append(svgElement("circle", { class: "track-head", cx: x, cy: y, r: 3 / scale }));
    const speed = typeof track.speed === "number" && Number.isFinite(track.speed)
      ? ` ${track.speed.toFixed(track.speed >= 10 ? 0 : 1)} ${track.speedUnit || ""}`.trimEnd()
      : "";
    const text = `#${track.trackId}${speed}`;
    g.append(svgTitle(`Track ${track.trackId} (${track.class || "?"})${speed}`));
    g.append(svgLabel("track-label", text, x, y, scale));
    return g;
  }

  function nearMissMarker(miss, at, scale) {
    const position = at(miss.position);
    if (!position) return null;
    const ids = (miss.trackIds || []).map(String);
    const g = svgGroup("near-miss", { trackIds: ids.join(","), measure: String(miss.measure || "") });
    const value = typeof miss.value === "number" ? miss.value.toFixed(2) : "?";
    const unit = SECONDS_MEASURES.has(miss.measure) ? " s" : "";
    const threshold = typeof miss.threshold === "number" ? ` (threshold ${miss.threshold}${unit})` : "";
    const classes = (miss.classes || []).join(" and ");
    g.append(svgElement("circle", { class: "near-miss-ring", cx: position[0], cy: position[1], r: 14 / scale }));
    g.append(svgElement("circle", { class: "near-miss-dot", cx: position[0], cy: position[1], r: 4 / scale }));
    g.append(svgTitle(
      `Near miss: ${miss.measure || "measure"} ${value}${unit}${threshold} · tracks ${ids.join(", ")}`
        + (classes ? ` (${classes})` : ""),
    ));
    return g;
  }

  /** A `<g class=…>` with data attributes. */
  function svgGroup(className, data) {
    const g = document.createElementNS(SVG_NS, "g");
    g.setAttribute("class", className);
    for (const [name, value] of Object.entries(data)) g.dataset[name] = value;
    return g;
  }

  function svgTitle(text) {
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = text;
    return title;
  }

  /** A text label with a dark backing, sized in screen pixels, kept inside the viewBox where it can be. */
  function svgLabel(className, text, x, y, scale) {
    const g = document.createElementNS(SVG_NS, "g");
    g.setAttribute("class", `label ${className}`);
    const fontSize = 11 / scale;
    const labelWidth = text.length * fontSize * 0.62 + 6 / scale;
    const labelHeight = fontSize * 1.4;
    const top = y - labelHeight >= 0 ? y - labelHeight : y;
    g.append(svgElement("rect", { class: "label-bg", x, y: top, width: labelWidth, height: labelHeight }));
    const node = svgElement("text", { x: x + 3 / scale, y: top + fontSize * 1.05, "font-size": fontSize });
    node.textContent = text;
    g.append(node);
    return g;
  }

  /** `[x, y]` as two finite numbers, or null. */
  function pair(value) {
    if (!Array.isArray(value) || value.length < 2) return null;
    const x = Number(value[0]);
    const y = Number(value[1]);
    return Number.isFinite(x) && Number.isFinite(y) ? [x, y] : null;
  }

  function capitalise(text) {
    return text.replace(/[^A-Za-z0-9]+(.)?/g, (_, c) => (c ? c.toUpperCase() : "")).replace(/^./, (c) => c.toUpperCase());
  }

  // ---------------------------------------------------------------- camera status

  function onCameraStatus(status) {
    if (!status || status.cameraId === undefined) return;
    applyStatus(ensureTile(status.cameraId), status);
  }

  function applyStatus(tile, status) {
    const online = Number(status.status) === 1;
    const badge = tile.parts.status;
    badge.dataset.status = online ? "online" : "offline";
    tile.el.dataset.status = online ? "online" : "offline";
    badge.textContent = online ? "online" : "offline";
    const latency = typeof status.latencyMs === "number" ? ` (${status.latencyMs} ms)` : "";
    badge.title = `${status.message || (online ? "streaming" : "not streaming")}${latency}`;
    // The reason a camera is offline matters more than anything else on its tile: say it on the picture.
    if (tile.parts.img.hidden && tile.el.dataset.frame !== "missing") {
      tile.parts.placeholder.textContent = online ? "Waiting for the first frame…" : "No signal";
    }
    tile.parts.banner.hidden = online;
    tile.parts.banner.textContent = online ? "" : `Offline: ${status.message || "no signal"}`;
    renderSummary();
  }

  function onStreamStopped(data) {
    if (!data || data.cameraId === undefined) return;
    const key = String(data.cameraId);
    if (data.reason === "removed") {
      removeTile(key);
      return;
    }
    const tile = state.tiles.get(key);
    if (tile) applyStatus(tile, { status: 0, message: `stopped (${data.reason || "unknown"})` });
  }

  // ---------------------------------------------------------------- alerts

  /** Recent alerts from the REST API, so a freshly opened page is not empty; optional. */
  async function loadAlerts() {
    try {
      const data = await getJson("/api/alerts");
      const list = Array.isArray(data) ? data : (data && Array.isArray(data.alerts) ? data.alerts : []);
      // The API lists newest first; replay oldest first (a stable sort keeps ties in order) so the
      // newest event of each alert wins and the newest alert ends on top of the feed.
      list.reverse().sort((a, b) => String(a.lastSeen || "").localeCompare(String(b.lastSeen || "")));
      for (const alert of list) {
        if (!state.alerts.has(alert.alertId)) onAlert({ kind: alert.kind || "new", ...alert });
      }
    } catch {
      // The feed fills from live events anyway.
    }
  }

  /** One alert per identity: a new one or an update goes on top; an end is marked where the alert is. */
  function onAlert(alert) {
    if (!alert || !alert.alertId) return;
    let entry = state.alerts.get(alert.alertId);
    if (!entry) {
      const node = el.alertTemplate.content.firstElementChild.cloneNode(true);
      entry = { el: node, alert };
      node.querySelector(".alert-button").addEventListener("click", () => highlightCamera(String(entry.alert.cameraId)));
      state.alerts.set(alert.alertId, entry);
    }
    entry.alert = alert;
    renderAlert(entry.el, alert);
    if (alert.kind !== "end" || !entry.el.isConnected) el.alertFeed.prepend(entry.el);
    trackActiveAlert(alert);
    trimFeed();
    el.alertEmpty.hidden = state.alerts.size > 0;
    el.alertCount.textContent = String(countActiveAlerts());
  }

  /** Keep the camera's set of alerts not yet ended, which colours its tile. */
  function trackActiveAlert(alert) {
    const key = String(alert.cameraId);
    const active = state.activeAlerts.get(key) || new Map();
    if (alert.kind === "end") active.delete(alert.alertId);
    else active.set(alert.alertId, levelOf(alert.level));
    state.activeAlerts.set(key, active);
    const tile = state.tiles.get(key);
    if (tile) renderRisk(tile);
  }

  // ---------------------------------------------------------------- incidents

  /** Actions an operator may take on an incident in each status (the server enforces the same). */
  const INCIDENT_ACTIONS = {
    open: ["acknowledge", "resolve", "false_positive"],
    acknowledged: ["resolve", "false_positive", "reopen"],
    resolved: ["reopen"],
    false_positive: ["reopen"],
  };
  const INCIDENT_PAGE = 20;
  let incidentTimer = null;
  let incidentLoadFailed = false;

  /** Load the incident list again soon (events come in bursts: one reload for a burst). */
  function scheduleIncidents() {
    if (incidentTimer !== null) return;
    incidentTimer = setTimeout(() => {
      incidentTimer = null;
      loadIncidents();
    }, 300);
  }

  /** The newest incidents that match the filters; the panel stays hidden on a server that keeps none. */
  async function loadIncidents() {
    const params = new URLSearchParams({ limit: String(INCIDENT_PAGE) });
    if (el.incidentStatus.value) params.set("status", el.incidentStatus.value);
    if (el.incidentLevel.value) params.set("level", el.incidentLevel.value);
    let response;
    let body = null;
    try {
      response = await fetch(`/api/incidents?${params}`, { headers: { Accept: "application/json" }, cache: "no-store" });
      body = await response.json();
    } catch {
      return; // the server is away: the connection state says so; the next event or change reloads
    }
    if (response.status === 404 && body && body.data && body.data.error === "incidents_not_kept") {
      el.incidentsPanel.hidden = true;
      return;
    }
    el.incidentsPanel.hidden = false;
    if (!response.ok || !body || !body.data) {
      incidentLoadFailed = true;
      showIncidentError((body && body.msg) || `Incidents unavailable (HTTP ${response.status})`);
      return;
    }
    if (incidentLoadFailed) showIncidentError(""); // only a loading error: a message about an action stays
    incidentLoadFailed = false;
    renderIncidents(body.data.incidents || []);
  }

  function showIncidentError(message) {
    el.incidentError.textContent = message;
    el.incidentError.hidden = !message;
  }

  function renderIncidents(incidents) {
    // A reload must not wipe a note being typed: carry notes (and the focus) over to the new entries.
    const notes = new Map();
    let focused = null;
    for (const node of el.incidentList.querySelectorAll(".incident")) {
      const input = node.querySelector(".incident-note");
      if (input.value) notes.set(node.dataset.incidentId, input.value);
      if (document.activeElement === input) focused = node.dataset.incidentId;
    }
    el.incidentList.replaceChildren(...incidents.map(incidentItem));
    for (const node of el.incidentList.querySelectorAll(".incident")) {
      const input = node.querySelector(".incident-note");
      input.value = notes.get(node.dataset.incidentId) || "";
      if (focused === node.dataset.incidentId) input.focus();
    }
    el.incidentEmpty.hidden = incidents.length > 0;
    el.incidentCount.textContent = String(incidents.length);
  }

  function incidentItem(incident) {
    const node = el.incidentTemplate.content.firstElementChild.cloneNode(true);
    const level = levelOf(incident.level);
    node.dataset.incidentId = String(incident.incidentId);
    node.dataset.level = level;
    node.dataset.status = incident.status;
    node.querySelector(".incident-level").textContent = level;
    node.querySelector(".incident-status").textContent = humanise(incident.status);
    node.querySelector(".incident-camera").textContent = cameraLabel(String(incident.cameraId));
    const time = node.querySelector(".incident-time");
    time.dateTime = incident.firstSeen || "";
    time.textContent = formatTime(incident.firstSeen);
    const kind = incident.kind === "model" ? "" : ` · ${humanise(incident.kind)} (rule-based)`;
    const simulated = isSimulated(incident.llmModel) ? " · simulated" : "";
    node.querySelector(".incident-types").textContent = (incident.riskTypes || []).map(humanise).join(", ") + kind + simulated;
    node.querySelector(".incident-desc").textContent = incident.description || "";
    node.querySelector(".incident-log").textContent = incident.endedAt ? `ended ${formatTime(incident.endedAt)}` : "ongoing";
    const evidence = incident.evidence || {};
    const thumb = node.querySelector(".incident-thumb");
    node.dataset.snapshot = String(Boolean(evidence.snapshotUrl));
    node.dataset.clip = String(Boolean(evidence.clipUrl));
    if (evidence.snapshotUrl || evidence.clipUrl) {
      thumb.hidden = false;
      const image = thumb.querySelector("img");
      if (evidence.snapshotUrl) image.src = evidence.snapshotUrl;
      else image.remove();
      thumb.querySelector(".incident-thumb-text").textContent = evidence.clipUrl ? "Snapshot · clip" : "Snapshot";
      thumb.addEventListener("click", () => showEvidence(incident));
    }
    const allowed = INCIDENT_ACTIONS[incident.status] || [];
    for (const button of node.querySelectorAll(".incident-actions button")) {
      button.hidden = !allowed.includes(button.dataset.action);
      button.addEventListener("click", () => actOnIncident(node, incident, button.dataset.action));
    }
    return node;
  }

  /** Send an operator's action with their name and note; the list reloads on the server's answer. */
  async function actOnIncident(node, incident, action) {
    const who = el.incidentWho.value.trim();
    if (!who) {
      showIncidentError("Enter your name first: every action is logged with who took it.");
      el.incidentWho.focus();
      return;
    }
    window.localStorage.setItem("traffic.incidentWho", who);
    const note = node.querySelector(".incident-note").value;
    let response;
    let body = null;
    try {
      response = await fetch(`/api/incidents/${incident.incidentId}/actions`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ action, who, note }),
        cache: "no-store",
      });
      body = await response.json();
    } catch {
      showIncidentError("The server did not answer; try again.");
      return;
    }
    if (!response.ok) {
      showIncidentError((body && body.msg) || `HTTP ${response.status}`);
      return;
    }
    showIncidentError("");
    loadIncidents();
  }

  const CLIP_WAIT_MS = 120_000;

  /** Open the evidence viewer on an incident: its annotated snapshot and its clip (or why there is none yet). */
  function showEvidence(incident) {
    const evidence = incident.evidence || {};
    el.evidenceViewer.dataset.incidentId = String(incident.incidentId);
    el.evidenceCaption.textContent = `${levelOf(incident.level)} · ${cameraLabel(String(incident.cameraId))} · ${formatTime(
      incident.firstSeen,
    )} · ${(incident.riskTypes || []).map(humanise).join(", ")}`;
    el.evidenceSnapshot.hidden = !evidence.snapshotUrl;
    if (evidence.snapshotUrl) el.evidenceSnapshot.src = evidence.snapshotUrl;
    else el.evidenceSnapshot.removeAttribute("src");
    el.evidenceClip.hidden = !evidence.clipUrl;
    if (evidence.clipUrl) el.evidenceClip.src = evidence.clipUrl;
    else el.evidenceClip.removeAttribute("src");
    el.evidenceNoClip.hidden = Boolean(evidence.clipUrl);
    // A clip is cut a few seconds after the frame that raised the incident; past a couple of minutes none is coming.
    const waiting = Date.now() - Date.parse(incident.firstSeen || "") < CLIP_WAIT_MS;
    el.evidenceNoClip.textContent = waiting
      ? "The clip is being cut from the camera's recent video; it appears here a few seconds after the incident."
      : "No clip was kept for this incident.";
    if (!el.evidenceViewer.open) el.evidenceViewer.showModal();
  }

  /** Keep an open viewer current: a clip written after it opened appears in it. */
  async function refreshEvidence() {
    const id = el.evidenceViewer.dataset.incidentId;
    if (!el.evidenceViewer.open || !id || !el.evidenceClip.hidden) return;
    try {
      const response = await fetch(`/api/incidents/${encodeURIComponent(id)}`, {
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (response.ok) showEvidence((await response.json()).data);
    } catch {
      /* the next incident event tries again */
    }
  }

  function closeEvidence() {
    el.evidenceClip.pause();
    el.evidenceViewer.close();
  }

  function setUpIncidents() {
    el.evidenceClose.addEventListener("click", closeEvidence);
    el.evidenceViewer.addEventListener("close", () => el.evidenceClip.pause());
    el.incidentWho.value = window.localStorage.getItem("traffic.incidentWho") || "";
    el.incidentStatus.addEventListener("change", loadIncidents);
    el.incidentLevel.addEventListener("change", loadIncidents);
    loadIncidents();
  }

  /** Whether a verdict's `llmModel` names the demo's provider simulator (`traffic run --simulated-model`). */
  function isSimulated(model) {
    return typeof model === "string" && model.split(",").some((name) => name.trim().startsWith("simulated"));
  }

  function renderAlert(node, alert) {
    const level = levelOf(alert.level);
    const simulated = isSimulated(alert.llmModel);
    node.dataset.simulated = String(simulated);
    node.querySelector(".alert-simulated").hidden = !simulated;
    if (simulated) el.simulatedBanner.hidden = false;
    node.dataset.level = level;
    node.dataset.kind = alert.kind || "new";
    node.dataset.cameraId = String(alert.cameraId);
    node.querySelector(".alert-level").textContent = level;
    node.querySelector(".alert-kind").textContent = alert.kind === "end" ? "ended" : alert.kind || "new";
    node.querySelector(".alert-camera").textContent = cameraLabel(String(alert.cameraId));
    const time = node.querySelector(".alert-time");
    time.dateTime = alert.lastSeen || "";
    time.textContent = formatTime(alert.lastSeen);
    const seen = alert.count > 1 ? ` · seen ${alert.count}×` : "";
    node.querySelector(".alert-types").textContent = (alert.riskTypes || []).map(humanise).join(", ") + seen;
    node.querySelector(".alert-desc").textContent = alert.description || "";
    node.querySelector(".alert-button").setAttribute(
      "aria-label",
      `${level} risk alert (${alert.kind}) on camera ${alert.cameraId}: ${alert.description || ""}. Show camera.`,
    );
  }

  function trimFeed() {
    while (el.alertFeed.children.length > MAX_FEED_ITEMS) {
      const last = el.alertFeed.lastElementChild;
      for (const [id, entry] of state.alerts) if (entry.el === last) state.alerts.delete(id);
      last.remove();
    }
  }

  function countActiveAlerts() {
    let active = 0;
    for (const entry of state.alerts.values()) if (entry.alert.kind !== "end") active += 1;
    return active;
  }

  /** Bring a camera's tile into view and flash it (an alert was clicked). */
  function highlightCamera(key) {
    const tile = state.tiles.get(key);
    if (!tile) {
      toast("not_on_wall", `Camera ${key} is not on the wall`);
      return;
    }
    for (const other of state.tiles.values()) other.el.classList.remove("highlight");
    tile.el.classList.add("highlight");
    tile.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
    tile.el.focus({ preventScroll: true });
    window.clearTimeout(tile.highlightTimer);
    tile.highlightTimer = window.setTimeout(() => tile.el.classList.remove("highlight"), HIGHLIGHT_MS);
  }

  function cameraLabel(key) {
    const tile = state.tiles.get(key);
    return tile && tile.name ? tile.name : key;
  }

  // ---------------------------------------------------------------- health

  /** Key-pool and queue summaries; each endpoint may fail on its own and then reads "n/a". */
  async function refreshHealth() {
    const [keys, queues] = await Promise.allSettled([getJson("/api/keys"), getJson("/api/queues")]);
    showHealth(el.healthKeys, keys, summariseKeys);
    showHealth(el.healthQueues, queues, summariseQueues);
  }

  function showHealth(node, outcome, summarise) {
    const summary = outcome.status === "fulfilled" ? summarise(outcome.value) : null;
    if (!summary) {
      node.textContent = "n/a";
      node.dataset.state = "unknown";
      node.title = outcome.status === "rejected" ? String(outcome.reason && outcome.reason.message) : "";
      return;
    }
    node.textContent = summary.text;
    node.dataset.state = summary.state;
    node.title = summary.title || "";
  }

  /** "usable/total · cooling · disabled" from the key-pool status (summary counts or a list of keys). */
  function summariseKeys(data) {
    const counts = keyCounts(data);
    if (!counts) return null;
    const { usable, total, cooling, disabled } = counts;
    const parts = [`${usable}/${total} usable`];
    if (cooling) parts.push(`${cooling} cooling`);
    if (disabled) parts.push(`${disabled} disabled`);
    const health = total === 0 || usable === 0 ? "bad" : usable < total ? "warn" : "ok";
    return { text: parts.join(" · "), state: health, title: `${cooling} cooling, ${disabled} disabled` };
  }

  function keyCounts(data) {
    if (!data || typeof data !== "object") return null;
    const summary = data.summary && typeof data.summary === "object" ? data.summary : data;
    if (typeof summary.total === "number") {
      const cooling = number(summary.cooling ?? summary.coolingDown);
      const disabled = number(summary.disabled);
      const usable = number(summary.usable ?? summary.available ?? summary.total - cooling - disabled);
      return { usable, total: summary.total, cooling, disabled };
    }
    const list = Array.isArray(data) ? data : Array.isArray(data.keys) ? data.keys : null;
    if (!list) return null;
    const counts = { usable: 0, total: list.length, cooling: 0, disabled: 0 };
    for (const key of list) counts[keyState(key)] += 1;
    return counts;
  }

  /** usable | cooling | disabled of one key entry, whichever way the entry spells it. */
  function keyState(key) {
    const word = String(key.state ?? key.status ?? "").toLowerCase();
    if (key.disabled === true || key.enabled === false || /disabled|rejected|arrear/.test(word)) return "disabled";
    if (key.cooling === true || /cool|limited/.test(word)) return "cooling";
    if (typeof key.coolingUntil === "number" && key.coolingUntil * 1000 > Date.now()) return "cooling";
    return "usable";
  }

  /** "gpu 0 · llm 3 · default 0" from queue depths, plus frames awaiting a verdict and dead letters. */
  function summariseQueues(data) {
    const depths = queueDepths(data);
    if (!depths || !depths.length) return null;
    const total = depths.reduce((sum, [, depth]) => sum + depth, 0);
    const parts = depths.map(([name, depth]) => `${name} ${depth}`);
    const dead = data && typeof data.deadLetters === "number" ? data.deadLetters : 0;
    if (dead) parts.push(`${dead} dead`);
    const title = [`${total} task(s) waiting`];
    if (data && typeof data.framesPending === "number") title.push(`${data.framesPending} frame(s) awaiting a verdict`);
    title.push(`${dead} dead-lettered assessment(s)`);
    return { text: parts.join(" · "), state: dead || total > 50 ? "warn" : "ok", title: title.join(", ") };
  }

  function queueDepths(data) {
    const source = data && typeof data === "object" && data.queues !== undefined ? data.queues : data;
    if (Array.isArray(source)) {
      return source
        .filter((q) => q && q.name !== undefined)
        .map((q) => [q.name, number(q.depth ?? q.length ?? q.messages ?? q.size)]);
    }
    if (source && typeof source === "object") {
      return Object.entries(source)
        .map(([name, value]) => [name, typeof value === "object" && value ? number(value.depth ?? value.length) : number(value)])
        .filter(([, depth]) => Number.isFinite(depth));
    }
    return null;
  }

  function number(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  // ---------------------------------------------------------------- add camera

  function onAddCamera(event) {
    event.preventDefault();
    const form = new FormData(el.form);
    const rawId = String(form.get("cameraId") || "").trim();
    const url = String(form.get("rtspUrl") || "").trim();
    const name = String(form.get("name") || "").trim();
    if (!rawId || !url) {
      showFormError("Camera ID and stream URL are both needed.");
      return;
    }
    if (!state.socket || !state.socket.connected) {
      showFormError("Not connected to the server.");
      return;
    }
    // Digits-only ids go as numbers, as the old clients sent them; the server keys both forms alike.
    const cameraId = /^\d{1,18}$/.test(rawId) ? Number(rawId) : rawId;
    const payload = { cameraId, rtspUrl: url };
    if (name) payload.name = name;
    showFormError("");
    state.pendingStart = String(cameraId);
    el.formSubmit.disabled = true;
    state.socket.timeout(10000).emit("start_stream", payload, (err, ack) => {
      el.formSubmit.disabled = false;
      state.pendingStart = null;
      if (err) {
        showFormError("The server did not answer in time.");
        return;
      }
      if (!ack || !ack.started) return; // refused: the error event already explained why
      const tile = ensureTile(ack.cameraId ?? cameraId, name);
      subscribe([tile.wireId]); // replays the latest result of a camera that was already known
      el.form.reset();
    });
  }

  function showFormError(message) {
    el.formError.textContent = message;
    el.formError.hidden = !message;
  }

  // ---------------------------------------------------------------- errors and toasts

  /** `error {code, message, event}`: inline for the add form's own request, a toast otherwise. */
  function onServerError(error) {
    const code = (error && error.code) || "error";
    const message = (error && error.message) || "The server reported an error.";
    if (error && error.event === "start_stream" && state.pendingStart !== null) {
      showFormError(message);
      return;
    }
    toast(code, message);
  }

  function toast(code, message) {
    const node = document.createElement("div");
    node.className = "toast";
    node.setAttribute("role", "status");
    const codeNode = document.createElement("strong");
    codeNode.className = "toast-code";
    codeNode.textContent = code;
    const text = document.createElement("span");
    text.className = "toast-text";
    text.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "✕";
    close.addEventListener("click", () => node.remove());
    node.append(codeNode, text, close);
    el.toasts.append(node);
    window.setTimeout(() => node.remove(), TOAST_MS);
  }

  // ---------------------------------------------------------------- small helpers

  function levelOf(value) {
    return LEVELS.includes(value) ? value : "none";
  }

  function textSpan(className, text) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    return span;
  }

  function listItem(className, text) {
    const li = document.createElement("li");
    li.className = className;
    li.textContent = text;
    return li;
  }

  function humanise(riskType) {
    return String(riskType).replace(/_/g, " ");
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString([], { hour12: false });
  }

  function formatSeconds(seconds) {
    return seconds >= 1 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds * 1000)} ms`;
  }

  // ---------------------------------------------------------------- start

  // A handle for operators in the devtools console and for the browser test (e.g. to send a raw event).
  window.trafficDashboard = { state };

  el.form.addEventListener("submit", onAddCamera);
  el.login.addEventListener("submit", onLogin);
  layoutWall();
  startSession().finally(() => {
    connect();
    refreshHealth();
    setUpIncidents();
  });
  window.setInterval(refreshHealth, HEALTH_REFRESH_MS);
  window.setInterval(refreshCameras, CAMERA_REFRESH_MS);
})();
