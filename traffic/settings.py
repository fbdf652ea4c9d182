"""Validated, immutable settings; built once by an entry point (see ``traffic.config``) and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from traffic.geometry import CameraGeometry

DEFAULT_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "truck",
    "traffic light",
    "stop sign",
)
"""COCO class names kept by default, spelled as YOLO reports them."""

DASHSCOPE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"


@dataclass(frozen=True)
class DetectorSettings:
    """How the object detector loads and runs."""

    weights: str = "yolo11n.pt"
    """A path, or a name Ultralytics knows (fetched only when ``allow_download``)."""
    device: str = "auto"
    """``auto`` (first CUDA device, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    imgsz: int = 640
    half: bool = False
    conf: float = 0.35
    iou: float = 0.50
    max_det: int = 200
    classes: tuple[str, ...] = DEFAULT_CLASSES
    """Allowlist of class names (after ``class_map``); empty keeps every class."""
    class_map: tuple[tuple[str, str], ...] = ()
    """Renames of the checkpoint's class names, e.g. (("Normal", "person"),)."""
    allow_download: bool = False
    """Whether Ultralytics may fetch missing weights at run time."""
    backend: str = "auto"
    """``auto``, ``torch``, ``onnx``, ``openvino`` or ``tensorrt`` (see ``traffic.detector_backends``)."""
    threads: int = 0
    """CPU threads of the inference runtime; 0: the cores this process may use (resolved at start-up)."""
    cache_dir: str = ""
    """Where exported models are kept; "" resolves to ``~/.cache/traffic/models`` at start-up."""
    batch: int = 0
    """Most frames (of different cameras) one predict call takes; 0: 8 on a CUDA device, on a CPU 4 with
    OpenVINO and 1 with the other backends (what each gains from batching, measured)."""
    batch_wait_ms: float = 5.0
    """How long a detector worker waits for more frames to fill a batch: an idle system stays at batch 1."""
    pipeline: int = 1
    """Predicts a detector worker lines up per delivery (it takes up to ``batch`` x ``pipeline`` waiting
    frames): the last predict's frames are routed while the next one runs; 1: one after the other (the
    default: on a CPU whose cores inference already fills it gains nothing, measured)."""
    scaled_decode: bool = True
    """Decode for the detector the capture's preview where it is large enough, else each frame's JPEG at the
    smallest DCT scale (1/2, 1/4, 1/8) whose longer side still reaches ``imgsz``; the frame at full size only
    for crops; boxes are reported in full-frame coordinates."""


@dataclass(frozen=True)
class TrackingSettings:
    """How road users keep an identity from one detected frame of a camera to the next."""

    enabled: bool = True
    """Track objects per camera; each detected object then carries a ``trackId``."""
    tracker: str = "bytetrack"
    """The tracking algorithm (``bytetrack``: Roboflow's ``trackers``, chosen by measurement)."""
    lost_track_s: float = 2.0
    """A track not matched for this long ends (its identity is not given back)."""
    activation_confidence: float = 0.5
    """A new track starts only from a detection at least this confident."""
    high_confidence: float = 0.5
    """Detections at least this confident are matched first; weaker ones (down to the detector's
    ``conf``) only extend existing tracks."""
    min_frames: int = 2
    """Frames in a row a new track must be seen before it gets an id (a lone false box never does)."""
    min_iou: float = 0.1
    """Least overlap between a track's predicted box and a detection for them to match."""


@dataclass(frozen=True)
class AnalyticsSettings:
    """Traffic measures computed from tracks: counts, dwell, speed, wrong-way, near misses (``traffic.analytics``).

    Distances and speeds are in metres on a calibrated camera; on an uncalibrated one, thresholds
    marked *relative* are in box heights of the road user (so they hold at any resolution).
    """

    enabled: bool = True
    """Compute analytics (needs tracking)."""
    ttc_s: float = 1.5
    """A pair whose time to collision falls below this (seconds) is a near miss."""
    pet_s: float = 1.0
    """A pair whose post-encroachment time is below this (seconds) is a near miss."""
    conflict_radius_m: float = 1.5
    """Two road users closer than this (metres, calibrated) collide; uncalibrated: half their box widths summed."""
    min_closing_speed_mps: float = 1.0
    """A pair approaching slower than this (m/s; uncalibrated: 0.2 box heights/s) is not on a collision course."""
    dwell_s: float = 30.0
    """A road user stopped in a zone longer than this raises a ``dwell`` event (a zone may set its own)."""
    stop_speed_mps: float = 0.5
    """Slower than this counts as stopped (m/s; uncalibrated: 0.05 box heights/s)."""
    wrong_way_s: float = 1.0
    """Moving against a lane's direction for this long raises a ``wrong_way`` event."""
    speed_window_s: float = 1.0
    """Speed is the anchor's displacement over about this much recent history."""
    trail_s: float = 4.0
    """How much of each track's path the dashboard is sent."""
    line_margin_px: float = 4.0
    """An anchor closer than this to a counting line is on neither side (box jitter never counts twice)."""


@dataclass(frozen=True)
class GroupingSettings:
    """How detections are clustered into traffic groups and cropped."""

    distance_ratio: float = 150.0 / 720.0
    """Link distance as a fraction of the image's shorter side (150 px at 1280x720)."""
    min_group_size: int = 2
    margin_px: int = 12
    crop_jpeg_quality: int = 85
    max_groups: int = 8
    """At most this many groups per frame are sent to assessment (largest first)."""


@dataclass(frozen=True)
class RiskThresholds:
    """Confidence needed for each level when the model names no valid level."""

    low: float = 0.45
    medium: float = 0.65
    high: float = 0.80


@dataclass(frozen=True)
class LLMSettings:
    """The OpenAI-compatible vision model and how it is called."""

    enabled: bool = True
    model: str = "qwen-vl-plus"
    base_url: str = DASHSCOPE_BASE_URL
    timeout_s: float = 30.0
    cooldown_s: float = 3.0
    """Minimum gap between assessments of one camera."""
    language: str = "zh-CN"
    """Language of free-text fields in the reply; levels are always English."""
    max_tokens: int = 400
    temperature: float = 0.1
    max_retries: int = 2
    """Retries of transient errors (5xx, timeouts) within the frame's deadline."""


@dataclass(frozen=True)
class AccountSpec:
    """A provider account whose limits are shared by all of its keys."""

    account_id: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None


@dataclass(frozen=True)
class KeySpec:
    """One API key. ``api_key`` is a secret: it never leaves the process that loaded it."""

    key_id: str
    api_key: str = field(repr=False)
    qps_limit: float | None = None
    rpm_limit: int | None = None
    priority: int = 1
    """1 is the highest priority."""
    enabled: bool = True
    account: str | None = None
    max_concurrency: int | None = None

    @property
    def masked(self) -> str:
        """The key id with the secret's last four characters, safe to log."""
        return f"{self.key_id}(…{self.api_key[-4:]})" if len(self.api_key) >= 8 else f"{self.key_id}(…)"


@dataclass(frozen=True)
class KeyPoolSettings:
    """The pool of API keys and how one is chosen."""

    strategy: str = "least_loaded"
    """``round_robin``, ``least_loaded`` or ``priority``."""
    keys: tuple[KeySpec, ...] = ()
    accounts: tuple[AccountSpec, ...] = ()
    default_cooldown_s: float = 10.0
    max_cooldown_s: float = 120.0
    lease_ttl_s: float = 60.0
    window_margin_ms: float = 20.0
    """Each sliding window the pool keeps is this much (plus 1/200 of its span) longer than the provider's:
    a safety margin for grant-to-arrival jitter, paid for in throughput (``bench/llm_pool.py`` measures it)."""


@dataclass(frozen=True)
class CaptureSettings:
    """How cameras are sampled."""

    frame_interval_s: float = 1.8
    jpeg_quality: int = 85
    frame_ttl_s: float = 30.0
    max_in_flight: int = 2
    """Frames of one camera in detection plus the one waiting for it; beyond that new frames are dropped.
    A waiting frame is always replaced by a newer one (the older is shed), never queued behind it."""
    frame_deadline_s: float = 45.0
    """Every frame that enters assessment is final this long after capture (partial if need be)."""
    allow_file_sources: bool = False
    """Whether ``file://`` and bare paths are accepted as camera URLs (only below ``media_dir``)."""
    media_dir: str | None = None
    """File sources must lie inside this directory; without it no file source is accepted."""
    allowed_hosts: tuple[str, ...] = ()
    """Camera hosts (names, addresses or CIDR networks) allowed although loopback, private, link-local…"""
    max_cameras: int = 64
    """At most this many cameras (each costs a reader thread, Redis keys and metric label sets)."""
    turn_timing: bool = True
    """Under overload, time a camera's samples to just before its detector turns (fresher frames detected;
    a sample moves earlier, never later, so at most one more sample per turn)."""


@dataclass(frozen=True)
class PipelineSettings:
    """Task limits, gating and alerting of the Celery pipeline."""

    visibility_timeout_s: float = 25.0
    """Redis redelivers an unacknowledged task this long after delivery (a dead worker's task)."""
    assess_time_limit_s: float = 15.0
    """Hard limit of one ``assess_group`` run; calls and retries fit inside it and the deadline."""
    retry_backoff_s: float = 1.0
    """First retry delay of a transient provider error; doubles per retry."""
    dedupe_window_s: float = 15.0
    """A group unchanged since a verdict this recent reuses it instead of calling the model (as long as
    the re-check: a rise no detector sees is caught within it for every group)."""
    dedupe_recheck_s: float = 15.0
    """A watched group (a person, bicycle or motorcycle next to a car, truck or bus; or a verdict of low or
    above) reuses a verdict at most this old: risk can rise with nothing a detector sees changing."""
    dedupe_distance_tolerance: float = 0.15
    """Reuse needs the closest members of each pair of classes as far apart as at the verdict, to within
    this many box heights (mean of the pair's heights): members closing in break it."""
    budget_per_minute: int = 60
    """At most this many group assessments per camera per minute."""
    alert_level: str = "medium"
    """Lowest level that raises an alert."""
    alert_end_after_s: float = 10.0
    """An alert not seen again for this long ends."""
    latest_ttl_s: float = 3600.0
    """How long a camera's latest result stays in Redis."""


@dataclass(frozen=True)
class ServerSettings:
    """The web server."""

    host: str = "127.0.0.1"
    port: int = 5000
    auth_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    client_file_sources: bool = False
    """Whether Socket.IO, ``/ws`` and REST clients may name local files as cameras (besides the capture rules)."""
    flower_auth: str | None = field(default=None, repr=False)
    """Flower's ``user:password[,user:password]`` (``FLOWER_BASIC_AUTH``): known here so logs mask the passwords."""
    trusted_network: bool = False
    """Serve without a token on a non-loopback address (only where every host that can reach it is trusted)."""
    max_probes: int = 4
    """``check_camera`` probes running at once in one web process."""
    max_probes_per_client: int = 1
    """``check_camera`` probes running at once for one client address."""


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics of the worker processes."""

    port: int = 0
    """A Celery worker node serves its own ``/metrics`` on this port; 0 serves none (the web server may)."""
    host: str = "127.0.0.1"
    """Address the worker node's exporter binds to."""
    dir: str | None = None
    """Multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``); each worker node writes to its own folder in it."""


@dataclass(frozen=True)
class IncidentSettings:
    """The durable incident history (``infra.incident_db``)."""

    database_url: str | None = field(default=None, repr=False)
    """SQLAlchemy URL, ``sqlite:////path/incidents.db`` or ``postgresql+psycopg://user:pw@host/db``; None keeps
    no history (``traffic run`` gives its children a SQLite file in the run directory)."""
    retention_days: float = 90.0
    """Incidents (and their audit logs) first seen longer ago than this are deleted; 0 keeps them forever."""
    retention_by_level: tuple[tuple[str, float], ...] = ()
    """Days per level (``low``, ``medium``, ``high``) instead of ``retention_days``."""
    retention_by_kind: tuple[tuple[str, float], ...] = ()
    """Days per kind (``model``, ``near_miss``, ``wrong_way``); where a level's days apply too, the longer."""


@dataclass(frozen=True)
class EvidenceSettings:
    """Each incident's annotated snapshot and short clip (``traffic.evidence``)."""

    dir: str | None = None
    """Where snapshots and clips are written (one folder per camera); None keeps no evidence
    (``traffic run`` uses ``evidence/`` in its run directory)."""
    clip_before_s: float = 4.0
    """Seconds of video before the frame that raised the incident, in its clip."""
    clip_after_s: float = 4.0
    """Seconds of video after that frame, in its clip."""
    clip_fps: float = 5.0
    """Frames per second kept in each camera's ring buffer, and the clip's rate."""
    ring_max_mb: float = 32.0
    """Most memory (JPEG bytes) one camera's ring buffer holds; the oldest frames go first."""


@dataclass(frozen=True)
class PrivacySettings:
    """What is hidden in stored evidence and in the frames sent to browsers."""

    blur: bool = False
    """Blur every road user of ``blur_classes`` (by its detected box) in evidence and in browser frames."""
    blur_classes: tuple[str, ...] = ("person", "license_plate", "license plate", "plate")
    """Class names blurred when ``blur`` is on: people, and plates where the model finds them."""


@dataclass(frozen=True)
class MqttSettings:
    """Incidents and traffic stats published to an MQTT broker (``workers.mqtt_output``, ``infra.mqtt_client``)."""

    url: str | None = field(default=None, repr=False)
    """``mqtt://[user:password@]host[:port]`` (``mqtts://`` for TLS); None publishes nothing."""
    topic_prefix: str = "traffic"
    """Topics are ``<prefix>/cameras/<camera id>/incidents`` and ``<prefix>/cameras/<camera id>/stats``."""
    qos: int = 1
    """QoS of incident messages (stats go at QoS 0)."""
    stats: bool = True
    """Also publish each camera's ``traffic_stats`` (retained, about once a second)."""
    client_id: str = ""
    """MQTT client id prefix ("" : ``traffic``); each process adds its host name and pid."""


@dataclass(frozen=True)
class WebhookSubscription:
    """One webhook target (``TRAFFIC_WEBHOOKS_FILE``): which incident events it gets, where, and its signing key."""

    name: str
    """The subscription's id (in logs, metrics, dead letters and task lookups; never the URL)."""
    url: str = field(repr=False)
    """``https://`` (or ``http://``) target; its path or query may hold a token, so kept out of repr and logs."""
    secret: str = field(repr=False)
    """HMAC-SHA256 key of the signature header."""
    events: tuple[str, ...] = ("incident", "incident_updated")
    """Which events it gets (``incident``: new; ``incident_updated``: changed)."""
    min_level: str = "low"
    """Lowest incident level it gets (``low``, ``medium`` or ``high``), judged on the incident as the event has it."""
    cameras: tuple[str, ...] = ()
    """Camera ids; empty: every camera."""
    kinds: tuple[str, ...] = ()
    """Incident kinds (``model``, ``near_miss``, ``wrong_way``); empty: every kind."""


@dataclass(frozen=True)
class WebhookSettings:
    """Incident events POSTed to subscribed URLs (``workers.webhooks``; see ``docs/WEBHOOKS.md``)."""

    subscriptions: tuple[WebhookSubscription, ...] = ()
    timeout_s: float = 5.0
    """Connect and read timeout of one try."""
    max_attempts: int = 10
    """Tries of one delivery (the first included) before it is dead-lettered."""
    backoff_s: float = 10.0
    """Wait before the second try; doubles per try, up to ``backoff_max_s`` (defaults: about 72 min in all)."""
    backoff_max_s: float = 1800.0
    allowed_hosts: tuple[str, ...] = ()
    """Target hosts (names, addresses or CIDR networks) allowed although loopback, private, link-local…
    (the camera URL policy's ranges; cameras have their own list, ``capture.allowed_hosts``)."""

    def subscription(self, name: str) -> WebhookSubscription | None:
        """The subscription called ``name``, if it is configured."""
        return next((s for s in self.subscriptions if s.name == name), None)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, grouped by subsystem."""

    redis_url: str | None = field(default=None, repr=False)
    """``None`` means: start an embedded local Redis. May hold a password, so kept out of repr."""
    log_level: str = "INFO"
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    grouping: GroupingSettings = field(default_factory=GroupingSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    risk: RiskThresholds = field(default_factory=RiskThresholds)
    llm: LLMSettings = field(default_factory=LLMSettings)
    keys: KeyPoolSettings = field(default_factory=KeyPoolSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    geometry: tuple[CameraGeometry, ...] = ()
    """Per-camera counting lines, zones and calibration (``TRAFFIC_GEOMETRY_FILE``); a camera not listed has none."""

    def geometry_of(self, camera_id: str) -> CameraGeometry | None:
        """The geometry configured for ``camera_id`` (its key string, as ``normalise_camera_id`` gives it)."""
        return next((g for g in self.geometry if g.camera_id == camera_id), None)
