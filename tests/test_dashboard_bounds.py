"""The dashboard under attack, without a broker (issue 29 items 2, 5, 9, 10): each
page's stream bounded in bytes and the pages in number, one alarm's change pushed
alone, what it keeps of a peer's text capped, its one redirect local, and the
Host/Origin checks that stop DNS rebinding. Through aiohttp's test client on the
in-memory bus, or on the pure parts alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from yarl import URL

from cscs.core.protocol import encode
from cscs.dashboard.access import host_allowed, origin_allowed
from cscs.dashboard.model import MAX_ALARMS, NightModel
from cscs.dashboard.streams import PageStreams, TooManyPagesError
from tests.test_dashboard import AUTH, PREFIX, TOKEN, Frames, alarm, feed, received, served

pytestmark = pytest.mark.timeout(60)


# ---- 2. memory that follows the attacker --------------------------------------------------


async def test_a_page_that_never_reads_is_dropped_at_its_byte_bound_and_freed() -> None:
    streams = PageStreams(bytes_per_page=1000, max_pages=2)
    dropped: list[bool] = []
    page = streams.open(b"s" * 5000)  # a snapshot bigger than the bound still goes
    page.on_drop = lambda: dropped.append(True)
    streams.broadcast(b"x" * 10)  # behind by a snapshot already: no more
    assert dropped == [True]
    assert len(streams) == 0
    assert page.waiting == 0  # its memory released at once
    assert len(page) == 0
    assert streams.dropped == 1
    assert await page.next() is None  # the page's stream ends

    reader = streams.open(b"s")
    for _ in range(10_000):  # a page that reads keeps up whatever passes
        streams.broadcast(b"y" * 100)
        assert await reader.next() is not None
    assert len(streams) == 1
    assert streams.waiting_bytes() <= 1000


def test_pages_are_bounded_in_number() -> None:
    streams = PageStreams(bytes_per_page=1000, max_pages=2)
    first = streams.open(b"a")
    streams.open(b"b")
    with pytest.raises(TooManyPagesError, match="2 pages are open"):
        streams.open(b"c")
    streams.close(first)  # a page that leaves frees its place
    streams.open(b"c")


async def test_five_hundred_alarms_changing_cost_each_page_one_alarm_per_change(
    tmp_path: Path,
) -> None:
    """The forged alarm flood of issue 29 (500 alarms, long reasons, changing): each
    change reaches a page as that alarm alone, its reason capped; never the whole
    listing of ~1 MB per change. What waits for a page that never reads stays under
    its bound, and the page is dropped rather than buffered."""
    async with served(tmp_path) as s, s.client.get("/events") as r:
        frames = Frames(r)
        await frames.wait_for("snapshot")
        root = f"{PREFIX}/TelemetryGateway/0/evt/alarm"
        for index in range(MAX_ALARMS):
            reason = "r" * 5000
            await s.bus.publish(root, encode(alarm(f"forged.{index}", 3, reason=reason)))
        biggest = 0
        seen: set[str] = set()
        async with asyncio.timeout(30):
            while len(seen) < MAX_ALARMS:
                name, data = await frames.next()
                if name in ("alarm", "alarms"):
                    assert name == "alarm", "the whole listing was pushed for one change"
                    seen.add(data["name"])
                    biggest = max(biggest, len(data["alarm"]["reason"]))
        assert biggest <= 500
        assert len(s.dashboard.model.alarms) == MAX_ALARMS


# ---- 5. a peer's text, kept bounded ------------------------------------------------------


def test_texts_kept_per_row_are_capped() -> None:
    model = NightModel()
    huge = "x" * 5_000_000
    feed(
        model,
        received("TelemetryGateway", "alarm", alarm("big", 3, reason=huge)),
        received("Test", "errorCode", {"errorCode": 1, "errorReport": huge}, index=5),
        received(
            "Archiver",
            "logMessage",
            {
                "name": "x",
                "level": 40,
                "message": huge,
                "traceback": "",
                "filePath": "",
                "functionName": "",
                "lineNumber": 0,
            },
        ),
    )
    assert len(model.alarms["big"]["reason"]) <= 500
    assert all(len(status.last_error) <= 1100 for status in model.board.cscs.values())
    assert model.logs
    assert all(len(entry["message"]) <= 1000 for entry in model.logs)


def test_archivers_and_header_services_of_invented_indices_are_bounded() -> None:
    model = NightModel()
    for index in range(1000):
        feed(model, received("Archiver", "archiverStatus", {
            "queueDepth": 0, "bytesPerSecond": 0.0, "freeBytes": 0, "imagesArchived": 0,
        }, index=index, kind=model.READS[("Archiver", "archiverStatus")].kind))  # fmt: skip
    assert 0 < len(model.archivers) <= 32


# ---- 9. the token's redirect ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/%09/evil.example/x", "//evil.example/x", "/%5Cevil.example"])
async def test_the_token_redirect_goes_to_the_page_itself_only(tmp_path: Path, path: str) -> None:
    async with served(tmp_path, token=TOKEN) as s:
        base = str(s.client.make_url("/")).rstrip("/")
        url = URL(f"{base}{path}?token={TOKEN}", encoded=True)
        async with s.client.session.get(url, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/"


# ---- 10. DNS rebinding: Host and Origin ----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("[::1]:8080", True),
        ("dashboard.site:8080", True),  # a configured name
        ("evil.example", False),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example:8080", False),
        ("127.0.0.1:notaport", False),
        ("", False),
        (None, False),
    ],
)
def test_host_allowed(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, ["dashboard.site"]) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser's cross-site request
        ("http://127.0.0.1:8080", True),
        ("http://evil.example", False),
        ("http://127.0.0.1:9999", False),
        ("null", False),
        ("file://", False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, "127.0.0.1:8080") is allowed


async def test_a_tokenless_dashboard_refuses_another_sites_name(tmp_path: Path) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1
    reaches the loopback dashboard with Host: evil.example; refused, commands too."""
    async with served(tmp_path, allow_commands=True) as s:
        evil = {"Host": "evil.example", "X-Dashboard": "1"}
        for method, path in [("GET", "/"), ("GET", "/events"), ("POST", "/api/acknowledge")]:
            body = {"name": "qc.seeing", "severity": 4}
            async with s.client.request(method, path, headers=evil, json=body) as response:
                assert response.status == 421, (method, path)
                assert "answers only to localhost" in await response.text()
        async with s.client.get("/") as response:  # its own address: the page
            assert response.status == 200


async def test_a_command_from_another_origin_is_refused(tmp_path: Path) -> None:
    async with served(tmp_path, token=TOKEN, allow_commands=True) as s:
        headers = AUTH | {"X-Dashboard": "1", "Origin": "http://evil.example"}
        body = {"name": "qc.seeing", "severity": 4}
        async with s.client.post("/api/acknowledge", headers=headers, json=body) as response:
            assert response.status == 403
            assert "Origin" in await response.text()


async def test_a_flood_of_changes_is_pushed_at_a_bounded_rate(tmp_path: Path) -> None:
    """Item 3: 2000 invented CSCs, one heartbeat each, each a new row. The page gets
    the CSC table at most five times a second (plus the 1 s tick), however fast they
    come; it used to get it once per message handled."""
    async with served(tmp_path) as s, s.client.get("/events") as r:
        frames = Frames(r)
        await frames.wait_for("snapshot")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(2000):
            beat = {"heartbeat": True, "seq": 1, "sent_tai": 0.0}
            await s.bus.publish(f"{PREFIX}/Camera/{index}/evt/heartbeat", encode(beat))
        pushes = 0
        last: list[dict[str, object]] = []
        while len(last) < 256:  # until the table shows the board full
            last = await frames.wait_for("cscs")
            pushes += 1
        elapsed = loop.time() - start
        assert pushes <= elapsed / 0.2 + elapsed + 3, f"{pushes} pushes in {elapsed:.2f} s"
