"""The MQTT adapter's pure parts: connection parameters read from the URL (the password never shown), the
topic layout, and camera ids made safe as one topic level."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from infra import outbox
from infra.mqtt_client import MqttParams, MqttPublisher, MqttTopics, parse_url, topic_level
from traffic.errors import ConfigError
from traffic.settings import MqttSettings
from workers.mqtt_output import incident_message

SECRET = "s3cr@t/pa:ss"
QUOTED = "s3cr%40t%2Fpa%3Ass"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.lan", MqttParams("broker.lan", 1883, tls=False)),
        ("mqtts://broker.lan", MqttParams("broker.lan", 8883, tls=True)),
        ("mqtt://10.0.0.5:1884/", MqttParams("10.0.0.5", 1884, tls=False)),
        ("mqtts://[::1]:9883", MqttParams("::1", 9883, tls=True)),
        ("mqtt://traffic@broker", MqttParams("broker", 1883, tls=False, username="traffic")),
        (f"mqtts://ha%20user:{QUOTED}@b:8884", MqttParams("b", 8884, tls=True, username="ha user", password=SECRET)),
        ("mqtt://u:@broker", MqttParams("broker", 1883, tls=False, username="u", password="")),
    ],
)
def test_a_url_gives_the_connection_parameters(url: str, expected: MqttParams) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        f"http://u:{QUOTED}@broker",
        f"mqtt://u:{QUOTED}@",
        f"mqtt://u:{QUOTED}@broker:notaport",
        f"mqtt://u:{QUOTED}@broker:70000",
        f"mqtt://u:{QUOTED}@broker/traffic",
        f"mqtt://u:{QUOTED}@broker?x=1",
    ],
)
def test_an_unusable_url_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_url(url)
    assert "s3cr" not in str(refused.value) and "broker" not in str(refused.value)


def test_the_password_is_never_shown() -> None:
    params = parse_url(f"mqtts://traffic:{QUOTED}@broker.lan:8884")
    assert params.password == SECRET
    publisher = MqttPublisher(params, client_id="traffic-host-1", status_topic="traffic/status")
    for text in (repr(params), str(params), params.target, repr(publisher)):
        assert "s3cr" not in text and "pa:ss" not in text, text
    assert params.target == "mqtts://broker.lan:8884"
    assert MqttParams("::1", 1883, tls=False).target == "mqtt://[::1]:1883"


def test_a_publisher_does_not_connect_until_used() -> None:
    publisher = MqttPublisher(parse_url("mqtt://192.0.2.1"), client_id="idle", status_topic="traffic/status")
    assert not publisher.connected
    publisher.close()  # nothing was started: nothing to close


def test_topics() -> None:
    topics = MqttTopics("site-a/traffic")
    assert topics.status == "site-a/traffic/status"
    assert topics.incidents("cam-1") == "site-a/traffic/cameras/cam-1/incidents"
    assert topics.stats("cam-1") == "site-a/traffic/cameras/cam-1/stats"


@pytest.mark.parametrize(
    ("camera_id", "level"),
    [
        ("cam-1", "cam-1"),
        ("north.gate:2_a", "north.gate:2_a"),
        ("路口 1", "路口 1"),
        ("a/b", "a%2Fb"),
        ("+", "%2B"),
        ("#", "%23"),
        ("50%", "50%25"),
        ("x\x00y\n", "x%00y%0A"),
        ("$SYS", "$SYS"),  # only a topic's first level is special with $, and this is never the first
    ],
)
def test_a_camera_id_becomes_one_safe_topic_level(camera_id: str, level: str) -> None:
    assert topic_level(camera_id) == level
    assert unquote(level) == camera_id
    assert not set(level) & {"/", "+", "#", "\x00"}


def test_an_incident_event_goes_to_its_cameras_topic() -> None:
    event = outbox.OutboxEvent("incident_updated", {"incidentId": 7, "cameraId": "gate/2", "level": "high"}, 12.5)
    message = incident_message(MqttTopics("traffic"), MqttSettings(url="mqtt://b", qos=2), event)
    assert message is not None
    assert message.topic == "traffic/cameras/gate%2F2/incidents"
    assert (message.qos, message.retain) == (2, False)
    assert (
        message.payload
        == b'{"event":"incident_updated","incident":{"incidentId":7,"cameraId":"gate/2","level":"high"},"at":12.5}'
    )


def test_an_incident_without_a_camera_cannot_be_routed() -> None:
    event = outbox.OutboxEvent("incident", {"incidentId": 7}, 1.0)
    assert incident_message(MqttTopics("traffic"), MqttSettings(url="mqtt://b"), event) is None
