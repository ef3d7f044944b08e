"""The archiver on Dask across hosts: each CSC and each Dask process on a "host" of its
own, a Linux network namespace the test makes (iproute2), all on one bridge.

What ``executor: tcp://host:8786`` promises a site (docs/archiver.md, ADR 0023) is
that the pixels go from the camera's DAQ to Dask workers on *other machines*, which
write the files into an archive they all see, while the archiver CSC, elsewhere again,
only catalogues and announces them. Tests on one host (test_archiver_dask.py) cannot
tell that from everything quietly talking over 127.0.0.1. Here each namespace has its
own loopback and its own address, so anything that assumed one host (a DAQ announced
on 127.0.0.1, a worker reading "its" local DAQ, a file written where only the archiver
sees it) fails:

    root (bridge .1):  Mosquitto, Weather:0, Telescope:1, HeaderService:1, the test
    daq  (.2):  Camera:1, its DAQ served on tcp://10.199.X.2:*
    sched (.3): dask scheduler          w1 (.4), w2 (.5): dask workers
    arch (.6):  Archiver:1, executor tcp://10.199.X.3:8786

The namespaces share the file system: that is the site's shared archive. Two LATISS
biases are taken; both files must verify, have been read from 10.199.X.2 and written
by tasks that ran on the workers at .4/.5. Skipped where namespaces cannot be made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from distributed import Client

from cscs.archiver.interface import IMAGE_ARCHIVED, IMAGE_RETRIEVAL_FAILED, ImageArchived
from cscs.camera.events import DAQ_AVAILABLE
from cscs.camera.verify import verify_raw_file
from cscs.core.broker import EmbeddedBroker, find_mosquitto
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress
from sim.site.processes import log_path, log_tail, spawn, stop
from sim.testkit import config_dir
from tests.test_archiver import BIAS
from tests.test_processes import log_tails

pytestmark = pytest.mark.broker

HOSTS = {"daq": 2, "sched": 3, "w1": 4, "w2": 5, "arch": 6}  # the last byte of each address
SCHEDULER_PORT = 8786


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _netns_refusal() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "no `ip` binary (iproute2)"
    if os.geteuid() != 0:
        return "not root"
    probe = f"cscs-probe-{os.getpid()}"
    added = _ip("netns", "add", probe)
    if added.returncode != 0:
        return added.stderr.strip() or f"`ip netns add` exited {added.returncode}"
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Network:
    subnet: str  # "10.199.X"
    namespaces: dict[str, str]  # host -> namespace

    def ip(self, host: str) -> str:
        """A host's address; the bridge's (the root namespace's) for any other name."""
        return f"{self.subnet}.{HOSTS.get(host, 1)}"


def _free_subnet() -> str:
    """10.199.X.0/24 with X from our pid, the next one that no interface uses yet."""
    used = _ip("-o", "addr").stdout
    for offset in range(254):
        subnet = f"10.199.{(os.getpid() + offset) % 254 + 1}"
        if f"{subnet}." not in used:
            return subnet
    raise RuntimeError("every 10.199.X.0/24 is in use")


@pytest.fixture
def network() -> Iterator[Network]:
    """The bridge and a namespace per host, each with a veth on it; removed afterwards
    (every process still in a namespace SIGKILLed first), whatever happened."""
    refusal = _netns_refusal()
    if refusal is not None:
        pytest.skip(f"ip netns is not allowed here: {refusal}")
    tag = str(os.getpid() % 100_000)
    bridge = f"cb{tag}"  # interface names: 15 characters at most
    net = Network(_free_subnet(), {host: f"cscs{tag}-{host}" for host in HOSTS})
    try:
        _must("link", "add", bridge, "type", "bridge")
        _must("addr", "add", f"{net.ip('bridge')}/24", "dev", bridge)
        _must("link", "set", bridge, "up")
        for host, last in HOSTS.items():
            ns, outside, inside = net.namespaces[host], f"cv{tag}h{last}", f"cv{tag}n{last}"
            _must("netns", "add", ns)
            _must("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
            _must("link", "set", outside, "master", bridge, "up")
            _must("-n", ns, "link", "set", "lo", "up")
            _must("-n", ns, "addr", "add", f"{net.ip(host)}/24", "dev", inside)
            _must("-n", ns, "link", "set", inside, "up")
        yield net
    finally:
        _kill_everything_in(net.namespaces.values())
        for ns in net.namespaces.values():
            _ip("netns", "del", ns)  # its veth goes with it, and the peer on the bridge
        _ip("link", "del", bridge)


def _kill_everything_in(namespaces: Iterable[str]) -> None:
    """SIGKILL what a failed test left in our namespaces (all ours), and wait until it
    has exited: while the network is still there, so that its connections end at once
    rather than keep a deleted namespace alive retrying their FINs."""
    exiting = []
    for ns in namespaces:
        for pid in _ip("netns", "pids", ns).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                process = os.pidfd_open(int(pid))
                signal.pidfd_send_signal(process, signal.SIGKILL)
                exiting.append(process)
    for process in exiting:
        select.select([process], [], [], 10.0)  # readable once it has exited
        os.close(process)


async def on_host(
    net: Network, host: str, argv: list[str], log: Path, env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    """``argv`` run in ``host``'s namespace (``ip netns exec`` execs it: same pid), its
    output appended to ``log``."""
    out = await asyncio.to_thread(open, log, "ab")
    with out:  # the child has its own descriptor once started
        return await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", net.namespaces[host], *argv, stdin=subprocess.DEVNULL,
            stdout=out, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip


async def bring_up(bus: Bus, address: CscAddress, override: str, logs: Path) -> None:
    """From STANDBY (once the process is up) to ENABLED, with ``override``."""
    async with Remote(bus, address) as remote:
        try:
            await remote.wait_for_state(State.STANDBY, timeout=90)
        except TimeoutError:
            log = log_tail(log_path(logs, address), 20)
            raise RuntimeError(f"{address} did not come up:\n{log}") from None
        await remote.command("start", {"configurationOverride": override}, timeout=60)
        await remote.command("enable", timeout=60)


def worker_report() -> Callable[[Any], dict[str, list[str]]]:
    """What a worker did, run there by ``Client.run``: the archive tasks it executed
    and the DAQs it opened. (Nested, so Dask ships it by value: the workers cannot
    import this test module.)"""

    def report(dask_worker: Any) -> dict[str, list[str]]:
        import sys

        worker = sys.modules.get("cscs.archiver.worker")
        log = dask_worker.state.log
        keys = {e[0] for e in log if isinstance(e[0], str) and e[0].startswith("archive-")}
        daqs = {key[0] for key in getattr(worker, "_readers", {})}
        return {"tasks": sorted(keys), "daqs": sorted(daqs)}

    return report


async def start_hosts(
    net: Network, broker: str, env: dict[str, str], configs: Path, tmp_path: Path,
    processes: list[asyncio.subprocess.Process],
) -> None:  # fmt: skip
    """Every process of the site, each on its host, all at once (the imports overlap);
    each added to ``processes`` as it starts."""
    logs = tmp_path / "logs"
    scheduler = net.ip("sched")
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", scheduler,
            "--port", str(SCHEDULER_PORT), "--dashboard-address", ":0"]  # fmt: skip
    processes.append(await on_host(net, "sched", dask, logs / "scheduler.log", {}))
    for host in ("w1", "w2"):
        worker = [sys.executable, "-m", "distributed.cli.dask_worker",
                  f"tcp://{scheduler}:{SCHEDULER_PORT}", "--host", net.ip(host),
                  "--nthreads", "1", "--nworkers", "1", "--dashboard-address", ":0",
                  "--local-directory", str(tmp_path / host)]  # fmt: skip
        processes.append(await on_host(net, host, worker, logs / f"{host}.log", {}))
    prefix = env["CSCS_PREFIX"]
    for name, index in (("Weather", 0), ("Telescope", 1), ("HeaderService", 1)):
        processes.append(await spawn(CscAddress(name, index, prefix), broker, env, logs))
    daq_bind = {"CSCS_DAQ_BIND": f"tcp://{net.ip('daq')}:*"}
    config = {"CSCS_CONFIG_DIR": str(configs)}
    for host, name, own in (("daq", "Camera", env | daq_bind), ("arch", "Archiver", env | config)):
        argv = [sys.executable, "-m", "cscs", "run", name, "--index", "1", "--broker", broker]
        log = log_path(logs, CscAddress(name, 1, prefix))
        processes.append(await on_host(net, host, argv, log, own))


async def take_images(bus: Bus, prefix: str, count: int) -> tuple[str, list[ImageArchived]]:
    """The DAQ's endpoint the camera announces, and ``imageArchived`` of ``count``
    biases taken on it (failing at once on an ``imageRetrievalFailed``)."""
    camera = Remote(bus, CscAddress("Camera", 1, prefix))
    archiver = Remote(bus, CscAddress("Archiver", 1, prefix))
    outcomes = (IMAGE_ARCHIVED.name, IMAGE_RETRIEVAL_FAILED.name)
    files: list[ImageArchived] = []
    async with camera, archiver, archiver.stream() as events:
        daq = (await camera.next(DAQ_AVAILABLE, timeout=30)).data.endpoint
        await camera.command("takeImages", {"numImages": count, **BIAS}, timeout=90)
        while len(files) < count:
            outcome = await events.wait_for(lambda r: r.name in outcomes, timeout=120)
            assert outcome.name == IMAGE_ARCHIVED.name, f"not archived: {outcome.data}"
            files.append(outcome.parse(IMAGE_ARCHIVED).data)
    return daq, files


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
@pytest.mark.timeout(300)
async def test_archiver_on_dask_workers_of_other_hosts(network: Network, tmp_path: Path) -> None:
    """Camera, scheduler, two workers and archiver each on a host of its own: two
    images archived by the workers, from the DAQ's address, into the shared archive."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    prefix = f"hosts{os.getpid()}"
    scheduler = f"tcp://{network.ip('sched')}:{SCHEDULER_PORT}"
    settings = {"executor": scheduler, "scheduler_timeout": 30.0, "header_timeout": 20.0}
    configs = config_dir(tmp_path, settings, state / "headers" / "HeaderService-1")
    archive = tmp_path / "archive"  # config_dir's archive_root
    camera, archiver = CscAddress("Camera", 1, prefix), CscAddress("Archiver", 1, prefix)
    ups = [(CscAddress("Weather", 0, prefix), ""), (CscAddress("Telescope", 1, prefix), "fast"),
           (CscAddress("HeaderService", 1, prefix), ""), (camera, "fast"),
           (archiver, "test")]  # fmt: skip
    processes: list[asyncio.subprocess.Process] = []
    async with EmbeddedBroker("mosquitto", host=network.ip("bridge")) as broker:
        env = {"CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(state), "CSCS_BROKER": broker.url}
        try:
            # Well within the test's 300 s, so that a hang still ends in the clean-up below.
            async with asyncio.timeout(220):
                await start_hosts(network, broker.url, env, configs, tmp_path, processes)
                async with Client(scheduler, asynchronous=True, timeout=60) as client:
                    await client.wait_for_workers(2, timeout=90)
                    async with Bus(broker.address, connect_timeout=30) as bus:
                        for address, override in ups:
                            await bring_up(bus, address, override, logs)
                        daq, files = await take_images(bus, prefix, 2)
                    reports: dict[str, dict[str, list[str]]] = await client.run(worker_report())

            # The DAQ served on the camera's host's address; the files whole, in the
            # shared archive.
            assert daq.startswith(f"tcp://{network.ip('daq')}:"), daq
            images = {f.imageName for f in files}
            assert len(images) == 2, files
            for f in files:
                path = Path(urlparse(f.url).path)
                assert path.is_relative_to(archive), f.url
                verified = await asyncio.to_thread(
                    verify_raw_file, path, f.byteSize, f.checkSum, f.checkSumAlgorithm
                )
                assert verified == []
            # Each catalogued as read from that DAQ, with the header the archiver read
            # from the header service's host (through the shared file system).
            query = "SELECT image_name, daq_image, header_url != '' FROM archived_files"
            with contextlib.closing(sqlite3.connect(archive / "catalog.sqlite")) as catalog:
                rows = {i: (d, bool(h)) for i, d, h in catalog.execute(query)}
            assert rows == {i: (f"{daq} {i}", True) for i in images}

            # The tasks ran on the two worker hosts; each that ran one read the DAQ itself.
            assert {urlparse(w).hostname for w in reports} == {network.ip("w1"), network.ip("w2")}
            ran = {i for r in reports.values() for t in r["tasks"] for i in images if i in t}
            assert ran == images, reports
            assert all(r["daqs"] == [daq] for r in reports.values() if r["tasks"]), reports
            scheduler_log = (logs / "scheduler.log").read_text(errors="replace")
            for host in ("w1", "w2"):
                assert f"Register worker addr: tcp://{network.ip(host)}:" in scheduler_log
            archiver_log = log_path(logs, archiver).read_text(errors="replace")
            assert "archiving on Dask" in archiver_log
            assert f"executor={scheduler}" in archiver_log
            for log in (archiver_log, log_path(logs, camera).read_text(errors="replace")):
                assert "127.0.0.1" not in log
                assert "localhost" not in log
        except BaseException:
            print(f"the processes' logs ({logs}):\n{log_tails(logs, 40)}")
            raise
        finally:
            await stop(processes)
