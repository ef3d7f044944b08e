"""Where the bus goes around ``aiomqtt`` (2.5): each a gap or a fault of the library,
kept here so that the rest of the bus uses only its public API.

* :func:`publish` — aiomqtt bounds a publish with ``asyncio.wait_for``, which in Python
  3.11 can swallow a cancellation (a CSC would then never stop).
* :func:`enable_manual_ack`, :func:`ack` — aiomqtt has no manual acknowledgement; paho,
  under it, has. They reach aiomqtt's private paho client, checked.
* :func:`unread` — aiomqtt cannot say whether a message has come that it has not yet
  handed over: it reads one packet per turn of the event loop. Its queue and paho's
  socket, checked.
* :func:`stop_housekeeping` — aiomqtt's housekeeping task can outlive its connection.
  It reaches a private task, looked up defensively.
* (In :meth:`cscs.core.bus.Bus.close`: aiomqtt waits for a disconnect without a time
  limit, so a second cancellation abandons the connection.)

Each private name is looked up with ``getattr`` and its type checked, so that an aiomqtt
that renames it fails with a clear error (or, for the housekeeping, does no harm).
"""

from __future__ import annotations

import asyncio
import math
import select

import aiomqtt
import paho.mqtt.client as mqtt

__all__ = [
    "PUBLISH_TIMEOUT",
    "ack",
    "enable_manual_ack",
    "publish",
    "stop_housekeeping",
    "unread",
]

PUBLISH_TIMEOUT = 10.0  # s for the broker to acknowledge a QoS 1 publish


async def publish(
    client: aiomqtt.Client, topic: str, payload: bytes, qos: int, retain: bool
) -> None:
    """Publish, waiting at most :data:`PUBLISH_TIMEOUT` (TimeoutError) for the broker.

    aiomqtt bounds a publish with ``asyncio.wait_for``, which in Python 3.11 can swallow
    a cancellation; it gets no limit and ``asyncio.timeout`` bounds it instead.
    """
    async with asyncio.timeout(PUBLISH_TIMEOUT):
        await client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Received QoS 1/2 messages are acknowledged only by :func:`ack` (aiomqtt has no
    option for it; paho's own switch, on aiomqtt's paho client)."""
    _paho(client).manual_ack_set(True)


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Acknowledge message ``mid`` to the broker (a client with manual acks)."""
    _paho(client).ack(mid, qos)


def unread(client: aiomqtt.Client) -> bool:
    """Whether ``client`` holds messages it has not handed over yet: in aiomqtt's queue
    (private, looked up defensively), or bytes in the socket, decoded or not."""
    queue = getattr(client, "_queue", None)
    if isinstance(queue, asyncio.Queue) and queue.qsize():
        return True
    sock = _paho(client).socket()
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: decrypted, not yet read
    if callable(pending) and pending() > 0:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us: nothing more will come on it
        return False
    return bool(readable)


def _paho(client: aiomqtt.Client) -> mqtt.Client:
    """aiomqtt's paho client (private, hence checked)."""
    paho = getattr(client, "_client", None)
    if not isinstance(paho, mqtt.Client):
        raise RuntimeError("this aiomqtt has no paho client to acknowledge messages with")
    return paho


async def stop_housekeeping(client: aiomqtt.Client) -> None:
    """Stop aiomqtt's once-a-second housekeeping task of a closed client.

    aiomqtt 2.5 starts that task with ``call_soon_threadsafe`` when the socket opens and
    cancels it when the socket closes; a connection closed before the start callback
    ran (a CSC stopped just as it connected) gets the task afterwards, and one that is
    abandoned mid-disconnect never has it cancelled. Either way it would outlive the
    connection. The callback gets its turn first, then the task is cancelled.
    """
    for _ in range(3):  # the start callback, and what it schedules, get their turns
        await asyncio.sleep(0)
    task = getattr(client, "_misc_task", None)  # private, hence looked up defensively
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
