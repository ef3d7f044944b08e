"""The DAQ's buffer of recent images: bounded by bytes, oldest evicted first.

The real DAQ keeps recent images in flash for a while; that window is what makes
catch-up archiving possible. This store is the same idea in memory. It does no I/O, so
its rules (what is evicted, when, and what a reader is told) are tested directly.

Readers receive references to the stored arrays, never copies; an image evicted while
being streamed stays alive only until its reader lets go.

Thread-safe: the camera fills the store on its event loop while the DAQ server reads it
from its own thread (ADR 0011). One lock covers every compound operation; what leaves
the store is immutable (:class:`SensorData`, read-only arrays) or a fresh copy
(:meth:`DaqStore.describe`), so nobody reads it half-changed. ``on_evict`` is called
after the lock is released, on the thread whose call evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cscs.camera.datasums import segment_datasums
from cscs.camera.geometry import SEGMENT_BYTES, SEGMENTS
from cscs.daq.errors import (
    DaqError,
    ImageEvictedError,
    SensorMissingError,
    UnknownImageError,
    UnknownSensorError,
)

__all__ = ["DaqStore", "SensorData", "StoredImage"]

Pixels = npt.NDArray[np.int32]
_REMEMBER_EVICTED = 10_000


@dataclass(frozen=True)
class SensorData:
    """One detector's 16 raw segments and their data sums (each segment's FITS
    ``DATASUM``, the DAQ protocol's check: ADR 0041), computed once when stored."""

    segments: tuple[Pixels, ...]
    datasums: tuple[int, ...]

    @classmethod
    def from_segments(cls, segments: Sequence[Pixels]) -> SensorData:
        if len(segments) != len(SEGMENTS):
            raise ValueError(f"a sensor has {len(SEGMENTS)} segments, got {len(segments)}")
        for array in segments:
            array.flags.writeable = False
        return cls(tuple(segments), segment_datasums(segments))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.segments)


@dataclass
class StoredImage:
    """An image in the buffer: metadata, and pixels per sensor as they are read out."""

    name: str
    metadata: dict[str, Any]
    sensors: tuple[str, ...]
    sensor_data: dict[str, SensorData] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # sensors whose readout failed
    complete: bool = False

    @property
    def nbytes(self) -> int:
        return sum(d.nbytes for d in self.sensor_data.values())

    def describe(self) -> dict[str, Any]:
        """What ``list`` and ``info`` return for this image."""
        return {
            "name": self.name,
            "sensors": list(self.sensors),
            "missingSensors": sorted(self.missing),
            "complete": self.complete,
            "byteSize": self.nbytes,
            "metadata": self.metadata,
        }


class DaqStore:
    """Recent images, at most ``capacity_bytes`` of pixels; ``on_evict`` is told of each
    eviction (the camera logs it)."""

    def __init__(
        self, capacity_bytes: int, on_evict: Callable[[str, str], None] | None = None
    ) -> None:
        if capacity_bytes < len(SEGMENTS) * SEGMENT_BYTES:
            raise ValueError(f"a DAQ store of {capacity_bytes} bytes cannot hold one sensor")
        self.capacity_bytes = capacity_bytes
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._evicted: deque[str] = deque(maxlen=_REMEMBER_EVICTED)
        self._evicted_set: set[str] = set()
        self._used = 0
        self._on_evict = on_evict or (lambda name, reason: None)
        self._lock = threading.Lock()
        self._just_evicted: list[tuple[str, str]] = []  # told to on_evict once unlocked

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, and afterwards (unlocked, so a callback may use the store) the
        evictions made under it."""
        evicted: list[tuple[str, str]] = []
        try:
            with self._lock:
                try:
                    yield
                finally:
                    evicted, self._just_evicted = self._just_evicted, []
        finally:  # evictions made before a failure (an image too big) are told too
            for name, reason in evicted:
                self._on_evict(name, reason)

    def set_capacity(self, capacity_bytes: int) -> None:
        """Change the bound (configuration); evicts the oldest images if it shrank."""
        if capacity_bytes < len(SEGMENTS) * SEGMENT_BYTES:
            raise ValueError(f"a DAQ store of {capacity_bytes} bytes cannot hold one sensor")
        with self._locked():
            self.capacity_bytes = capacity_bytes
            while self._used > capacity_bytes and self._images:
                self._evict(next(iter(self._images)), "buffer shrunk by configuration")

    @property
    def used_bytes(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, name: str) -> bool:
        return name in self._images

    def begin_image(self, name: str, sensors: Sequence[str], metadata: dict[str, Any]) -> None:
        """Announce an image that is being read out."""
        with self._locked():
            if name in self._images or name in self._evicted_set:
                raise ValueError(f"image {name} is already in the DAQ store")
            self._images[name] = StoredImage(name, dict(metadata), tuple(sensors))

    def put_sensor(self, name: str, sensor: str, data: SensorData) -> None:
        """Add one sensor's pixels, evicting the oldest other images to make room."""
        with self._locked():
            image = self._image(name, sensor)
            if sensor not in image.sensors:
                raise UnknownSensorError(name, sensor, f"image {name} has no sensor {sensor}")
            self._make_room(data.nbytes, keep=name)
            previous = image.sensor_data.get(sensor)
            self._used += data.nbytes - (previous.nbytes if previous else 0)
            image.sensor_data[sensor] = data

    def mark_missing(self, name: str, sensor: str) -> None:
        with self._locked():
            self._image(name, sensor).missing.add(sensor)

    def end_image(self, name: str) -> None:
        with self._locked():
            self._image(name).complete = True

    def evict(self, name: str, reason: str) -> None:
        with self._locked():
            self._evict(name, reason)

    def _evict(self, name: str, reason: str) -> None:
        image = self._images.pop(name, None)
        if image is None:
            return
        self._used -= image.nbytes
        self._evicted.append(name)
        self._evicted_set.add(name)
        if len(self._evicted_set) > len(self._evicted):
            self._evicted_set = set(self._evicted)
        self._just_evicted.append((name, reason))

    def _make_room(self, nbytes: int, keep: str) -> None:
        if nbytes > self.capacity_bytes:
            raise ValueError(f"{nbytes} bytes do not fit a {self.capacity_bytes}-byte store")
        while self._used + nbytes > self.capacity_bytes:
            oldest = next((n for n in self._images if n != keep), None)
            if oldest is None:
                raise ValueError(
                    f"image {keep} alone exceeds the DAQ store ({self.capacity_bytes} bytes)"
                )
            self._evict(oldest, "buffer full: oldest image evicted to make room")

    def _image(self, name: str, sensor: str = "") -> StoredImage:
        image = self._images.get(name)
        if image is not None:
            return image
        if name in self._evicted_set:
            raise ImageEvictedError(name, sensor, "evicted from the DAQ buffer before it was read")
        raise UnknownImageError(name, sensor, "no such image in the DAQ buffer")

    def images(self) -> list[StoredImage]:
        """Every image still held, oldest first (the images themselves keep changing
        while they are read out: use :meth:`describe` for a consistent view)."""
        with self._lock:
            return list(self._images.values())

    def info(self, name: str) -> StoredImage:
        with self._lock:
            return self._image(name)

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """What ``list`` (every image, oldest first) or ``info`` (``name`` only) returns,
        taken under the lock; raises the :class:`DaqError` a client must see."""
        with self._lock:
            chosen = self._images.values() if name is None else [self._image(name)]
            return [image.describe() for image in chosen]

    def sensor(self, name: str, sensor: str) -> SensorData:
        """One sensor's pixels, or the :class:`DaqError` a client must see."""
        with self._lock:
            image = self._image(name, sensor)
            data = image.sensor_data.get(sensor)
            if data is not None:
                return data
            if sensor in image.missing:
                raise SensorMissingError(name, sensor, "the sensor was not read out (no data)")
            if sensor not in image.sensors:
                known = ", ".join(image.sensors)
                raise UnknownSensorError(name, sensor, f"not a sensor of this image (has {known})")
            raise DaqError(name, sensor, "not read out yet", code="not-ready")

    @staticmethod
    def size_of_image(sensor_count: int) -> int:
        return sensor_count * len(SEGMENTS) * SEGMENT_BYTES
