"""Webhook subscriptions from ``TRAFFIC_WEBHOOKS_FILE`` and the ``TRAFFIC_WEBHOOK_*`` knobs: parsing, the
errors an operator sees, and secrets that never show (errors, repr, ``describe_settings``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traffic.config import describe_settings, known_env_vars, load_settings
from traffic.errors import ConfigError
from traffic.settings import Settings, WebhookSettings, WebhookSubscription

SECRET = "whsec-unit-0123456789abcdef"
TOKEN = "tok-3f9a1c77e2"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "webhooks.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    return load_settings({"HOOK_SECRET": SECRET, **env}, webhooks=write(tmp_path, text))


def config_error(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **env)
    return str(caught.value)


FULL = """
subscriptions:
  - name: ops-pager
    url: https://hooks.example.com/traffic?token=TOKEN
    secret: ${HOOK_SECRET}
    events: [incident]
    min_level: HIGH
    cameras: [cam-1, 7]
    kinds: [model, near_miss]
  - name: archive
    url: http://archive.example.org:8080/in
    secret: ${HOOK_SECRET}
""".replace("TOKEN", TOKEN)


def test_a_webhooks_file_gives_subscriptions_with_defaults_and_expanded_secrets(tmp_path: Path) -> None:
    settings = load(tmp_path, FULL)
    assert settings.webhooks.subscriptions == (
        WebhookSubscription(
            "ops-pager",
            f"https://hooks.example.com/traffic?token={TOKEN}",
            SECRET,
            events=("incident",),
            min_level="high",
            cameras=("cam-1", "7"),
            kinds=("model", "near_miss"),
        ),
        WebhookSubscription("archive", "http://archive.example.org:8080/in", SECRET),
    )
    assert settings.webhooks.subscription("archive") is settings.webhooks.subscriptions[1]
    assert settings.webhooks.subscription("nope") is None


def test_a_bare_list_is_a_webhooks_file_too(tmp_path: Path) -> None:
    text = "- {name: a, url: 'https://hooks.example.com/a', secret: '${HOOK_SECRET}'}\n"
    assert [s.name for s in load(tmp_path, text).webhooks.subscriptions] == ["a"]


def test_the_file_is_found_through_the_environment_and_may_be_empty(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    env = {"TRAFFIC_WEBHOOKS_FILE": str(path), "HOOK_SECRET": SECRET}
    assert len(load_settings(env).webhooks.subscriptions) == 2
    path.write_text("", encoding="utf-8")
    assert load_settings(env).webhooks.subscriptions == ()
    assert "TRAFFIC_WEBHOOKS_FILE" in known_env_vars()


def test_the_delivery_knobs_come_from_the_environment() -> None:
    env = {
        "TRAFFIC_WEBHOOK_TIMEOUT_S": "2.5",
        "TRAFFIC_WEBHOOK_MAX_ATTEMPTS": "4",
        "TRAFFIC_WEBHOOK_BACKOFF_S": "0.5",
        "TRAFFIC_WEBHOOK_BACKOFF_MAX_S": "8",
        "TRAFFIC_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1, receiver.lan, 10.20.0.0/16",
    }
    assert load_settings(env).webhooks == WebhookSettings(
        timeout_s=2.5,
        max_attempts=4,
        backoff_s=0.5,
        backoff_max_s=8.0,
        allowed_hosts=("127.0.0.1", "receiver.lan", "10.20.0.0/16"),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAFFIC_WEBHOOK_TIMEOUT_S": "0"}, "TRAFFIC_WEBHOOK_TIMEOUT_S: invalid webhooks.timeout_s: must be > 0"),
        (
            {"TRAFFIC_WEBHOOK_MAX_ATTEMPTS": "0"},
            "TRAFFIC_WEBHOOK_MAX_ATTEMPTS: invalid webhooks.max_attempts: must be >= 1",
        ),
        (
            {"TRAFFIC_WEBHOOK_ALLOWED_HOSTS": "http://x/"},
            "TRAFFIC_WEBHOOK_ALLOWED_HOSTS: invalid webhooks.allowed_hosts",
        ),
        (
            {"TRAFFIC_WEBHOOK_BACKOFF_S": "60", "TRAFFIC_WEBHOOK_BACKOFF_MAX_S": "30"},
            "webhooks.backoff_max_s (30 from TRAFFIC_WEBHOOK_BACKOFF_MAX_S) is below webhooks.backoff_s "
            "(60 from TRAFFIC_WEBHOOK_BACKOFF_S)",
        ),
    ],
)
def test_bad_delivery_knobs_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert message in str(caught.value)


def entry(**fields: str) -> str:
    """A one-subscription file; ``field=""`` leaves that field out."""
    base = {"name": "hook-1", "url": "https://hooks.example.com/in", "secret": "${HOOK_SECRET}"}
    lines = [f"    {k}: {v}" for k, v in (base | fields).items() if v != ""]
    return "subscriptions:\n  - " + "\n".join(lines).lstrip()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://hooks.example.com/in"}, "subscriptions[0] (hook-1).url: must be an http or https URL"),
        ({"url": "https:///no-host"}, "subscriptions[0] (hook-1).url: must be an http or https URL with a host"),
        ({"url": "https://hooks.example.com:99999/in"}, "subscriptions[0] (hook-1).url: not a valid URL"),
        ({"url": "'https://hooks.example.com/in#frag'"}, "subscriptions[0] (hook-1).url: must not have a #fragment"),
        ({"url": ""}, "subscriptions[0] (hook-1).url: missing"),
        ({"secret": ""}, "subscriptions[0] (hook-1).secret: missing"),
        ({"secret": "short"}, "subscriptions[0] (hook-1).secret: must be at least 16 characters"),
        ({"secret": "12345678901234567890"}, "subscriptions[0] (hook-1).secret: must be a string (quote it)"),
        ({"name": ""}, "subscriptions[0].name: missing"),
        ({"name": "'has space'"}, "subscriptions[0].name: must be 1-64 letters"),
        ({"events": "[incident, incident_deleted]"}, "(hook-1).events: 'incident_deleted' is not one of incident"),
        ({"events": "[]"}, "(hook-1).events: must name at least one of incident, incident_updated"),
        ({"events": "[incident, incident]"}, "(hook-1).events: 'incident' is given twice"),
        ({"min_level": "urgent"}, "(hook-1).min_level: must be one of low, medium, high (got 'urgent')"),
        ({"min_level": "none"}, "(hook-1).min_level: must be one of low, medium, high"),
        ({"kinds": "[crash]"}, "(hook-1).kinds: 'crash' is not one of model, near_miss, wrong_way"),
        ({"cameras": "['bad id!']"}, "(hook-1).cameras: invalid camera id"),
        ({"cameras": "[7, '7']"}, "(hook-1).cameras: camera 7 is given twice"),
        ({"min_levle": "high"}, "(hook-1).min_levle: unknown key (did you mean min_level?)"),
    ],
)
def test_a_bad_entry_is_named_by_file_index_and_name(tmp_path: Path, fields: dict[str, str], message: str) -> None:
    error = config_error(tmp_path, entry(**fields))
    assert error.startswith(str(tmp_path / "webhooks.yaml") + ":")
    assert message in error


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    text = FULL + "  - {name: ops-pager, url: 'https://other.example.com/', secret: '${HOOK_SECRET}'}\n"
    error = config_error(tmp_path, text)
    assert "subscriptions[2] (ops-pager): duplicate name 'ops-pager' (also at subscriptions[0])" in error


def test_an_unset_secret_variable_is_named_without_a_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, webhooks=write(tmp_path, entry(secret="${MISSING_HOOK_SECRET}")))
    assert "subscriptions[0].secret: environment variable MISSING_HOOK_SECRET is not set" in str(caught.value)


def test_unknown_top_level_keys_and_shapes_are_refused(tmp_path: Path) -> None:
    assert "subscripions: unknown key (did you mean subscriptions?)" in config_error(tmp_path, "subscripions: []\n")
    assert "expected a list of subscriptions" in config_error(tmp_path, "42\n")
    assert "subscriptions: expected a list of subscriptions" in config_error(tmp_path, "subscriptions: {a: 1}\n")


@pytest.mark.parametrize(
    ("host", "rule"),
    [("10.0.0.5", "private"), ("169.254.169.254", "link-local"), ("127.0.0.1:9000", "loopback"), ("[::1]", "loopback")],
)
def test_a_literal_target_the_url_policy_denies_is_refused_at_load(tmp_path: Path, host: str, rule: str) -> None:
    error = config_error(tmp_path, entry(url=f"http://{host}/hook?token={TOKEN}"))
    assert f"subscriptions[0] (hook-1).url: the webhook target's host is a {rule} address" in error
    assert "TRAFFIC_WEBHOOK_ALLOWED_HOSTS" in error
    assert TOKEN not in error


def test_the_allowed_hosts_let_a_literal_private_target_through(tmp_path: Path) -> None:
    text = entry(url="http://127.0.0.1:9000/hook")
    settings = load(tmp_path, text, TRAFFIC_WEBHOOK_ALLOWED_HOSTS="127.0.0.0/8")
    assert settings.webhooks.subscriptions[0].url == "http://127.0.0.1:9000/hook"
    # The cameras' list does not open it: webhooks have their own.
    assert "loopback" in config_error(tmp_path, text, TRAFFIC_CAMERA_ALLOWED_HOSTS="127.0.0.1")


def test_secrets_and_url_tokens_never_show_in_errors(tmp_path: Path) -> None:
    bad_url = f"ftp://user:pw-{TOKEN}@hooks.example.com/in?token={TOKEN}"
    for text in (entry(url=bad_url), entry(secret=f"'{TOKEN}'"), entry(secret="${HOOK_SECRET}", bogus="1")):
        error = config_error(tmp_path, text)
        assert TOKEN not in error and SECRET not in error


def test_secrets_and_url_tokens_never_show_in_repr_or_describe_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, FULL)
    described = json.dumps(describe_settings(settings))
    assert SECRET not in described and TOKEN not in described
    assert SECRET not in repr(settings) and TOKEN not in repr(settings)
    first = describe_settings(settings)["webhooks"]["subscriptions"][0]  # type: ignore[index]
    assert first["url"] == "https://hooks.example.com/***"
    assert first["secret"] == "***"
    assert first["name"] == "ops-pager" and first["min_level"] == "high"
