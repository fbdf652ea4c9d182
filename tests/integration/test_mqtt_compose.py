"""The optional MQTT override (``docker-compose.mqtt.yml``) as docker-compose v1 merges it, and its broker
configuration (``deploy/mosquitto``) run by Debian's Mosquitto: logins required, the health-check listener
reads ``$SYS`` only."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from stack.harness import wait_until
from stack.mosquitto_server import find_binary
from stack.redis_server import free_port
from tests.integration.test_compose import BASE, BASE_SERVICES, ROOT, TOKEN_ENV, _command, _env, _mounts, _run_config

pytestmark = pytest.mark.integration

MQTT = (*BASE, "docker-compose.mqtt.yml")
MQTT_ENV = {**TOKEN_ENV, "MQTT_PASSWORD": "compose-test-mqtt-pass"}
PUBLISHERS = {"web", "worker-default", "worker-gpu"}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    proc = _run_config(MQTT, tmp_path_factory.mktemp("compose-mqtt"), MQTT_ENV)
    assert proc.returncode == 0, proc.stderr
    merged: dict[str, Any] = yaml.safe_load(proc.stdout)["services"]
    return merged


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    proc = _run_config(BASE, tmp_path_factory.mktemp("compose-base"), TOKEN_ENV)
    assert proc.returncode == 0, proc.stderr
    merged: dict[str, Any] = yaml.safe_load(proc.stdout)["services"]
    return merged


def test_the_override_adds_the_broker_and_wires_the_publishers(services: dict[str, Any], base: dict[str, Any]) -> None:
    assert set(services) == BASE_SERVICES | {"mosquitto"}
    url = f"mqtt://traffic:{MQTT_ENV['MQTT_PASSWORD']}@mosquitto:1883"
    for name, svc in services.items():
        env = _env(svc)
        if name in PUBLISHERS:
            assert env.pop("TRAFFIC_MQTT_URL") == url, name
            assert env.pop("TRAFFIC_MQTT_TOPIC_PREFIX") == "traffic" and env.pop("TRAFFIC_MQTT_QOS") == "1", name
            assert env.pop("TRAFFIC_MQTT_STATS") == "true", name
            assert env == _env(base[name]), f"{name} keeps the rest of its environment"
        elif name != "mosquitto":
            assert "TRAFFIC_MQTT_URL" not in env, name


def test_the_broker_takes_its_password_from_the_environment_only(services: dict[str, Any]) -> None:
    broker = services["mosquitto"]
    assert _env(broker) == {"MQTT_USER": "traffic", "MQTT_PASSWORD": MQTT_ENV["MQTT_PASSWORD"]}
    line = " ".join(_command(broker))
    assert MQTT_ENV["MQTT_PASSWORD"] not in line and "mosquitto_passwd -U" in line and "-b" not in line.split()
    assert "mosquitto_sub" in broker["healthcheck"]["test"] and "-P" not in broker["healthcheck"]["test"]
    mounts = dict((target, source) for source, target in _mounts(broker))
    assert mounts["/mosquitto/config/mosquitto.conf"] == str(ROOT / "deploy" / "mosquitto" / "mosquitto.conf")
    assert mounts["/mosquitto/config/healthcheck.acl"] == str(ROOT / "deploy" / "mosquitto" / "healthcheck.acl")
    (port,) = broker["ports"]
    assert str(port).startswith("127.0.0.1:1883:1883"), "published on the host's loopback by default"


def test_the_override_refuses_to_run_without_the_broker_password(tmp_path: Path) -> None:
    proc = _run_config(MQTT, tmp_path, TOKEN_ENV)
    assert proc.returncode != 0 and "set MQTT_PASSWORD" in proc.stderr


@pytest.fixture
def deployed_broker(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Debian's Mosquitto running ``deploy/mosquitto``'s files (paths and ports moved into ``tmp_path``)."""
    port, health = free_port(), free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "data").mkdir()
    config = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    config = config.replace("/mosquitto/", f"{tmp_path}/").replace("log_dest stdout", f"log_dest file {tmp_path}/log")
    config = config.replace("listener 1883\n", f"listener {port} 127.0.0.1\n").replace(
        "listener 1880 127.0.0.1", f"listener {health} 127.0.0.1"
    )
    (tmp_path / "config" / "mosquitto.conf").write_text(config + "user root\n")
    (tmp_path / "config" / "healthcheck.acl").write_text((ROOT / "deploy/mosquitto/healthcheck.acl").read_text())
    passwd = tmp_path / "data" / "passwd"
    passwd.write_text("traffic:deploy-pass\n")
    subprocess.run([find_binary("mosquitto_passwd"), "-U", str(passwd)], check=True, timeout=30)
    proc = subprocess.Popen([find_binary(), "-c", str(tmp_path / "config" / "mosquitto.conf")])
    try:
        wait_until(lambda: _accepts(port) and _accepts(health), 30, "the broker's listeners")
        yield port, health
    finally:
        proc.terminate()
        proc.wait(30)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _connect(port: int, user: str | None = None, password: str | None = None) -> tuple[paho.Client, Any]:
    """A client connecting to ``port``; its CONNACK reason code (or None) and messages gathered in a dict."""
    seen: dict[str, Any] = {"reason": None, "messages": []}
    lock = threading.Lock()
    client = paho.Client(CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        seen["reason"] = reason

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        with lock:
            seen["messages"].append(message.topic)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(lambda: seen["reason"] is not None, 30, "CONNACK")
    return client, seen


def test_the_deployed_broker_config_requires_a_login(deployed_broker: tuple[int, int]) -> None:
    port, health = deployed_broker
    anonymous, seen = _connect(port)
    assert seen["reason"].is_failure, "anonymous clients are refused on the clients' listener"
    anonymous.loop_stop()
    user, seen = _connect(port, "traffic", "deploy-pass")
    assert not seen["reason"].is_failure
    user.publish("traffic/cameras/c/stats", b"{}", qos=1, retain=True).wait_for_publish(30)

    probe, seen = _connect(health)
    assert not seen["reason"].is_failure
    probe.subscribe("traffic/#")  # first: a retained message it could read would come before $SYS's
    probe.subscribe("$SYS/broker/uptime")
    wait_until(lambda: "$SYS/broker/uptime" in seen["messages"], 30, "the health check's $SYS read")
    assert not [t for t in seen["messages"] if t.startswith("traffic/")], "the health listener reads $SYS only"
    for client in (user, probe):
        client.disconnect()
        client.loop_stop()
