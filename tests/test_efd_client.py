"""Reading the EFD as astronomers do: EfdClient (the observatory client's method names),
``cscs efd`` on the command line, and the observatory client's own InfluxQL run unchanged
against the InfluxDB store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from astropy.time import Time, TimeDelta
from influxdb import InfluxDBClient

from cscs.cli import main
from cscs.core.topics import Kind
from cscs.efd.client import EfdClient, EfdQueryError
from cscs.efd.command import parse_tai
from cscs.efd.influx_store import InfluxStore
from cscs.efd.open import open_store
from cscs.efd.records import EfdRecord, Measurement
from cscs.efd.store import EfdStore

T0 = 1_796_612_400.0  # 2026-12-07T03:00:00 TAI as TAI Unix seconds (TAI - UTC = 37 s)
MOUNT = Measurement("Telescope", Kind.TELEMETRY, "mount")
END_READOUT = Measurement("ATCamera", Kind.EVENT, "endReadout")


def night(store: EfdStore) -> None:
    """Ten minutes of mount telemetry from two telescopes and one event."""
    store.write(
        [
            EfdRecord(
                MOUNT, index, seq, T0 + seq, T0 + seq + 0.01,
                {"azimuth": 100.0 + seq, "mode": "track" if seq % 2 else None},
            )
            for seq in range(600)
            for index in (1, 2)
        ]
    )  # fmt: skip
    store.write([EfdRecord(END_READOUT, 0, 7, T0 + 30, T0 + 30.2, {"imageName": "AT_O_1"})])


@pytest.fixture
def client(efd_store: EfdStore) -> EfdClient:
    night(efd_store)
    return EfdClient(efd_store)


def test_parse_tai_reads_iso_tai_and_seconds() -> None:
    assert parse_tai("2026-12-07T03:00:00") == T0
    assert parse_tai(str(T0 + 0.5)) == T0 + 0.5
    with pytest.raises(ValueError, match="not a time"):
        parse_tai("tonight")


async def test_topics_and_fields(client: EfdClient) -> None:
    assert await client.get_topics() == [str(END_READOUT), str(MOUNT)]
    fields = await client.get_fields(str(MOUNT))
    assert {"azimuth", "mode", "salIndex", "private_sndStamp", "private_seqNum"} <= set(fields)
    with pytest.raises(EfdQueryError, match=r"no topic lsst\.sal\.Telescope\.dome"):
        await client.get_fields("lsst.sal.Telescope.dome")
    with pytest.raises(EfdQueryError, match="not an EFD topic name"):
        await client.get_fields("Telescope/mount")


async def test_a_time_series_is_a_table_in_tai(client: EfdClient) -> None:
    start = Time("2026-12-07T03:01:00", scale="tai")
    table = await client.select_time_series(
        str(MOUNT), ["azimuth", "mode"], start, T0 + 64, index=2
    )
    assert list(table.colnames) == ["time", "azimuth", "mode"]
    assert table["time"].scale == "tai"
    assert list(table["time"].tai.isot) == [f"2026-12-07T03:01:0{s}.000" for s in range(5)]
    assert list(table["azimuth"]) == [160.0, 161.0, 162.0, 163.0, 164.0]
    assert list(table["mode"].mask) == [True, False, True, False, True]  # null: masked
    by_utc = Time("2026-12-07T03:00:23", scale="utc")  # = 03:01:00 TAI
    again = await client.select_time_series(str(MOUNT), "azimuth", by_utc, T0 + 60)
    assert len(again) == 2  # both indices
    assert np.array_equal(again["azimuth"], [160.0, 160.0])
    # As the observatory's client: a TimeDelta after start, or a window around it.
    two_s = TimeDelta(2, format="sec")
    after = await client.select_time_series(str(MOUNT), "azimuth", start, two_s, index=1)
    assert list(after["azimuth"]) == [160.0, 161.0, 162.0]
    window = await client.select_time_series(
        str(MOUNT), "azimuth", start, two_s, is_window=True, index=1
    )
    assert list(window["azimuth"]) == [159.0, 160.0, 161.0]


async def test_top_n_is_the_newest_first(client: EfdClient) -> None:
    table = await client.select_top_n(str(MOUNT), ["azimuth", "salIndex"], 3, index=1)
    assert list(table["azimuth"]) == [699.0, 698.0, 697.0]
    assert list(table["salIndex"]) == [1, 1, 1]
    cut = await client.select_top_n(str(MOUNT), "azimuth", 2, time_cut=T0 + 10.5, index=2)
    assert list(cut["azimuth"]) == [110.0, 109.0]
    with pytest.raises(EfdQueryError, match="has no field elevation"):
        await client.select_top_n(str(MOUNT), ["azimuth", "elevation"], 1)


def test_cscs_efd_prints_topics_fields_and_a_series(
    efd_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(efd_url)
    night(store)
    store.close()
    assert main(["efd", "--efd", efd_url, "topics"]) == 0
    assert "lsst.sal.ATCamera.logevent_endReadout" in capsys.readouterr().out
    assert main(["efd", "--efd", efd_url, "fields", "lsst.sal.Telescope.mount"]) == 0
    assert "azimuth" in capsys.readouterr().out
    argv = ["efd", "--efd", efd_url, "series", "lsst.sal.Telescope.mount", "azimuth,mode"]
    span = ["--start", "2026-12-07T03:00:10", "--end", str(T0 + 12), "--index", "1"]
    assert main([*argv, *span]) == 0
    out = capsys.readouterr().out
    assert "lsst.sal.Telescope.mount index 1 2026-12-07T03:00:10.000" in out
    assert "3 records" in out
    lines = [line for line in out.splitlines() if "2026-12-07T03:00:1" in line and "│" in line]
    assert [line.split("│")[1:4] for line in lines] == [
        [" 2026-12-07T03:00:10.000 ", " 110.0   ", "       "],
        [" 2026-12-07T03:00:11.000 ", " 111.0   ", " track "],
        [" 2026-12-07T03:00:12.000 ", " 112.0   ", "       "],
    ]


def test_cscs_efd_names_the_cause_of_an_error(
    efd_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["efd", "--efd", efd_url, "fields", "lsst.sal.Telescope.dome"]) == 2
    assert "no topic lsst.sal.Telescope.dome" in capsys.readouterr().err


@pytest.mark.broker
def test_cscs_efd_says_the_store_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["efd", "--efd", f"influxdb://127.0.0.1:{port}/efd", "topics"]) == 2
    assert f"influxdb://127.0.0.1:{port}/efd: list the measurements: unreachable" in (
        capsys.readouterr().err
    )


@pytest.mark.broker
def test_the_observatory_clients_influxql_runs_unchanged(influx_server: Any) -> None:
    """The query the observatory's EFD client builds for ``select_time_series(topic,
    ["azimuth"], start, end, index=2)``: UTC times, ``"efd"."autogen"``, an unquoted
    integer ``salIndex``."""
    store = open_store(influx_server.url("efd"))
    assert isinstance(store, InfluxStore)
    night(store)
    query = (
        'SELECT azimuth FROM "efd"."autogen"."lsst.sal.Telescope.mount" WHERE '
        "time >= '2026-12-07T03:00:23.000Z' AND time <= '2026-12-07T03:00:25.500Z' "
        "AND salIndex = 2"
    )
    raw = InfluxDBClient(influx_server.host, influx_server.port, database="efd")
    rows = list(raw.query(query, epoch="ns").get_points())
    assert [r["azimuth"] for r in rows] == [160.0, 161.0, 162.0]  # sent 03:01:00 TAI on
    assert rows[0]["time"] == (int(T0) + 60 - 37) * 10**9 + 60  # its UTC, + seq % 1000 ns
    top = 'SELECT azimuth, salIndex FROM "efd"."autogen"."lsst.sal.Telescope.mount" '
    top += "GROUP BY * ORDER BY DESC LIMIT 1"
    newest = list(raw.query(top).get_points(tags={"salIndex": "1"}))
    assert newest[0]["azimuth"] == 699.0
    raw.close()
    store.close()
