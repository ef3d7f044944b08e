"""A hostile DAQ, for the tests and benchmarks of its clients (issue 29): a ZeroMQ
ROUTER on a thread of its own that answers ``list`` with whatever bytes it is given (an
84 MB listing, a listing naming one image a hundred thousand times) and every other
request with an error whose ``message`` it is given (5 MB of text and escapes), and that
can push replies nobody asked for.

Not a DAQ: it serves no pixels and keeps nothing; what it sends is the attack.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import zmq

from cscs.daq.protocol import MAGIC

__all__ = ["HostileDaq", "listing"]


def listing(images: int, prefix: str, sensor: str, *, repeat: int = 1) -> bytes:
    """A ``list`` reply naming ``images`` complete images ``{prefix}_{n:06d}`` with one
    sensor each, every entry ``repeat`` times (made as bytes: a big one is cheap)."""
    entries = (
        b'{"name":"%s_%06d","sensors":["%s"],"complete":true,"byteSize":1}'
        % (prefix.encode(), n % 1_000_000, sensor.encode())
        for n in range(images)
        for _ in range(repeat)
    )
    return b'{"id":%d,"ok":true,"images":[' + b",".join(entries) + b"]}"


class HostileDaq:
    """``async with``-free on purpose: ``start()`` binds ``endpoint`` and serves on a
    thread; ``close()`` stops it. ``list_reply``: the reply header's bytes, with ``%d``
    where the request's id goes (:func:`listing` makes one)."""

    def __init__(
        self, list_reply: bytes, error_message: str = "no", endpoint: str = "tcp://127.0.0.1:*"
    ) -> None:
        self.list_reply = list_reply
        self.error_message = error_message
        self.requests: list[str] = []  # the ops asked, in order
        self.listed = threading.Event()  # a list reply has been handed to ZeroMQ
        self._context: zmq.Context[Any] = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.bind(endpoint)
        last = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(last, bytes)
        self.endpoint = last.decode()
        self._peers: list[bytes] = []
        self._pushes: list[list[bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hostile-daq", daemon=True)

    def start(self) -> HostileDaq:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._socket.close(linger=0)
        self._context.term()

    def push(self, frames: list[bytes]) -> None:
        """Send ``[MAGIC, *frames]`` to every client seen so far, unasked."""
        with self._lock:
            self._pushes.append(frames)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            with self._lock:
                pushes, self._pushes = self._pushes, []
            for frames in pushes:
                for peer in self._peers:
                    self._socket.send_multipart([peer, MAGIC, *frames])
            if not poller.poll(20):
                continue
            peer, *frames = self._socket.recv_multipart()
            if peer not in self._peers:
                self._peers.append(peer)
            try:
                request = json.loads(frames[1])
                op, request_id = str(request.get("op")), int(request.get("id", 0))
            except (ValueError, IndexError, TypeError, AttributeError):
                continue
            self.requests.append(op)
            if op == "list":
                self._socket.send_multipart([peer, MAGIC, self.list_reply.replace(
                    b"%d", str(request_id).encode(), 1)])  # fmt: skip
                self.listed.set()
            elif op != "cancel":
                error = {"id": request_id, "ok": False, "code": "unknown-image",
                         "message": self.error_message}  # fmt: skip
                self._socket.send_multipart([peer, MAGIC, json.dumps(error).encode()])
