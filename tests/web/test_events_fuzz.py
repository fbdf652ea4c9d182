"""Generated bad input over Socket.IO: every malformed event is answered clearly, the connection survives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import offline_dns
from traffic.config import load_settings
from web import create_app, socketio
from web.realtime.protocol import CLIENT_EVENTS

pytestmark = pytest.mark.slow

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
camera_ids = st.one_of(st.integers(-5, 10**20), st.text(max_size=80), st.none(), st.booleans(), st.floats())
field_values = st.one_of(json_values, camera_ids, st.text(alphabet="rtsphf:/.@ ", max_size=60))
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={"cameraId": camera_ids, "rtspUrl": field_values, "cameraIds": json_values, "name": field_values},
    ),
)
# check_camera opens the URL it is given: it is tested with loopback URLs only (test_events.py), never
# with generated ones, so no generated host name is ever looked up.
PROBE_FREE = tuple(e for e in CLIENT_EVENTS if e != "check_camera")
events = st.one_of(st.sampled_from(PROBE_FREE), st.text(min_size=1, max_size=30).filter(lambda e: e != "check_camera"))


@pytest.fixture(scope="module")
def client(redis_server: Any) -> Any:
    app = create_app(load_settings({"REDIS_URL": redis_server.url}), message_queue=False, resolver=offline_dns.resolve)
    return socketio.test_client(app)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events, data=payloads)
def test_any_event_gets_an_answer_never_a_crash(client: Any, event: str, data: Any) -> None:
    if event in ("connect", "disconnect", "message", "json"):
        return  # reserved by Socket.IO itself
    client.get_received()
    ack = client.emit(event, data, callback=True)
    errors = [e["args"][0] for e in client.get_received() if e["name"] == "error"]
    assert ack or errors, f"{event!r} got neither an acknowledgement nor an error"
    for error in errors:
        assert error["code"] != "internal_error", (event, data, error)
        assert isinstance(error["message"], str) and error["message"]
    assert client.is_connected()
