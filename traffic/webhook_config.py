"""Webhook subscriptions from a YAML document, validated (``TRAFFIC_WEBHOOKS_FILE``; see ``docs/WEBHOOKS.md``).

Pure: :func:`subscriptions_from_mapping` checks an already-loaded (and ``${VAR}``-expanded) document;
reading the file is ``traffic.config``'s job. The document is a list of subscriptions, or a mapping with
a ``subscriptions:`` list::

    subscriptions:
      - name: ops-pager
        url: https://hooks.example.com/traffic
        secret: ${OPS_PAGER_WEBHOOK_SECRET}
        events: [incident]            # default: incident, incident_updated
        min_level: high               # default: low
        cameras: [cam-1, 7]           # default: every camera
        kinds: [model, near_miss]     # default: every kind

Every error is a :class:`~traffic.errors.ConfigError` naming the file, the entry and its name, e.g.
``webhooks.yaml:subscriptions[1] (ops-pager).min_level: must be one of low, medium, high (got 'urgent')``.
Neither a secret nor a URL is ever echoed (a URL's path or query may hold a token).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from traffic.cameras import normalise_camera_id
from traffic.errors import CameraError, ConfigError
from traffic.incidents import IncidentKind
from traffic.settings import WebhookSubscription
from traffic.webhooks import EVENTS, LEVELS, MIN_SECRET_LENGTH

TOP_KEYS = ("subscriptions",)
REQUIRED_KEYS = ("name", "url", "secret")
OPTIONAL_KEYS = ("events", "min_level", "cameras", "kinds")
KINDS = tuple(kind.value for kind in IncidentKind)
_NAME = re.compile(r"[\w.:@-]{1,64}")


def subscriptions_from_mapping(doc: object, source: str) -> tuple[WebhookSubscription, ...]:
    """The subscriptions of a loaded webhooks document (``None``, an empty file, gives none).

    ``source`` names the document in errors (the file's path). Raises ``ConfigError``.
    """
    if isinstance(doc, list):
        entries: object = doc
    elif doc is None:
        entries = None
    elif isinstance(doc, Mapping):
        unknown = [str(k) for k in doc if k not in TOP_KEYS]
        if unknown:
            raise ConfigError(f"{source}:{unknown[0]}: unknown key{_suggest(unknown[0], TOP_KEYS)}")
        entries = doc.get("subscriptions")
    else:
        raise ConfigError(f"{source}: expected a list of subscriptions, or a mapping with a subscriptions: list")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"{source}:subscriptions: expected a list of subscriptions")
    out: list[WebhookSubscription] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        subscription = _subscription(entry, f"{source}:subscriptions[{i}]")
        if subscription.name in seen:
            raise ConfigError(
                f"{source}:subscriptions[{i}] ({subscription.name}): duplicate name {subscription.name!r} "
                f"(also at {seen[subscription.name]})"
            )
        seen[subscription.name] = f"subscriptions[{i}]"
        out.append(subscription)
    return tuple(out)


def _subscription(entry: object, at: str) -> WebhookSubscription:
    """One entry."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{at}: expected a mapping with name, url and secret")
    item = {str(key): value for key, value in entry.items()}
    name = _name(item.get("name"), at)
    at = f"{at} ({name})"
    for key in item:
        if key not in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
            raise ConfigError(f"{at}.{key}: unknown key{_suggest(key, (*REQUIRED_KEYS, *OPTIONAL_KEYS))}")
    events = _subset(item.get("events"), EVENTS, f"{at}.events") or EVENTS
    kinds = _subset(item.get("kinds"), KINDS, f"{at}.kinds")
    return WebhookSubscription(
        name=name,
        url=_url(item.get("url"), f"{at}.url"),
        secret=_secret(item.get("secret"), f"{at}.secret"),
        events=events,
        min_level=_level(item.get("min_level"), f"{at}.min_level"),
        cameras=_cameras(item.get("cameras"), f"{at}.cameras"),
        kinds=kinds,
    )


def _name(raw: object, at: str) -> str:
    """The subscription's name: 1-64 letters, digits or ``_ . : @ -``."""
    if raw is None:
        raise ConfigError(f"{at}.name: missing: every subscription needs a name")
    value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(value, str) or not _NAME.fullmatch(value.strip()):
        raise ConfigError(f"{at}.name: must be 1-64 letters, digits or _ . : @ -{_got(raw)}")
    return value.strip()


def _url(raw: object, at: str) -> str:
    """An absolute ``http(s)://`` URL with a host and no fragment (never echoed)."""
    if raw is None:
        raise ConfigError(f"{at}: missing: the URL the events are POSTed to")
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{at}: must be an http or https URL")
    value = raw.strip()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{at}: not a valid URL (check the host and port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{at}: must be an http or https URL with a host")
    if parts.fragment or value.endswith("#"):
        raise ConfigError(f"{at}: must not have a #fragment")
    if port == 0 or any(ch.isspace() for ch in value):
        raise ConfigError(f"{at}: not a valid URL (check the host and port)")
    return value


def _secret(raw: object, at: str) -> str:
    """The signing secret: a string of at least ``MIN_SECRET_LENGTH`` characters (never echoed)."""
    if raw is None:
        raise ConfigError(f"{at}: missing: every subscription needs a signing secret (e.g. secret: ${{MY_SECRET}})")
    if not isinstance(raw, str):
        raise ConfigError(f"{at}: must be a string (quote it)")
    value = raw.strip()
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{at}: must be at least {MIN_SECRET_LENGTH} characters (e.g. the output of openssl rand -hex 32)"
        )
    return value


def _level(raw: object, at: str) -> str:
    """``low``, ``medium`` or ``high`` (default ``low``)."""
    if raw is None:
        return LEVELS[0]
    value = raw.strip().lower() if isinstance(raw, str) else None
    if value not in LEVELS:
        raise ConfigError(f"{at}: must be one of {', '.join(LEVELS)}{_got(raw)}")
    return value


def _items(raw: object, at: str) -> list[object]:
    """A YAML list, or a comma-separated string."""
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list):
        raise ConfigError(f"{at}: expected a list{_got(raw)}")
    return list(raw)


def _subset(raw: object, choices: tuple[str, ...], at: str) -> tuple[str, ...]:
    """Names from ``choices``, each once; ``None`` gives ``()``."""
    if raw is None:
        return ()
    out: list[str] = []
    for item in _items(raw, at):
        value = item.strip() if isinstance(item, str) else item
        if value not in choices:
            raise ConfigError(f"{at}: {value!r} is not one of {', '.join(choices)}")
        if value in out:
            raise ConfigError(f"{at}: {value!r} is given twice")
        out.append(str(value))
    if not out:
        raise ConfigError(f"{at}: must name at least one of {', '.join(choices)} (or be left out)")
    return tuple(out)


def _cameras(raw: object, at: str) -> tuple[str, ...]:
    """Camera ids as ``normalise_camera_id`` keys them; ``None`` gives ``()`` (every camera)."""
    if raw is None:
        return ()
    out: list[str] = []
    for item in _items(raw, at):
        try:
            camera_id = normalise_camera_id(item)[0]
        except CameraError as exc:
            raise ConfigError(f"{at}: invalid camera id{_got(item)}: {exc}") from None
        if camera_id in out:
            raise ConfigError(f"{at}: camera {camera_id} is given twice")
        out.append(camera_id)
    if not out:
        raise ConfigError(f"{at}: must name at least one camera (or be left out for every camera)")
    return tuple(out)


def _got(raw: object) -> str:
    """`` (got 'x')``, shortened."""
    text = repr(raw)
    return f" (got {text[:60]}{'…' if len(text) > 60 else ''})"


def _suggest(name: str, known: tuple[str, ...]) -> str:
    """`` (did you mean X?)`` for the closest known name, if any is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
