"""Typed errors raised by the domain.

TrafficError
 ├── ConfigError                 settings that cannot be used (unknown key, bad value)
 ├── DetectorError               the detector cannot run
 │    └── WeightsUnavailable     weights missing and downloading is not allowed / impossible
 ├── ImageError                  bytes that are not a decodable image
 ├── TrackerStateError           a saved tracker state that cannot be restored
 ├── CameraError                 a camera id or URL that cannot be used (``code`` says why)
 └── ProviderError               the vision-model provider did not give a usable answer
      ├── RateLimited            429: slow down, ``retry_after`` seconds
      ├── KeyRejected            401/403, InvalidApiKey, Arrearage: the key is unusable
      ├── ProviderUnavailable    5xx, timeout, connection failure: try again later
      └── BadModelReply          a 2xx whose content is not a verdict
"""

from __future__ import annotations


class TrafficError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(TrafficError):
    """Settings that cannot be used; the message names the setting."""


class DetectorError(TrafficError):
    """The detector cannot be loaded or run."""


class WeightsUnavailable(DetectorError):
    """Model weights are missing and cannot (or may not) be fetched."""


class BackendUnavailable(DetectorError):
    """The configured inference backend cannot run here (its package is missing, or it needs a GPU)."""


class TrackerStateError(TrafficError):
    """A saved tracker state that cannot be restored (corrupt, or of another version or settings)."""


class ExportFailed(DetectorError):
    """Exporting the weights to an inference backend's format failed or timed out."""


class ImageError(TrafficError):
    """Bytes that cannot be decoded as an image."""


class CameraError(TrafficError):
    """A camera id or URL that cannot be used; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProviderError(TrafficError):
    """The vision-model provider did not give a usable answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ProviderError):
    """The provider asked us to slow down (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class KeyRejected(ProviderError):
    """The API key is invalid, forbidden or its account is in arrears."""


class ProviderUnavailable(ProviderError):
    """A server error, timeout or connection failure: the call may succeed later."""


class BadModelReply(ProviderError):
    """The provider answered, but not with a usable verdict."""

    def __init__(self, message: str, *, raw: str = "", status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.raw = raw
