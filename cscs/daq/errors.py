"""What can go wrong reading from the DAQ, each naming the image, the sensor and the cause.

The ``code`` is the wire's error code (``docs/daq-protocol.md``); ``retriable`` tells the
archiver whether reading again may succeed (a stall or a corrupt frame) or not (the image
is gone). No failure is ever turned into pixels.
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "ChecksumMismatchError",
    "DaqError",
    "DaqUnavailableError",
    "ImageEvictedError",
    "SensorMissingError",
    "StreamStalledError",
    "UnknownImageError",
    "UnknownSensorError",
    "error_for_code",
]


class DaqError(Exception):
    code = "error"
    retriable = False

    def __init__(self, image: str, sensor: str, cause: str, *, code: str | None = None) -> None:
        self.image = image
        self.sensor = sensor
        self.cause = cause
        if code is not None:
            self.code = code
        where = f"image {image or '?'}" + (f" sensor {sensor}" if sensor else "")
        super().__init__(f"{where}: {cause}")


class UnknownImageError(DaqError):
    code = "unknown-image"


class UnknownSensorError(DaqError):
    code = "unknown-sensor"


class ImageEvictedError(DaqError):
    code = "evicted"


class SensorMissingError(DaqError):
    code = "missing-sensor"


class BadRequestError(DaqError):
    code = "bad-request"


class StreamStalledError(DaqError):
    """The stream stopped before its last frame: a dropped connection or a dead server."""

    code = "stalled"
    retriable = True


class ChecksumMismatchError(DaqError):
    code = "checksum"
    retriable = True


class DaqUnavailableError(DaqError):
    """No answer at all within the timeout."""

    code = "unavailable"
    retriable = True


_BY_CODE: dict[str, type[DaqError]] = {
    cls.code: cls
    for cls in (
        UnknownImageError,
        UnknownSensorError,
        ImageEvictedError,
        SensorMissingError,
        BadRequestError,
    )
}


def error_for_code(code: str, image: str, sensor: str, cause: str) -> DaqError:
    """The exception a client raises for an error reply."""
    cls = _BY_CODE.get(code)
    if cls is None:
        error = DaqError(image, sensor, cause, code=code)
        error.retriable = code in {"busy", "not-ready"}
        return error
    return cls(image, sensor, cause)
