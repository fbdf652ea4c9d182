"""The one adapter around paho-mqtt: a publisher that connects lazily (credentials from the URL, TLS for
``mqtts``), keeps its connection in a background thread with back-off, announces itself on a retained status
topic (``online``, and ``offline`` as its last will), and publishes with or without waiting for the broker's
acknowledgement. Also the topic layout of the MQTT output (``docs/MQTT.md``).

Nothing here logs or raises the URL, the user's password or a payload: only ``host:port``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from traffic.errors import ConfigError

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
KEEPALIVE_S = 30
"""A publisher that hangs (but keeps its socket) is declared dead by the broker after 1.5 × this."""
CONNECT_TIMEOUT_S = 5.0
MIN_BACKOFF_S = 1
MAX_BACKOFF_S = 30
"""Reconnection attempts wait 1, 2, 4 … s, at most this long."""
_ESCAPED = frozenset("%/+#") | {chr(c) for c in range(0x20)} | {"\x7f"}
"""Characters a topic level must not carry as-is: the escape itself, the level separator, the wildcards
and control characters (U+0000 is forbidden by MQTT, the rest discouraged)."""


@dataclass(frozen=True)
class MqttParams:
    """Where and how to connect, read from an ``mqtt://`` or ``mqtts://`` URL."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        """``mqtt(s)://host:port``, without credentials: what logs and errors show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_url(url: str) -> MqttParams:
    """Connection parameters of ``mqtt://[user[:password]@]host[:port]`` (``mqtts://``: TLS, port 8883).

    User and password are percent-decoded. A ``ConfigError`` never quotes the URL (it may hold a password).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("the MQTT URL is malformed (a bad port or host)") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError("the MQTT URL must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError("the MQTT URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("the MQTT URL takes no path or query (topics come from the topic prefix)")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return MqttParams(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        tls=parts.scheme == "mqtts",
        username=username or None,
        password=password,
    )


def topic_level(text: str) -> str:
    """``text`` as one topic level: ``%``, ``/``, ``+``, ``#`` and control characters percent-encoded (as
    UTF-8 bytes), everything else as-is; ``urllib.parse.unquote`` gives ``text`` back."""
    return "".join("".join(f"%{b:02X}" for b in c.encode()) if c in _ESCAPED else c for c in text)


@dataclass(frozen=True)
class MqttTopics:
    """The MQTT output's topics under ``prefix`` (validated by the settings: no wildcards)."""

    prefix: str

    @property
    def status(self) -> str:
        """Retained ``online``/``offline``: whether a publisher of this system is connected (the last will)."""
        return f"{self.prefix}/status"

    def incidents(self, camera_id: str) -> str:
        """The camera's incident events."""
        return f"{self.prefix}/cameras/{topic_level(camera_id)}/incidents"

    def stats(self, camera_id: str) -> str:
        """The camera's latest traffic statistics (retained)."""
        return f"{self.prefix}/cameras/{topic_level(camera_id)}/stats"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class MqttPublisher:
    """A connection to one broker, opened on first use in the process that uses it (never at import or
    before a fork) and kept open by paho's network thread, reconnecting with back-off.

    On every connection it publishes ``online`` (retained) on ``status_topic``, whose last will is ``offline``
    (retained): the broker sends it when this process dies or loses its connection. It also watches that
    topic, so when one of several publishers dies the others put ``online`` back at once.
    Thread-safe; a process holds one.
    """

    def __init__(
        self, params: MqttParams, *, client_id: str, status_topic: str, max_backoff_s: int = MAX_BACKOFF_S
    ) -> None:
        self.params = params
        self.client_id = client_id
        self.status_topic = status_topic
        self._max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._settled = threading.Event()
        """Set once the first connection attempt ended, either way: only that first wait is worth making."""
        self._troubled = False
        """Whether a problem has been logged since the last good news (one warning per outage)."""
        self._announced = False

    def __repr__(self) -> str:
        return f"MqttPublisher({self.params.target}, client_id={self.client_id!r})"

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection (and answered the status subscription), and it has
        not been lost since."""
        return self._connected.is_set()

    def start(self) -> None:
        """Open the connection in the background (no wait); later calls do nothing."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
                self._client.connect_async(self.params.host, self.params.port, keepalive=KEEPALIVE_S)
                self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Start if needed; whether connected, waiting up to ``timeout`` only while the first attempt runs."""
        self.start()
        self._settled.wait(timeout)
        return self.connected

    def publish_nowait(self, message: Outgoing) -> bool:
        """Hand ``message`` to the network thread without waiting; False (nothing queued) when not connected."""
        self.start()
        client = self._client
        if client is None or not self.connected:
            return False
        info = client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_in_order(self, messages: Sequence[Outgoing], timeout: float) -> int:
        """Publish ``messages`` in order; how many of the first were acknowledged by the broker (QoS 1 and 2)
        or handed to the connection (QoS 0) within ``timeout`` s. Nothing is sent when not connected.

        MQTT keeps a client's messages in order, so the acknowledged ones are a prefix. A message left
        unacknowledged may still reach the broker later (paho sends it again after a reconnection), so a
        caller that publishes it again delivers it at least once, not exactly once.
        """
        self.start()
        client = self._client
        if client is None or not self.connected or not messages:
            return 0
        infos = []
        for message in messages:
            info = client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            infos.append((message.qos, info))
        deadline = time.monotonic() + timeout
        done = 0
        for qos, info in infos:
            if qos > 0 and not _acknowledged(info, deadline):
                break
            done += 1
        if done < len(messages):
            reason = "the connection was lost" if not self.connected else f"no acknowledgement within {timeout:g} s"
            self._trouble("MQTT broker %s: %s; %d message(s) wait", self.params.target, reason, len(messages) - done)
        else:
            self._good_news("MQTT broker %s acknowledges again", self.params.target)
        return done

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` and disconnect (a process that just exits leaves that to its last will)."""
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        was_connected = self._connected.is_set()
        self._connected.clear()  # first: this publisher must not answer its own ``offline``
        if was_connected:
            info = client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            _acknowledged(info, time.monotonic() + timeout)
        client.disconnect()
        client.loop_stop()

    def _new_client(self) -> paho.Client:
        """A paho client with credentials, TLS, last will, back-off and callbacks (not connected yet)."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if self.params.username is not None:
            client.username_pw_set(self.params.username, self.params.password)
        if self.params.tls:
            # The system's CAs (or SSL_CERT_FILE), the host name checked, TLS 1.2 or later.
            client.tls_set_context(ssl.create_default_context())
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(MIN_BACKOFF_S, self._max_backoff_s)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        """The broker answered CONNECT: announce ``online`` and watch the status topic (ready once that is
        answered), or log the refusal."""
        if reason.is_failure:
            self._trouble("MQTT broker %s refused the connection: %s; retrying", self.params.target, reason)
            self._settled.set()
            return
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        client.subscribe(self.status_topic, qos=1)

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int, _reasons: Any, _props: Any) -> None:
        """The broker answered the status subscription (granted or not, by its ACL): ready to publish."""
        self._connected.set()
        self._settled.set()
        self._good_news("MQTT broker %s connected", self.params.target)

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        """No connection could be made (refused, unreachable, TLS): paho tries again after its back-off."""
        self._trouble(
            "MQTT broker %s unreachable; retrying (back-off up to %d s)", self.params.target, self._max_backoff_s
        )
        self._settled.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        """The connection ended: paho reconnects (unless ``close`` asked for it)."""
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._settled.set()
        if was_connected:
            self._trouble("MQTT connection to %s lost (%s); reconnecting", self.params.target, reason)

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        """Another publisher's last will said ``offline`` while this one is connected: ``online`` again."""
        if message.topic == self.status_topic and message.payload == OFFLINE and self._connected.is_set():
            client.publish(self.status_topic, ONLINE, qos=1, retain=True)

    def _trouble(self, msg: str, *args: object) -> None:
        """Log a problem once per outage (a warning), then only at debug level until things are good again."""
        level = logging.DEBUG if self._troubled else logging.WARNING
        self._troubled = True
        log.log(level, msg, *args)

    def _good_news(self, msg: str, *args: object) -> None:
        """Log the first connection, and a recovery after trouble, at info level."""
        if self._troubled or not self._announced:
            log.info(msg, *args)
        self._troubled = False
        self._announced = True


def _acknowledged(info: paho.MQTTMessageInfo, deadline: float) -> bool:
    """Whether the broker acknowledged the message before ``deadline`` (monotonic)."""
    try:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        return info.is_published()
    except (RuntimeError, ValueError):  # paho: not sent (no connection, queue full)
        return False
