"""The DAQ buffer: bounded by bytes, oldest first out, and honest about what is gone."""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np
import pytest

from cscs.camera.fits import datasum
from cscs.camera.geometry import SEGMENT_BYTES
from cscs.daq.errors import (
    DaqError,
    ImageEvictedError,
    SensorMissingError,
    UnknownImageError,
    UnknownSensorError,
)
from sim.daq.store import DaqStore, SensorData

SENSOR_BYTES = 16 * SEGMENT_BYTES


def sensor(value: int) -> SensorData:
    return SensorData.from_segments([np.full((2048, 576), value, np.int32) for _ in range(16)])


def filled(store: DaqStore, name: str, sensors: list[str]) -> None:
    store.begin_image(name, sensors, {"n": name})
    for number, s in enumerate(sensors):
        store.put_sensor(name, s, sensor(number))
    store.end_image(name)


def test_oldest_images_are_evicted_first_and_announced() -> None:
    evicted: list[tuple[str, str]] = []
    store = DaqStore(3 * SENSOR_BYTES, lambda name, why: evicted.append((name, why)))
    for n in range(1, 4):
        filled(store, f"AT_O_20261121_00000{n}", ["R00_S00"])
    assert store.used_bytes == 3 * SENSOR_BYTES
    filled(store, "AT_O_20261121_000004", ["R00_S00"])
    assert [name for name, _ in evicted] == ["AT_O_20261121_000001"]
    assert "buffer full" in evicted[0][1]
    assert [i.name for i in store.images()] == [f"AT_O_20261121_00000{n}" for n in (2, 3, 4)]
    assert store.used_bytes == 3 * SENSOR_BYTES
    with pytest.raises(ImageEvictedError, match=r"AT_O_20261121_000001.*evicted"):
        store.sensor("AT_O_20261121_000001", "R00_S00")


def test_an_image_being_read_out_is_never_evicted_for_itself() -> None:
    store = DaqStore(2 * SENSOR_BYTES)
    filled(store, "CC_O_20261121_000001", ["R22_S00"])
    filled(store, "CC_O_20261121_000002", ["R22_S00", "R22_S01"])  # evicts 000001 only
    assert [i.name for i in store.images()] == ["CC_O_20261121_000002"]
    store.begin_image("CC_O_20261121_000003", ["R22_S00", "R22_S01", "R22_S02"], {})
    store.put_sensor("CC_O_20261121_000003", "R22_S00", sensor(1))
    store.put_sensor("CC_O_20261121_000003", "R22_S01", sensor(1))
    with pytest.raises(ValueError, match="alone exceeds the DAQ store"):
        store.put_sensor("CC_O_20261121_000003", "R22_S02", sensor(1))


def test_reader_errors_name_image_sensor_and_cause() -> None:
    store = DaqStore(4 * SENSOR_BYTES)
    store.begin_image("CC_O_20261121_000001", ["R22_S00", "R22_S01", "R22_S02"], {})
    store.put_sensor("CC_O_20261121_000001", "R22_S00", sensor(5))
    store.mark_missing("CC_O_20261121_000001", "R22_S01")
    with pytest.raises(UnknownImageError, match="image CC_O_20261121_000009 sensor R22_S00"):
        store.sensor("CC_O_20261121_000009", "R22_S00")
    with pytest.raises(UnknownSensorError, match="sensor R99_S99: not a sensor"):
        store.sensor("CC_O_20261121_000001", "R99_S99")
    with pytest.raises(SensorMissingError, match="sensor R22_S01: the sensor was not read out"):
        store.sensor("CC_O_20261121_000001", "R22_S01")
    with pytest.raises(DaqError, match="not read out yet") as info:
        store.sensor("CC_O_20261121_000001", "R22_S02")
    assert info.value.code == "not-ready"
    described = store.info("CC_O_20261121_000001").describe()
    assert described["missingSensors"] == ["R22_S01"]
    assert described["complete"] is False


def test_stored_pixels_are_read_only_and_summed_once() -> None:
    data = sensor(3)
    assert data.datasums == tuple(datasum(s.view(np.uint32)) for s in data.segments)
    assert len(data.datasums) == 16
    with pytest.raises(ValueError, match="read-only"):
        data.segments[0][0, 0] = 1


def test_shrinking_the_store_evicts_oldest() -> None:
    store = DaqStore(3 * SENSOR_BYTES)
    for n in range(1, 4):
        filled(store, f"AT_O_20261121_00000{n}", ["R00_S00"])
    store.set_capacity(SENSOR_BYTES)
    assert [i.name for i in store.images()] == ["AT_O_20261121_000003"]
    with pytest.raises(ValueError, match="cannot hold one sensor"):
        store.set_capacity(10)


def test_the_store_is_shared_safely_between_threads() -> None:
    """The camera fills the store on its loop while the DAQ server reads it from its own
    thread (ADR 0011): readers never see an image half-changed, the byte count stays
    exact, and ``on_evict`` runs outside the lock (it may use the store)."""
    evicted: list[str] = []

    def on_evict(name: str, why: str) -> None:
        evicted.append(name)
        store.describe()  # would deadlock if called under the lock

    store = DaqStore(3 * SENSOR_BYTES, on_evict)
    data = sensor(7)
    sensors = ["R22_S00", "R22_S01"]
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for n in range(300):
                name = f"CC_O_20261121_{n:06d}"
                store.begin_image(name, sensors, {"n": n})
                for s in sensors:
                    store.put_sensor(name, s, data)
                store.end_image(name)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                for image in store.describe():
                    assert image["byteSize"] <= 2 * SENSOR_BYTES
                    with contextlib.suppress(DaqError):  # evicted or not yet read out
                        assert store.sensor(image["name"], "R22_S00") is data
                assert store.used_bytes <= store.capacity_bytes
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(3))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: races show up, if there are any
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert len(evicted) == 300 - 1
    assert store.used_bytes == sum(i.nbytes for i in store.images()) == 2 * SENSOR_BYTES
