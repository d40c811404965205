"""Minimal OCPP-J "echo" servers: parse each CALL with orjson, answer a CallResult.

Two transports with identical logic, to measure what the transport alone costs
(benchmarks/transport_compare.py) and to test the load generator without a real
server. No auth, no validation, no state beyond a transaction counter.

    python -m evflex.bench.echo --impl picows|websockets --port 9000
prints "ready <port>" on stdout once listening, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

SUBPROTOCOL = "ocpp1.6"
IMPLEMENTATIONS = ("picows", "websockets")
_tx_ids = itertools.count(1)


def _boot(_: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"status": "Accepted", "currentTime": now, "interval": 300}


def _start(_: dict[str, Any]) -> dict[str, Any]:
    return {"transactionId": next(_tx_ids), "idTagInfo": {"status": "Accepted"}}


_ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "BootNotification": _boot,
    "StartTransaction": _start,
}
_EMPTY: dict[str, Any] = {}


def answer(raw: bytes | memoryview | str) -> bytes | None:
    """The CallResult for a CALL frame; None for anything else (answers, garbage)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, list) or len(msg) != 4 or msg[0] != 2:
        return None
    handler = _ANSWERS.get(msg[2])
    return orjson.dumps([3, msg[1], handler(msg[3]) if handler is not None else _EMPTY])


class _EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            reply = answer(frame.get_payload_as_memoryview())
            if reply is not None:
                transport.send(WSMsgType.TEXT, reply)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def _on_upgrade(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
    response = WSUpgradeResponse.create_101_response(
        extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL}
    )
    return WSUpgradeResponseWithListener(response, _EchoListener())


async def start_picows(host: str, port: int) -> asyncio.Server:
    server: asyncio.Server = await ws_create_server(
        _on_upgrade, host, port, read_buffer_init_size=1024, backlog=4096
    )
    return server


async def start_websockets(host: str, port: int) -> Any:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.typing import Subprotocol

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            reply = answer(raw)
            if reply is not None:
                await ws.send(reply, text=True)

    # compression off and no keep-alive pings: the same work as the picows variant
    return await serve(
        handler,
        host,
        port,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        compression=None,
        ping_interval=None,
        backlog=4096,
    )


def bound_port(server: Any) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


async def serve_until_signal(impl: str, host: str, port: int) -> None:
    server = await (start_picows if impl == "picows" else start_websockets)(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"ready {bound_port(server)}\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, default="picows")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on Windows
        asyncio.run(serve_until_signal(args.impl, args.host, args.port))
    else:
        uvloop.run(serve_until_signal(args.impl, args.host, args.port))


if __name__ == "__main__":
    main()
