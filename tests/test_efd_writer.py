"""EfdWriter:0 on the in-memory bus: what the CSCs say, their commands and acks, and the
DM-internal topics recorded under the observatory's names; its status; a spool it cannot
write is a FAULT naming the cause; two writers on one store keep one record each."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cscs.core.states import State
from cscs.core.testing import CscHarness, MemoryBroker, TestCsc, enabled_csc, make_csc
from cscs.core.topics import Kind
from cscs.efd.memory import MemoryStore
from cscs.efd.records import EfdRecord, Measurement
from cscs.efd.store import EfdRefusedError, EfdStoreError
from cscs.efd_writer.csc import EfdWriterCsc, public_url
from cscs.efd_writer.interface import ERROR_SPOOL_UNWRITABLE

CONFIG = {"batch_interval": 0.02, "status_interval": 0.05, "retry_max": 0.1}


def writer_factory(store: MemoryStore) -> Any:
    def make(index: int, **kwargs: Any) -> EfdWriterCsc:
        return EfdWriterCsc(index, store=lambda: store, **kwargs)

    make.interface = EfdWriterCsc.interface  # type: ignore[attr-defined]
    return make


@contextlib.asynccontextmanager
async def writer(
    broker: MemoryBroker, store: MemoryStore, tmp_path: Path, index: int = 0, **config: Any
) -> AsyncIterator[CscHarness]:
    async with enabled_csc(writer_factory(store), broker, tmp_path, "efd", CONFIG | config,
                           index=index) as harness:  # fmt: skip
        yield harness


def measurement(csc: str, kind: Kind, name: str) -> Measurement:
    return Measurement(csc, kind, name)


async def test_events_telemetry_commands_acks_and_dm_topics_are_recorded(tmp_path: Path) -> None:
    broker, store = MemoryBroker(), MemoryStore()
    async with (
        writer(broker, store, tmp_path) as efd,
        efd.remote.stream("efdWriterStatus") as status,
        make_csc(TestCsc, broker, index=5, settings=efd.csc.settings) as test,
    ):
        await test.remote.command("start")
        await test.remote.command("enable")
        await test.remote.command("setScalars", {"value": 42, "text": "hi"})
        assert await efd.bus.publish("dm/status/image-qc", json.dumps(
            {"seq": 1, "sent_tai": 1.8e9, "imageName": "AT_O_1", "stage": "image-qc",
             "status": "measured", "description": ""}).encode())  # fmt: skip
        assert await efd.bus.publish("efd/Test/5/evt/scalars", b"not json")
        wanted = {
            measurement("Test", Kind.EVENT, "scalars"),
            measurement("Test", Kind.TELEMETRY, "scalars"),
            measurement("Test", Kind.COMMAND, "setScalars"),
            measurement("Test", Kind.ACK, "ackcmd"),
            measurement("DM", Kind.EVENT, "processingStatus"),
            measurement("Test", Kind.EVENT, "summaryState"),
        }
        # Each status (sent as the counts change) is a moment to look at the store.
        found = await status.wait_for(
            lambda r: r.data["refused"] >= 1 and wanted <= set(store.measurements()), 20
        )
        assert found.data["storeUp"]
        assert found.data["storeUrl"] == "(given)"
        (event,) = store.records([measurement("Test", Kind.EVENT, "scalars")], 0, 3e9, index=5)
        assert event.fields == {"value": 42, "text": "hi"}
        (command,) = store.records([measurement("Test", Kind.COMMAND, "setScalars")], 0, 3e9)
        assert command.fields["value"] == 42
        assert command.fields["private_origin"]
        acks = store.records([measurement("Test", Kind.ACK, "ackcmd")], 0, 3e9)
        assert {"setScalars", "start", "enable"} <= {a.fields["command"] for a in acks}


async def test_a_store_down_is_said_and_spooled_then_written(tmp_path: Path) -> None:
    broker, store = MemoryBroker(), MemoryStore()
    store.fail = EfdStoreError("memory://: connection refused (test)")
    async with (
        writer(broker, store, tmp_path) as efd,
        efd.remote.stream("efdWriterStatus") as status,
    ):
        down = await status.wait_for(lambda r: not r.data["storeUp"] and r.data["spooled"], 20)
        assert "connection refused (test)" in down.data["lastError"]
        assert down.data["spoolBytes"] > 0
        assert await efd.remote.state() is State.ENABLED  # a store down is no FAULT
        store.fail = None
        up = await status.wait_for(lambda r: r.data["storeUp"] and not r.data["spoolBytes"], 20)
        assert up.data["written"] >= down.data["spooled"]
        assert up.data["lastError"] == ""


async def test_a_spool_that_cannot_be_written_is_a_fault_naming_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cscs.efd_writer.spool import Spool

    def full(self: Spool, records: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "append", full)
    broker, store = MemoryBroker(), MemoryStore()
    store.fail = EfdStoreError("down")
    async with (
        writer(broker, store, tmp_path) as efd,
        efd.remote.stream("errorCode") as errors,
    ):
        error = await errors.wait_for(lambda r: r.data["errorCode"] == ERROR_SPOOL_UNWRITABLE, 20)
        assert "No space left on device" in error.data["errorReport"]
        assert "is down" in error.data["errorReport"]
        await efd.remote.wait_for_state(State.FAULT, 20)


class CountingStore(MemoryStore):
    """A store that counts the records of ``Test:7``'s ``scalars`` it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.offered = 0

    def write(self, records: Sequence[EfdRecord]) -> None:
        super().write(records)
        self.offered += sum(r.measurement.csc == "Test" and r.index == 7 for r in records)


async def test_two_writers_on_one_store_keep_one_record_per_message(tmp_path: Path) -> None:
    broker, store = MemoryBroker(), CountingStore()
    async with (
        writer(broker, store, tmp_path / "a", index=0) as first,
        writer(broker, store, tmp_path / "b", index=1) as second,
        first.remote.stream("efdWriterStatus") as status,
    ):
        assert second.csc.address.index == 1
        for n in range(1, 21):
            payload = {"seq": n, "sent_tai": 1.8e9 + n, "value": n}
            assert await first.bus.publish("efd/Test/7/evt/scalars", json.dumps(payload).encode())
        await status.wait_for(lambda r: store.offered >= 40, 20)  # each writer wrote each
        records = store.records([measurement("Test", Kind.EVENT, "scalars")], 0, 3e9, index=7)
        assert [r.seq for r in records] == list(range(1, 21))


def test_the_store_url_said_has_no_secrets() -> None:
    assert public_url("influxdb://efd:s3cret@host:8086/efd?token=x") == "influxdb://host:8086/efd"
    assert public_url("sqlite:////var/efd.sqlite3") == "sqlite:////var/efd.sqlite3"


@pytest.mark.parametrize("override", ["", "camera1", "camera2", "camera3"])
def test_the_gateway_watches_the_writer_as_shipped(override: str) -> None:
    """The DM-health rules raise an alarm when EfdWriter:0 falls silent or leaves ENABLED
    at night, whichever camera's configuration the gateway runs."""
    from cscs.core.config import ConfigSource, load_configuration
    from cscs.telemetry_gateway.interface import CONFIG_DIR, GatewayConfig

    applied = load_configuration(GatewayConfig, ConfigSource(CONFIG_DIR), override)
    assert "EfdWriter:0" in applied.config.health.watched


def spooled_seqs(spool_dir: Path) -> set[int]:
    """The seqs of Test:7's events in the spool's files as they are on disk now."""
    from cscs.efd_writer.spool import decode_record

    found = set()
    for segment in spool_dir.glob("*.spool"):
        for line in segment.read_bytes().splitlines():
            record = decode_record(line)
            if record.measurement.csc == "Test" and record.index == 7:
                found.add(record.seq)
    return found


async def test_the_spool_outlives_the_writer_and_a_new_one_replays_it(tmp_path: Path) -> None:
    """Store down: the events are spooled. The writer stops; a new writer object on the
    same state directory, with the store back, writes every one of them."""
    broker, store = MemoryBroker(), MemoryStore()
    store.fail = EfdStoreError("down")
    wanted = set(range(1, 21))
    async with (
        writer(broker, store, tmp_path) as efd,
        efd.remote.stream("efdWriterStatus") as status,
    ):
        spool_dir = efd.csc.spool_dir  # type: ignore[attr-defined]
        for n in sorted(wanted):
            payload = {"seq": n, "sent_tai": 1.8e9 + n, "value": n}
            assert await efd.bus.publish("efd/Test/7/evt/scalars", json.dumps(payload).encode())
        await status.wait_for(lambda r: spooled_seqs(spool_dir) == wanted, 20)
    assert store.measurements() == []  # nothing reached the store
    store.fail = None
    async with (
        writer(broker, store, tmp_path) as again,
        again.remote.stream("efdWriterStatus") as status,
    ):
        scalars = [measurement("Test", Kind.EVENT, "scalars")]
        await status.wait_for(
            lambda r: {x.seq for x in store.records(scalars, 0, 3e9, index=7)} == wanted, 20
        )
        await status.wait_for(lambda r: r.data["spoolBytes"] == 0, 20)
    assert not spooled_seqs(spool_dir)


class RefusingStore(MemoryStore):
    """Refuses for good every batch holding a DM record (as InfluxDB a body too large)."""

    def write(self, records: Sequence[EfdRecord]) -> None:
        if any(r.measurement.csc == "DM" for r in records):
            raise EfdRefusedError("memory://: write: refused: 413 (test)", records)
        super().write(records)


async def test_a_record_the_store_refuses_is_counted_in_the_status(tmp_path: Path) -> None:
    broker, store = MemoryBroker(), RefusingStore()
    async with (
        writer(broker, store, tmp_path) as efd,
        efd.remote.stream("efdWriterStatus") as status,
    ):
        assert await efd.bus.publish("dm/status/image-qc", json.dumps(
            {"seq": 1, "sent_tai": 1.8e9, "imageName": "AT_O_1", "stage": "image-qc",
             "status": "measured", "description": ""}).encode())  # fmt: skip
        found = await status.wait_for(lambda r: r.data["storeRefused"] >= 1, 20)
        assert found.data["storeUp"]  # a refusal is no outage
        csc = efd.csc
        assert isinstance(csc, EfdWriterCsc)
        assert (csc.spool_dir / "refused" / "refused.jsonl").stat().st_size > 0
        assert await efd.remote.state() is State.ENABLED
