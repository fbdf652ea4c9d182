"""Names of every Redis key, pub/sub channel and Socket.IO room, in one place."""

from __future__ import annotations

PREFIX = "traffic:"

CAMERAS = PREFIX + "cameras"
"""Hash: camera id → camera JSON (the desired camera set, see ``traffic.cameras``)."""
CAMERAS_CHANGED = PREFIX + "cameras:changed"
"""Pub/sub channel: a camera was added, changed or removed (payload: its id)."""
CAPTURE_OWNERS = PREFIX + "capture:owners"
"""Sorted set: capture process (lease owner) id → last heartbeat (Redis server time, epoch s)."""
FRAMES_PENDING = PREFIX + "frames:pending"
"""Sorted set: frame id → deadline (epoch s) for frames that entered assessment and are not final."""
DLQ = PREFIX + "dlq:assess"
"""List: JSON records of group assessments that exhausted their retries."""
ALERT_LOG = PREFIX + "alerts:log"
"""List (newest first, capped): JSON alert events."""
INCIDENTS_PENDING = PREFIX + "incidents:pending"
"""List: alert events (JSON) waiting to be written to the incident database, oldest first."""
INCIDENTS_FLUSH_LOCK = PREFIX + "incidents:flush-lock"
"""String: held by the one ``flush_incidents`` run at a time (expires if its holder dies)."""
CLIPS_WRITTEN = PREFIX + "evidence:clips-written"
"""List: clips the capture processes wrote (JSON), waiting for the incident writer to record them."""
MQTT_PUBLISH_LOCK = PREFIX + "mqtt:publish-lock"
"""String: held by the one job publishing the MQTT outbox (expires if its holder dies)."""
WEBHOOKS_DUE = PREFIX + "webhooks:due"
"""Sorted set: webhook delivery id → when its next try is due (epoch s); a handed-out one is pushed ahead."""
WEBHOOKS_DISPATCH_LOCK = PREFIX + "webhooks:dispatch-lock"
"""String: held by the one dispatch fanning the webhook outbox out (expires if its holder dies)."""
WEBHOOKS_DLQ = PREFIX + "dlq:webhooks"
"""List (oldest first, capped): JSON of webhook deliveries that failed for good."""
MOTION_STATS_OWED = PREFIX + "motion:stats-owed"
"""Sorted set: camera id → when its newest analytics went unsent (a ``traffic_stats`` event is owed)."""
KEY_STATE = PREFIX + "keypool"
"""Prefix of the key pool's state (ids and counters only, never secrets)."""
SOCKETIO_CHANNEL = "traffic-socketio"
"""Redis pub/sub channel the Socket.IO message queue uses between workers and web servers."""


def camera_clip_requests(camera_id: str) -> str:
    """List: clips of the camera's incidents waiting to be cut from its ring buffer (JSON requests)."""
    return f"{PREFIX}camera:{camera_id}:clip-requests"


def camera_privacy_boxes(camera_id: str) -> str:
    """Sorted set: capture time → the boxes to blur in that detected frame (JSON), for clips."""
    return f"{PREFIX}camera:{camera_id}:privacy-boxes"


def webhook_delivery(delivery_id: str) -> str:
    """Hash: one webhook delivery (subscription, event, body, attempts, created, last status and error)."""
    return f"{PREFIX}webhooks:delivery:{delivery_id}"


def outbox(output: str) -> str:
    """List: incident events (JSON, oldest first) waiting for an output (``mqtt``, ``webhooks``)."""
    return f"{PREFIX}outbox:{output}"


def camera_lease(camera_id: str) -> str:
    """String: id of the capture process that owns the camera (expiring)."""
    return f"{PREFIX}camera:{camera_id}:lease"


def camera_latest(camera_id: str) -> str:
    """String: the camera's latest final ``detection_result`` JSON."""
    return f"{PREFIX}camera:{camera_id}:latest"


def camera_latest_frame(camera_id: str) -> str:
    """String: JPEG of the camera's most recent captured frame."""
    return f"{PREFIX}camera:{camera_id}:frame"


def camera_status(camera_id: str) -> str:
    """Hash: the camera's connection status (status, message, since, latencyMs)."""
    return f"{PREFIX}camera:{camera_id}:status"


def camera_inflight(camera_id: str) -> str:
    """Sorted set: frame id → enqueue time, frames waiting for or inside the detector."""
    return f"{PREFIX}camera:{camera_id}:inflight"


def camera_tracker(camera_id: str) -> str:
    """Hash: the camera's tracker ``state`` (bytes), the capture time (``at``) of the last frame it saw and a
    token of the write (``writer``: the process that wrote it may go on from its own copy)."""
    return f"{PREFIX}camera:{camera_id}:tracker"


def camera_tracker_epoch(camera_id: str) -> str:
    """Counter: the camera's tracking epoch, raised whenever its tracker starts again (ids restart)."""
    return f"{PREFIX}camera:{camera_id}:tracker:epoch"


def camera_tracker_lock(camera_id: str) -> str:
    """String: the token of the worker applying a frame to the camera's tracker."""
    return f"{PREFIX}camera:{camera_id}:tracker:lock"


def camera_counts(camera_id: str, minute: int) -> str:
    """Hash: the camera's line crossings in one minute (epoch minute), ``line|direction|class`` → count."""
    return f"{PREFIX}camera:{camera_id}:counts:{minute}"


def camera_count_minutes(camera_id: str) -> str:
    """Sorted set: the minutes (member and score) that have a ``camera_counts`` hash."""
    return f"{PREFIX}camera:{camera_id}:counts"


def camera_count_totals(camera_id: str) -> str:
    """Hash: the camera's line crossings since ``_since`` (epoch s), ``line|direction|class`` → count."""
    return f"{PREFIX}camera:{camera_id}:counts:total"


def camera_motion_events(camera_id: str) -> str:
    """Sorted set: the camera's recent motion events (JSON) by frame time, capped in number and age."""
    return f"{PREFIX}camera:{camera_id}:motion:events"


def camera_motion(camera_id: str) -> str:
    """String: the camera's latest analytics snapshot (JSON: tracks, occupancy, near misses in progress)."""
    return f"{PREFIX}camera:{camera_id}:motion"


def camera_stats_tick(camera_id: str) -> str:
    """String (expiring): set while the camera's last ``traffic_stats`` event is under a second old."""
    return f"{PREFIX}camera:{camera_id}:motion:tick"


def camera_waiting(camera_id: str) -> str:
    """Hash: the camera's frame waiting for the detector (``frame``), the frame its queued task names (``origin``)
    and when that task was sent (``sent``): newer frames replace ``frame`` instead of queueing behind it. A turn
    re-queued by a worker has a ``ticket``: the queue's turn count (``turn_clock``) when it will be taken."""
    return f"{PREFIX}camera:{camera_id}:waiting"


def turn_clock(queue: str) -> str:
    """Hash: the detector queue's turns: ``count`` taken so far, the ``last`` one's time, ``pace`` (smoothed
    seconds between turns) and ``jitter`` (smoothed miss of the pace); a camera's queued turn has a ``ticket``."""
    return f"{PREFIX}turns:{queue}"


def frame_taken(frame_id: str) -> str:
    """String: the frame a detector task sent for ``frame_id`` took from its camera's waiting slot (redelivery)."""
    return f"{PREFIX}frame:{frame_id}:taken"


def camera_stats(camera_id: str) -> str:
    """Hash: counters (captured, dropped_superseded, dropped_inflight, dropped_age, detected, assessed …)."""
    return f"{PREFIX}camera:{camera_id}:stats"


CAMERA_FPS_FIELD = "fps"
"""Field of ``camera_stats`` holding the smoothed frames per second sent to the detector (a float, not a counter)."""


def camera_cooldown(camera_id: str) -> str:
    """String with TTL: present while the camera's LLM cooldown runs."""
    return f"{PREFIX}camera:{camera_id}:cooldown"


def camera_budget(camera_id: str, minute: int) -> str:
    """Counter: group assessments of the camera in one wall-clock minute."""
    return f"{PREFIX}camera:{camera_id}:budget:{minute}"


def camera_recent_verdicts(camera_id: str) -> str:
    """Hash: group signature → JSON of the latest verdict for it (for unchanged-scene dedupe)."""
    return f"{PREFIX}camera:{camera_id}:recent"


def camera_unserved_changes(camera_id: str) -> str:
    """Hash: scene key of a tracked group that needed a model call and got none → when (epoch s, repr)."""
    return f"{PREFIX}camera:{camera_id}:unserved"


def camera_alerts(camera_id: str) -> str:
    """Hash: alert identity → JSON of the active alert."""
    return f"{PREFIX}camera:{camera_id}:alerts"


def camera_alerts_lock(camera_id: str) -> str:
    """String (expiring): held while one process folds a frame into the camera's alerts."""
    return f"{PREFIX}camera:{camera_id}:alerts:lock"


def frame_image(frame_id: str) -> str:
    """String: the frame's JPEG (short TTL)."""
    return f"{PREFIX}frame:{frame_id}:jpeg"


def frame_meta(frame_id: str) -> str:
    """Hash: camera id, capture time, deadline of a frame."""
    return f"{PREFIX}frame:{frame_id}:meta"


def frame_analysis(frame_id: str) -> str:
    """String: JSON of the frame's detections and groups."""
    return f"{PREFIX}frame:{frame_id}:analysis"


def frame_verdicts(frame_id: str) -> str:
    """Hash: group index → JSON verdict, written as each assessment ends."""
    return f"{PREFIX}frame:{frame_id}:verdicts"


def frame_final(frame_id: str) -> str:
    """String: set once when the frame is finalised (by the chord or the sweeper)."""
    return f"{PREFIX}frame:{frame_id}:final"


def group_crop(frame_id: str, group_index: int) -> str:
    """String: JPEG crop of one group."""
    return f"{PREFIX}frame:{frame_id}:crop:{group_index}"


def task_deliveries(task_id: str) -> str:
    """Counter: how many times a task was delivered (bounds redelivery after worker loss)."""
    return f"{PREFIX}task:{task_id}:deliveries"


def camera_room(camera_id: str) -> str:
    """Socket.IO room of one camera's events."""
    return f"camera:{camera_id}"


ALERTS_ROOM = "alerts"
"""Socket.IO room that receives every camera's alerts."""


def camera_latest_time(camera_id: str) -> str:
    """String: capture time of the frame in ``camera_latest`` (older results never overwrite newer)."""
    return f"{PREFIX}camera:{camera_id}:latest:ts"


def dead_letter_input(entry_id: str, part: str) -> str:
    """String: a saved input (``crop`` or ``record``) of a dead-lettered assessment, kept for replay."""
    return f"{PREFIX}dlq:{entry_id}:{part}"


def frame_timings(frame_id: str) -> str:
    """Hash: stage → epoch time (detect_start, detect_end, assessed:<group>, final) for latency figures."""
    return f"{PREFIX}frame:{frame_id}:timings"


def frame_preview(frame_id: str) -> str:
    """String: a small JPEG of the frame for dashboards (short TTL); events never carry images."""
    return f"{PREFIX}frame:{frame_id}:preview"


KEY_POOL_LAST = KEY_STATE + ":last"
"""String: id of the key granted last (where round robin goes on)."""
KEY_ALERT_EVENT = "key_alert"
"""Socket.IO event (room ``ALERTS_ROOM``): an API key was disabled by the provider or an operator."""


def key_pool_key(key_id: str) -> str:
    """Hash: one API key's pool state and counters (disabled, cooldown, calls …; never the secret)."""
    return f"{KEY_STATE}:key:{key_id}"


def key_pool_window(key_id: str, span: str) -> str:
    """Sorted set: lease id → send time (µs) of the key's calls in its ``second`` or ``minute`` window."""
    return f"{KEY_STATE}:key-{span}:{key_id}"


def key_pool_leases(key_id: str) -> str:
    """Sorted set: lease id → expiry (µs) of the key's leases out now."""
    return f"{KEY_STATE}:key-leases:{key_id}"


def key_pool_unsent(key_id: str) -> str:
    """Sorted set: lease id → expiry (µs) of the key's leases whose request is not sent yet."""
    return f"{KEY_STATE}:key-unsent:{key_id}"


def key_pool_account(account_id: str) -> str:
    """Hash: one provider account's pool state and counters."""
    return f"{KEY_STATE}:account:{account_id}"


def key_pool_account_window(account_id: str) -> str:
    """Sorted set: lease id → send time (µs) of the account's calls in the last minute."""
    return f"{KEY_STATE}:account-minute:{account_id}"


def key_pool_account_unsent(account_id: str) -> str:
    """Sorted set: lease id → expiry (µs) of the account's leases whose request is not sent yet."""
    return f"{KEY_STATE}:account-unsent:{account_id}"


def key_pool_account_tokens(account_id: str) -> str:
    """Sorted set: ``leaseid|tokens`` → grant time (µs): the account's tokens in the last minute."""
    return f"{KEY_STATE}:account-tokens:{account_id}"
