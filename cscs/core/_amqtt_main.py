"""Child-process entry point of the embedded amqtt broker: ``python -m ... HOST PORT``."""

from __future__ import annotations

import asyncio
import logging
import sys

from amqtt.broker import Broker

from cscs.core.tasks import until_stop_signal

READY = "CSCS-BROKER-READY"


async def serve(host: str, port: int) -> None:
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    print(f"{READY} {host}:{port}", flush=True)
    await until_stop_signal()
    await broker.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    host, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(serve(host, port))


if __name__ == "__main__":
    main()
