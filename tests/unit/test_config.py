"""Tests of traffic.config: layering, old names, strictness, YAML formats and secret hygiene."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from traffic import config
from traffic.config import describe_settings, key_pool_from_mapping, load_settings, settings_from_mapping
from traffic.errors import ConfigError
from traffic.settings import AccountSpec, AnalyticsSettings, KeySpec, Settings, TrackingSettings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config"
SECRET = "sk-supersecret-value-9f3a"
SHORT_SIDE = 720.0  # distance_ratio is a fraction of the shorter side; old pixels are at 1280x720


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``tmp_path/name`` and return the path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults and the table


def test_no_environment_and_no_files_gives_the_defaults() -> None:
    assert load_settings({}) == Settings()


def test_unrelated_environment_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "HOME": "/root", "TRAFFICLIGHT": "x"}) == Settings()


def _leaf_paths(obj: object, prefix: str = "") -> set[str]:
    """Dotted paths of the non-dataclass fields of a settings dataclass."""
    out: set[str] = set()
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out |= _leaf_paths(value, path + ".")
        else:
            out.add(path)
    return out


def test_table_covers_every_scalar_setting_and_nothing_else() -> None:
    paths = {row.path for row in config._ROWS}
    assert paths == _leaf_paths(Settings()) - {"keys.keys", "keys.accounts", "geometry", "webhooks.subscriptions"}


def test_table_env_names_and_yaml_paths_are_unique() -> None:
    env = [name for row in config._ROWS for name in row.env]
    yaml_paths = [(row.file, path) for row in config._ROWS for path in row.yaml]
    assert len(env) == len(set(env))
    assert len(yaml_paths) == len(set(yaml_paths))


def test_readme_documents_every_traffic_variable() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    missing = [n for n in config.known_env_vars() if not n.startswith("ALGO_") and f"`{n}`" not in readme]
    assert missing == []


# --------------------------------------------------------------------------- examples


def test_model_config_example_loads_and_restates_the_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, model_config=EXAMPLES / "model_config.example.yaml")
    assert settings == Settings()


def test_api_keys_example_loads(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"DASHSCOPE_KEY_001": "sk-example-0001", "DASHSCOPE_KEY_003": "sk-example-0003"}
    with caplog.at_level(logging.WARNING, logger="traffic.config"):
        settings = load_settings(
            environ,
            model_config=EXAMPLES / "model_config.example.yaml",
            api_keys=EXAMPLES / "api_keys.example.yaml",
        )
    pool = settings.keys
    assert [k.key_id for k in pool.keys] == ["key-1", "key-3"]
    assert pool.keys[0] == KeySpec(
        "key-1", "sk-example-0001", qps_limit=5, rpm_limit=300, account="main", max_concurrency=8
    )
    assert pool.accounts == (AccountSpec("main", rpm_limit=1200), AccountSpec("backup", rpm_limit=600))
    assert "key-2" in caplog.text  # skipped: its optional variable is unset


def test_examples_contain_no_literal_secrets() -> None:
    for path in EXAMPLES.glob("*.example.yaml"):
        text = path.read_text(encoding="utf-8")
        assert "sk-" not in text, path
        for line in text.splitlines():
            if "api_key:" in line.split("#")[0]:
                assert "${" in line, (path, line)


def test_example_files_through_environment_paths() -> None:
    environ = {
        "TRAFFIC_MODEL_CONFIG": str(EXAMPLES / "model_config.example.yaml"),
        "TRAFFIC_API_KEYS_FILE": str(EXAMPLES / "api_keys.example.yaml"),
        "DASHSCOPE_KEY_001": "sk-example-0001",
    }
    assert [k.key_id for k in load_settings(environ).keys.keys] == ["key-1"]


# --------------------------------------------------------------------------- precedence


def test_environment_beats_yaml_beats_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "model: {confidence_threshold: 0.5, imgsz: 960}\nllm: {timeout: 12}\n")
    settings = load_settings({"TRAFFIC_CONF": "0.6"}, model_config=path)
    assert settings.detector.conf == 0.6  # env
    assert settings.detector.imgsz == 960  # yaml
    assert settings.llm.timeout_s == 12.0  # yaml
    assert settings.detector.iou == 0.5  # default


def test_model_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "model: {imgsz: 320}\n")
    assert load_settings({"TRAFFIC_MODEL_CONFIG": str(path)}).detector.imgsz == 320
    assert load_settings({"ALGO_MODEL_CONFIG_PATH": str(path)}).detector.imgsz == 320


def test_explicit_file_argument_beats_environment_path(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "model: {imgsz: 320}\n")
    b = write(tmp_path, "b.yaml", "model: {imgsz: 480}\n")
    assert load_settings({"TRAFFIC_MODEL_CONFIG": str(a)}, model_config=b).detector.imgsz == 480


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRAFFIC_MODEL_CONFIG: file not found"):
        load_settings({"TRAFFIC_MODEL_CONFIG": str(tmp_path / "nope.yaml")})


def test_algo_names_are_accepted_and_traffic_wins() -> None:
    assert load_settings({"ALGO_FRAME_INTERVAL": "2.5"}).capture.frame_interval_s == 2.5
    both = {"ALGO_FRAME_INTERVAL": "2.5", "TRAFFIC_FRAME_INTERVAL": "0.5"}
    assert load_settings(both).capture.frame_interval_s == 0.5


def test_old_alert_pause_maps_to_llm_cooldown() -> None:
    assert load_settings({"ALGO_ALERT_PAUSE_SECONDS": "7"}).llm.cooldown_s == 7.0


def test_redis_url_precedence() -> None:
    plain = {"REDIS_URL": "redis://plain:6379/0"}
    assert load_settings(plain).redis_url == "redis://plain:6379/0"
    old = {**plain, "ALGO_REDIS_URL": "redis://old:6379/0"}
    assert load_settings(old).redis_url == "redis://old:6379/0"
    new = {**old, "TRAFFIC_REDIS_URL": "redis://new:6379/0"}
    assert load_settings(new).redis_url == "redis://new:6379/0"


def test_two_aliases_at_one_level_must_agree() -> None:
    assert load_settings({"TRAFFIC_CONF": "0.4", "TRAFFIC_YOLO_CONFIDENCE": "0.4"}).detector.conf == 0.4
    with pytest.raises(ConfigError, match="both set detector.conf"):
        load_settings({"TRAFFIC_CONF": "0.4", "TRAFFIC_YOLO_CONFIDENCE": "0.5"})


def test_empty_environment_variable_counts_as_unset() -> None:
    assert load_settings({"TRAFFIC_IMGSZ": "", "TRAFFIC_REDIS_URL": "  "}) == Settings()


def test_environment_values_of_every_kind() -> None:
    settings = load_settings(
        {
            "TRAFFIC_MODEL_NAME": "weights/best.pt",
            "TRAFFIC_DEVICE": "CUDA:1",
            "TRAFFIC_HALF": "yes",
            "TRAFFIC_IOU": "0.6",
            "TRAFFIC_MAX_DET": "50",
            "TRAFFIC_ALLOWED_CLASSES": "person, traffic light ,car",
            "TRAFFIC_CLASS_MAP": "Normal=person, Fall=person",
            "TRAFFIC_ALLOW_DOWNLOAD": "on",
            "TRAFFIC_LLM_ENABLED": "false",
            "TRAFFIC_KEY_STRATEGY": "round-robin",
            "TRAFFIC_SERVER_PORT": "8080",
            "TRAFFIC_CORS_ORIGINS": "http://a.example,http://b.example",
            "TRAFFIC_LOG_LEVEL": "debug",
            "TRAFFIC_LLM_MAX_RETRY": "0",
        }
    )
    d = settings.detector
    assert (d.weights, d.device, d.half, d.iou, d.max_det) == ("weights/best.pt", "cuda:1", True, 0.6, 50)
    assert d.classes == ("person", "traffic light", "car")
    assert d.class_map == (("Normal", "person"), ("Fall", "person"))
    assert d.allow_download is True
    assert settings.llm.enabled is False
    assert settings.llm.max_retries == 0
    assert settings.keys.strategy == "round_robin"
    assert settings.server.port == 8080
    assert settings.server.cors_origins == ("http://a.example", "http://b.example")
    assert settings.log_level == "DEBUG"


# --------------------------------------------------------------------------- unknown names


def test_unknown_traffic_variable_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"TRAFFIC_FRAME_INTERVALL.*did you mean TRAFFIC_FRAME_INTERVAL\?"):
        load_settings({"TRAFFIC_FRAME_INTERVALL": "1"})


def test_unknown_algo_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ALGO_SOMETHING_NEW"):
        load_settings({"ALGO_SOMETHING_NEW": "1"})


def test_obsolete_algo_variables_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="traffic.config"):
        settings = load_settings({"ALGO_ENABLE_KAFKA_STREAMING": "true", "ALGO_JWT_SECRET": "s3cr3t-jwt"})
    assert settings == Settings()
    assert "ALGO_ENABLE_KAFKA_STREAMING" in caplog.text
    assert "ALGO_JWT_SECRET" in caplog.text
    assert "s3cr3t-jwt" not in caplog.text


def test_obsolete_name_with_new_prefix_is_unknown() -> None:
    with pytest.raises(ConfigError, match="TRAFFIC_JWT_SECRET"):
        load_settings({"TRAFFIC_JWT_SECRET": "x"})


def test_unknown_yaml_key_names_dotted_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "llm:\n  risk_threshold:\n    low: 0.4\n    hihg: 0.9\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, model_config=path)
    message = str(info.value)
    assert f"{path}:llm.risk_threshold.hihg" in message
    assert "did you mean llm.risk_threshold.high?" in message


def test_unknown_yaml_section_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "kafka: {enabled: true}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml:kafka: unknown key"):
        load_settings({}, model_config=path)


def test_the_old_tracking_section_is_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "tracking: {enabled: false, tracker: bytetrack}\n")
    assert load_settings({}, model_config=path).tracking == TrackingSettings(enabled=False)
    bad = write(tmp_path, "b.yaml", "tracking: {tracker: deepsort}\n")
    with pytest.raises(ConfigError, match="tracking.tracker"):
        load_settings({}, model_config=bad)


def test_old_tracker_type_variable_is_read() -> None:
    assert load_settings({"ALGO_TRACKER_TYPE": "bytetrack"}).tracking.tracker == "bytetrack"
    with pytest.raises(ConfigError, match="ALGO_TRACKER_TYPE: invalid tracking.tracker"):
        load_settings({"ALGO_TRACKER_TYPE": "sort"})


# --------------------------------------------------------------------------- analytics


ANALYTICS_ENV = {
    "TRAFFIC_ANALYTICS": "off",
    "TRAFFIC_NEAR_MISS_TTC_S": "2.5",
    "TRAFFIC_NEAR_MISS_PET_S": "0.75",
    "TRAFFIC_CONFLICT_RADIUS_M": "2",
    "TRAFFIC_MIN_CLOSING_SPEED_MPS": "0.5",
    "TRAFFIC_DWELL_S": "45",
    "TRAFFIC_STOP_SPEED_MPS": "0.3",
    "TRAFFIC_WRONG_WAY_S": "2",
    "TRAFFIC_SPEED_WINDOW_S": "0.5",
    "TRAFFIC_TRAIL_S": "0",
    "TRAFFIC_LINE_MARGIN_PX": "6",
}
ANALYTICS_SET = AnalyticsSettings(
    enabled=False,
    ttc_s=2.5,
    pet_s=0.75,
    conflict_radius_m=2.0,
    min_closing_speed_mps=0.5,
    dwell_s=45.0,
    stop_speed_mps=0.3,
    wrong_way_s=2.0,
    speed_window_s=0.5,
    trail_s=0.0,
    line_margin_px=6.0,
)


def test_every_analytics_field_has_a_row() -> None:
    paths = {row.path for row in config._ROWS if row.path.startswith("analytics.")}
    assert paths == {f"analytics.{f.name}" for f in dataclasses.fields(AnalyticsSettings)}


def test_analytics_from_the_environment() -> None:
    assert load_settings(ANALYTICS_ENV).analytics == ANALYTICS_SET
    old = {name.replace("TRAFFIC_", "ALGO_", 1): value for name, value in ANALYTICS_ENV.items()}
    assert load_settings(old).analytics == ANALYTICS_SET


def test_analytics_from_yaml_and_the_environment_wins(tmp_path: Path) -> None:
    text = """
analytics:
  enabled: false
  ttc_s: 2.5
  pet_s: 0.75
  conflict_radius_m: 2
  min_closing_speed_mps: 0.5
  dwell_s: 45
  stop_speed_mps: 0.3
  wrong_way_s: 2
  speed_window_s: 0.5
  trail_s: 0
  line_margin_px: 6
"""
    path = write(tmp_path, "m.yaml", text)
    assert load_settings({}, model_config=path).analytics == ANALYTICS_SET
    overridden = load_settings({"TRAFFIC_DWELL_S": "10", "TRAFFIC_ANALYTICS": "true"}, model_config=path)
    assert overridden.analytics == dataclasses.replace(ANALYTICS_SET, dwell_s=10.0, enabled=True)


def test_analytics_without_tracking_is_not_an_error() -> None:
    settings = load_settings({"TRAFFIC_TRACKING": "false", "TRAFFIC_ANALYTICS": "true"})
    assert (settings.tracking.enabled, settings.analytics.enabled) == (False, True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRAFFIC_NEAR_MISS_TTC_S", "10"),
        ("TRAFFIC_NEAR_MISS_PET_S", "0.001"),
        ("TRAFFIC_CONFLICT_RADIUS_M", "50"),
        ("TRAFFIC_MIN_CLOSING_SPEED_MPS", "50"),
        ("TRAFFIC_DWELL_S", "86400"),
        ("TRAFFIC_STOP_SPEED_MPS", "10"),
        ("TRAFFIC_WRONG_WAY_S", "600"),
        ("TRAFFIC_SPEED_WINDOW_S", "0.25"),
        ("TRAFFIC_SPEED_WINDOW_S", "10"),
        ("TRAFFIC_TRAIL_S", "60"),
        ("TRAFFIC_LINE_MARGIN_PX", "0"),
        ("TRAFFIC_LINE_MARGIN_PX", "100"),
    ],
)
def test_analytics_bounds_are_inclusive_where_they_should_be(name: str, value: str) -> None:
    load_settings({name: value})


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("TRAFFIC_ANALYTICS", "maybe", "invalid analytics.enabled: expected true or false"),
        ("TRAFFIC_NEAR_MISS_TTC_S", "0", "invalid analytics.ttc_s: must be > 0 and <= 10"),
        ("TRAFFIC_NEAR_MISS_TTC_S", "10.5", "invalid analytics.ttc_s: must be > 0 and <= 10"),
        ("TRAFFIC_NEAR_MISS_PET_S", "-1", "invalid analytics.pet_s: must be > 0 and <= 10"),
        ("TRAFFIC_CONFLICT_RADIUS_M", "0", "invalid analytics.conflict_radius_m: must be > 0 and <= 50"),
        ("TRAFFIC_CONFLICT_RADIUS_M", "51", "invalid analytics.conflict_radius_m"),
        ("TRAFFIC_MIN_CLOSING_SPEED_MPS", "0", "invalid analytics.min_closing_speed_mps: must be > 0 and <= 50"),
        ("TRAFFIC_DWELL_S", "0", "invalid analytics.dwell_s: must be > 0 and <= 86400"),
        ("TRAFFIC_DWELL_S", "86401", "invalid analytics.dwell_s"),
        ("TRAFFIC_STOP_SPEED_MPS", "0", "invalid analytics.stop_speed_mps: must be > 0 and <= 10"),
        ("TRAFFIC_WRONG_WAY_S", "0", "invalid analytics.wrong_way_s: must be > 0 and <= 600"),
        ("TRAFFIC_WRONG_WAY_S", "601", "invalid analytics.wrong_way_s"),
        ("TRAFFIC_SPEED_WINDOW_S", "0.2", "invalid analytics.speed_window_s: must be >= 0.25 and <= 10"),
        ("TRAFFIC_SPEED_WINDOW_S", "11", "invalid analytics.speed_window_s"),
        ("TRAFFIC_TRAIL_S", "-1", "invalid analytics.trail_s: must be >= 0 and <= 60"),
        ("TRAFFIC_TRAIL_S", "61", "invalid analytics.trail_s"),
        ("TRAFFIC_LINE_MARGIN_PX", "101", "invalid analytics.line_margin_px: must be >= 0 and <= 100"),
        ("TRAFFIC_LINE_MARGIN_PX", "wide", "invalid analytics.line_margin_px: expected a number"),
        ("TRAFFIC_DWELL_S", "inf", "invalid analytics.dwell_s: expected a number"),
    ],
)
def test_bad_analytics_environment_values(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    assert f"{name}: {fragment}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("analytics: {ttc_s: 0}", "m.yaml:analytics.ttc_s: invalid analytics.ttc_s: must be > 0"),
        ("analytics: {dwell_s: true}", "m.yaml:analytics.dwell_s: invalid analytics.dwell_s: expected a number"),
        ("analytics: {enabled: 3}", "m.yaml:analytics.enabled: invalid analytics.enabled"),
        ("analytics: {dwel_s: 3}", "m.yaml:analytics.dwel_s: unknown key (did you mean analytics.dwell_s?)"),
        ("analytics: [1]", "m.yaml:analytics: expected a mapping"),
    ],
)
def test_bad_analytics_yaml_values(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, "m.yaml", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, model_config=path)
    assert fragment in str(info.value)


def test_unknown_analytics_variable_suggests_the_known_one() -> None:
    with pytest.raises(ConfigError, match=r"did you mean TRAFFIC_DWELL_S\?"):
        load_settings({"TRAFFIC_DWEL_S": "3"})


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "model:\n  imgsz: 320\n  imgsz: 640\n")
    with pytest.raises(ConfigError, match=r"m\.yaml:3:3: invalid YAML: duplicate key 'imgsz'"):
        load_settings({}, model_config=path)


def test_invalid_yaml_does_not_echo_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", f"keys:\n  - api_key: {SECRET}\n    : [\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, api_keys=path)
    assert SECRET not in str(info.value)
    assert "invalid YAML" in str(info.value)


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "model: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"m\.yaml:model: expected a mapping"):
        load_settings({}, model_config=path)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"TRAFFIC_IMGSZ": "big"}, "TRAFFIC_IMGSZ: invalid detector.imgsz: expected an integer"),
        ({"TRAFFIC_CONF": "1.5"}, "TRAFFIC_CONF: invalid detector.conf: must be >= 0 and <= 1"),
        ({"ALGO_YOLO_IOU": "-0.1"}, "ALGO_YOLO_IOU: invalid detector.iou"),
        (
            {"TRAFFIC_FRAME_INTERVAL": "0"},
            "TRAFFIC_FRAME_INTERVAL: invalid capture.frame_interval_s: must be > 0",
        ),
        ({"TRAFFIC_FRAME_DEADLINE": "nan"}, "invalid capture.frame_deadline_s: expected a number"),
        ({"TRAFFIC_SERVER_PORT": "70000"}, "TRAFFIC_SERVER_PORT: invalid server.port"),
        ({"TRAFFIC_SERVER_PORT": "0"}, "TRAFFIC_SERVER_PORT: invalid server.port"),
        ({"TRAFFIC_KEY_STRATEGY": "random"}, "TRAFFIC_KEY_STRATEGY: invalid keys.strategy: must be one of"),
        ({"TRAFFIC_DEVICE": "gpu0"}, "TRAFFIC_DEVICE: invalid detector.device"),
        ({"TRAFFIC_HALF": "maybe"}, "TRAFFIC_HALF: invalid detector.half: expected true or false"),
        ({"TRAFFIC_CLASS_MAP": "Normal"}, "TRAFFIC_CLASS_MAP: invalid detector.class_map"),
        ({"TRAFFIC_LOG_LEVEL": "LOUD"}, "TRAFFIC_LOG_LEVEL: invalid log_level"),
        ({"TRAFFIC_LLM_BASE_URL": "ftp://x"}, "TRAFFIC_LLM_BASE_URL: invalid llm.base_url"),
        ({"TRAFFIC_REDIS_URL": "localhost:6379"}, "TRAFFIC_REDIS_URL: invalid redis_url"),
        ({"TRAFFIC_MAX_IN_FLIGHT": "0"}, "TRAFFIC_MAX_IN_FLIGHT: invalid capture.max_in_flight"),
        ({"TRAFFIC_RISK_LOW": "0.7"}, "risk thresholds must satisfy 0 < low < medium < high <= 1"),
        ({"TRAFFIC_RISK_HIGH": "1.2"}, "TRAFFIC_RISK_HIGH: invalid risk.high"),
        ({"TRAFFIC_KEY_MAX_COOLDOWN": "5"}, "keys.max_cooldown_s"),
    ],
)
def test_bad_environment_values(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ)
    assert fragment in str(info.value)


def test_threshold_error_names_the_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "llm: {risk_threshold: {medium: 0.9}}\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, model_config=path)
    message = str(info.value)
    assert f"medium=0.9 from {path}:llm.risk_threshold.medium" in message
    assert "high=0.8 from default" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model: {imgsz: 64.5}", "m.yaml:model.imgsz: invalid detector.imgsz: expected an integer"),
        ("model: {confidence_threshold: high}", "m.yaml:model.confidence_threshold: invalid detector.conf"),
        ("model: {half_precision: 2}", "m.yaml:model.half_precision: invalid detector.half"),
        ("model: {device: 'cuda:x'}", "m.yaml:model.device: invalid detector.device"),
        ("model: {allowed_classes: 3}", "m.yaml:model.allowed_classes: invalid detector.classes"),
        ("model: {allowed_classes: [car, car]}", "lists a name twice"),
        ("model: {name: a.pt, weights: b.pt}", "both set detector.weights"),
        ("server: {port: 99999}", "m.yaml:server.port: invalid server.port"),
        ("post_processing: {distance_threshold: -3}", "m.yaml:post_processing.distance_threshold"),
        (
            "post_processing: {distance_ratio: 0.1, distance_threshold: 150}",
            "both set grouping.distance_ratio",
        ),
    ],
)
def test_bad_yaml_values(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, "m.yaml", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, model_config=path)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- model_config.yaml


OLD_MODEL_CONFIG = """
model:
  name: yolov8n.pt
  device: cpu
  confidence_threshold: 0.25
  iou_threshold: 0.45
  half_precision: false
  imgsz: 1280
  max_det: 100
  allowed_classes: [person, car]
  class_map: {Normal: person, Fall: person}
  allow_download: true
tracking: {enabled: true, tracker: bytetrack}
llm:
  enabled: true
  model: qwen-vl-max
  base_url: https://example.invalid/v1
  timeout: 20
  cooldown_seconds: 5
  language: en-US
  max_retry: 3
  risk_threshold: {low: 0.4, medium: 0.6, high: 0.9}
post_processing: {distance_threshold: 300, min_group_size: 3, margin: 8, max_groups: 4}
capture: {frame_interval: 1.0}
server: {host: 0.0.0.0, port: 8000}
redis: {url: "redis://localhost:6379/1"}
"""


def test_old_model_config_file(tmp_path: Path) -> None:
    settings = load_settings({}, model_config=write(tmp_path, "model_config.yaml", OLD_MODEL_CONFIG))
    d = settings.detector
    assert (d.weights, d.device, d.conf, d.iou, d.imgsz, d.max_det) == (
        "yolov8n.pt",
        "cpu",
        0.25,
        0.45,
        1280,
        100,
    )
    assert d.classes == ("person", "car")
    assert d.class_map == (("Normal", "person"), ("Fall", "person"))
    assert d.allow_download is True
    llm = settings.llm
    assert (llm.model, llm.timeout_s, llm.cooldown_s, llm.language, llm.max_retries) == (
        "qwen-vl-max",
        20.0,
        5.0,
        "en-US",
        3,
    )
    assert (settings.risk.low, settings.risk.medium, settings.risk.high) == (0.4, 0.6, 0.9)
    g = settings.grouping
    assert g.distance_ratio == pytest.approx(300 / SHORT_SIDE)
    assert (g.min_group_size, g.margin_px, g.max_groups) == (3, 8, 4)
    assert settings.capture.frame_interval_s == 1.0
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8000)
    assert settings.redis_url == "redis://localhost:6379/1"


def test_distance_threshold_is_converted_to_a_ratio() -> None:
    settings = settings_from_mapping({"post_processing": {"distance_threshold": 150}})
    assert settings.grouping.distance_ratio == pytest.approx(150 / SHORT_SIDE)
    assert settings.grouping.distance_ratio == Settings().grouping.distance_ratio
    direct = settings_from_mapping({"post_processing": {"distance_ratio": 0.2}})
    assert direct.grouping.distance_ratio == 0.2
    assert load_settings({"TRAFFIC_DISTANCE_THRESHOLD": "73.4"}).grouping.distance_ratio == pytest.approx(
        73.4 / SHORT_SIDE
    )


def test_null_and_empty_sections_keep_defaults() -> None:
    assert settings_from_mapping({"model": None, "server": {"auth_token": None}}) == Settings()


def test_integer_device_means_cuda_index() -> None:
    assert settings_from_mapping({"model": {"device": 0}}).detector.device == "cuda:0"


def test_env_expansion_in_model_config() -> None:
    data = {"server": {"port": "${PORT:-5050}", "host": "${HOST}"}}
    settings = settings_from_mapping(data, environ={"HOST": "0.0.0.0"})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 5050)


# --------------------------------------------------------------------------- api_keys.yaml


def test_keys_format_with_api_key_and_key_id(tmp_path: Path) -> None:
    text = """
strategy: priority
max_retry_per_key: 2
default_cooldown: 5
max_cooldown: 60
lease_ttl: 30
accounts:
  - {id: acct-a, rpm_limit: 1200, tpm_limit: 100000}
keys:
  - {key_id: k1, api_key: "${K1}", qps_limit: 2, rpm_limit: 60, priority: 1, account: acct-a}
  - {key_id: k2, api_key: "${K2}", priority: 2, enabled: false, max_concurrency: 3}
"""
    settings = load_settings({"K1": "sk-aaaa-1111", "K2": "sk-bbbb-2222"}, api_keys=write(tmp_path, "k.yaml", text))
    pool = settings.keys
    assert (pool.strategy, pool.default_cooldown_s, pool.max_cooldown_s, pool.lease_ttl_s) == (
        "priority",
        5,
        60,
        30,
    )
    assert pool.accounts == (AccountSpec("acct-a", rpm_limit=1200, tpm_limit=100000),)
    assert pool.keys == (
        KeySpec("k1", "sk-aaaa-1111", qps_limit=2.0, rpm_limit=60, priority=1, account="acct-a"),
        KeySpec("k2", "sk-bbbb-2222", priority=2, enabled=False, max_concurrency=3),
    )


def test_api_keys_format_with_key_and_name() -> None:
    doc = {
        "api_keys": [{"name": "main", "key": "sk-main-0001"}, {"id": "spare", "key": "sk-spare-0002"}],
        "scheduler": {"key_cooldown_seconds": 15},
    }
    pool = key_pool_from_mapping(doc)
    assert [(k.key_id, k.api_key) for k in pool.keys] == [
        ("main", "sk-main-0001"),
        ("spare", "sk-spare-0002"),
    ]
    assert pool.default_cooldown_s == 15.0


def test_bare_list_format_and_generated_ids() -> None:
    pool = key_pool_from_mapping([{"api_key": "sk-one-00001"}, "sk-two-00002", {"key_id": "x", "api_key": "sk-3"}])
    assert [k.key_id for k in pool.keys] == ["key-1", "key-2", "x"]


def test_first_present_id_name_wins() -> None:
    pool = key_pool_from_mapping({"keys": [{"key_id": "a", "name": "b", "api_key": "sk-a-000001"}]})
    assert pool.keys[0].key_id == "a"


def test_keys_and_api_keys_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="both keys and api_keys"):
        key_pool_from_mapping({"keys": [], "api_keys": []})


def test_missing_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "keys:\n  - {key_id: k1, api_key: '${DASHSCOPE_KEY_009}'}\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"OTHER": SECRET}, api_keys=path)
    message = str(info.value)
    assert "DASHSCOPE_KEY_009" in message
    assert f"{path}:keys[0].api_key" in message
    assert SECRET not in message


def test_expansion_forms() -> None:
    environ = {"SET": "sk-set-000001", "EMPTY": ""}
    doc = {
        "keys": [
            {"key_id": "a", "api_key": "${SET}"},
            {"key_id": "b", "api_key": "${UNSET:-sk-default-01}"},
            {"key_id": "c", "api_key": "${EMPTY:-sk-fallback-1}"},
            {"key_id": "d", "api_key": "prefix-${SET}"},
        ]
    }
    keys = key_pool_from_mapping(doc, environ=environ).keys
    assert [k.api_key for k in keys] == [
        "sk-set-000001",
        "sk-default-01",
        "sk-fallback-1",
        "prefix-sk-set-000001",
    ]


def test_empty_key_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    doc = {"keys": [{"key_id": "gone", "api_key": "${EMPTY}"}, {"key_id": "kept", "api_key": "sk-kept-0001"}]}
    with caplog.at_level(logging.WARNING, logger="traffic.config"):
        keys = key_pool_from_mapping(doc, environ={"EMPTY": ""}).keys
    assert [k.key_id for k in keys] == ["kept"]
    assert "gone" in caplog.text


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (
            {"keys": [{"key_id": "a", "api_key": SECRET}, {"key_id": "a", "api_key": SECRET}]},
            "duplicate key id 'a'",
        ),
        ({"keys": [{"key_id": "a", "api_key": SECRET, "account": "ghost"}]}, "undeclared account 'ghost'"),
        ({"keys": [{"key_id": "a", "api_key": SECRET, "priority": 0}]}, "keys[0].priority: must be >= 1"),
        ({"keys": [{"key_id": "a", "api_key": SECRET, "qps": 3}]}, "keys[0].qps: unknown key"),
        ({"keys": [{"key_id": "a"}]}, "key a: no api_key"),
        ({"keys": [{"key_id": "a", "api_key": SECRET, "key": SECRET}]}, "both api_key and key"),
        ({"keys": [{"key_id": "a", "api_key": 12345678}]}, "must be a string"),
        ({"keys": [{"key_id": "bad id", "api_key": SECRET}]}, "keys[0].key_id"),
        ({"strategy": "fastest"}, ":strategy: invalid keys.strategy"),
        ({"stratgy": "priority"}, "unknown key (did you mean strategy?)"),
        ({"accounts": [{"rpm_limit": 5}]}, "accounts[0]: no id"),
        ({"accounts": [{"id": "a"}, {"account_id": "a"}]}, "duplicate account id 'a'"),
        ({"keys": {"a": SECRET}}, "expected a list"),
    ],
)
def test_bad_key_files(doc: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        key_pool_from_mapping(doc, "k.yaml")
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)
    assert "12345678" not in str(info.value)


def test_key_strategy_environment_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "strategy: priority\n")
    assert load_settings({}, api_keys=path).keys.strategy == "priority"
    assert load_settings({"TRAFFIC_KEY_STRATEGY": "round_robin"}, api_keys=path).keys.strategy == "round_robin"


# --------------------------------------------------------------------------- DASHSCOPE_API_KEY


def test_dashscope_api_key_becomes_a_single_default_key() -> None:
    keys = load_settings({"DASHSCOPE_API_KEY": SECRET}).keys.keys
    assert keys == (KeySpec("default", SECRET),)


def test_dashscope_api_key_is_unused_when_the_file_has_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "keys: [{key_id: k1, api_key: sk-file-00001}]\n")
    keys = load_settings({"DASHSCOPE_API_KEY": SECRET}, api_keys=path).keys.keys
    assert [k.key_id for k in keys] == ["k1"]


def test_dashscope_api_key_is_used_when_every_file_key_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "keys: [{key_id: k1, api_key: '${K1:-}'}]\n")
    keys = load_settings({"DASHSCOPE_API_KEY": SECRET}, api_keys=path).keys.keys
    assert [k.key_id for k in keys] == ["default"]


# --------------------------------------------------------------------------- secrets


def test_describe_settings_masks_secrets_and_is_json_safe() -> None:
    environ = {
        "DASHSCOPE_API_KEY": SECRET,
        "TRAFFIC_AUTH_TOKEN": "token-abcdef-123",
        "TRAFFIC_REDIS_URL": "redis://user:redispw99@db:6379/0",
    }
    described = describe_settings(load_settings(environ))
    text = json.dumps(described)
    assert SECRET not in text
    assert "token-abcdef-123" not in text
    assert "redispw99" not in text
    server = described["server"]
    keys = described["keys"]
    assert isinstance(server, dict) and isinstance(keys, dict)
    assert server["auth_token"] == "***"
    assert keys["keys"][0]["api_key"] == "default(…9f3a)"
    assert described["redis_url"] == "redis://user:***@db:6379/0"


def test_describe_settings_defaults() -> None:
    described = describe_settings(Settings())
    server = described["server"]
    assert isinstance(server, dict)
    assert server["auth_token"] is None
    assert json.loads(json.dumps(described)) == described


def test_secrets_absent_from_repr() -> None:
    settings = load_settings({"DASHSCOPE_API_KEY": SECRET, "TRAFFIC_AUTH_TOKEN": "token-abcdef-123"})
    assert SECRET not in repr(settings)
    assert "token-abcdef-123" not in repr(settings)


def test_secret_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"TRAFFIC_REDIS_URL": f"bogus://{SECRET}"})
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"server": {"auth_token": ["token-abcdef-123"]}})
    assert "token-abcdef-123" not in str(info.value)


def test_non_secret_values_are_echoed_in_errors() -> None:
    with pytest.raises(ConfigError, match="got 'abc'"):
        load_settings({"TRAFFIC_IMGSZ": "abc"})


def test_no_secret_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "k.yaml", "max_retry_per_key: 3\nkeys: [{key_id: k1, api_key: '${K1}'}]\n")
    with caplog.at_level(logging.DEBUG, logger="traffic.config"):
        load_settings({"K1": SECRET, "DASHSCOPE_API_KEY": SECRET, "ALGO_JWT_SECRET": SECRET}, api_keys=path)
    assert "max_retry_per_key" in caplog.text
    assert SECRET not in caplog.text
