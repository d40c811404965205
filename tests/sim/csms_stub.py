"""A minimal CSMS on loopback for the simulator's protocol tests.

It records every frame, validates every station-initiated CALL payload and every
CALLRESULT the stations send against the official OCPP JSON schemas (the ones
shipped in the `ocpp` package), answers station calls with minimal valid
responses, and can send CALLs to a station and await the answer. It is written
on picows, like the simulator, and knows nothing of evflex.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import pathlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastjsonschema
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

import ocpp

_SCHEMAS = pathlib.Path(ocpp.__file__).parent


def _strip_multiple_of(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("multipleOf", None)  # binary floats make 0.1-steps fail spuriously
        for value in node.values():
            _strip_multiple_of(value)
    elif isinstance(node, list):
        for value in node:
            _strip_multiple_of(value)


@functools.cache
def validator(version: str, name: str) -> Callable[[Any], Any]:
    folder = "v16" if version == "ocpp1.6" else "v201"
    schema = json.loads((_SCHEMAS / folder / "schemas" / f"{name}.json").read_text())
    schema.pop("$id", None)
    _strip_multiple_of(schema)
    return fastjsonschema.compile(schema)


def request_schema(version: str, action: str) -> str:
    return action if version == "ocpp1.6" else f"{action}Request"


def now_ts() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Conn:
    station_id: str
    version: str
    authorization: str | None
    transport: WSTransport | None = None
    pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)


class StubListener(WSListener):
    def __init__(self, stub: CsmsStub, conn: Conn) -> None:
        self.stub = stub
        self.conn = conn

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.conn.transport = transport
        self.stub.conns[self.conn.station_id] = self.conn
        self.stub.connects[self.conn.station_id] += 1
        self.stub.changed.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.stub.conns.get(self.conn.station_id) is self.conn:
            del self.stub.conns[self.conn.station_id]
        for fut in self.conn.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("station disconnected"))
        self.stub.changed.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.stub.on_message(self.conn, frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class CsmsStub:
    """Records frames per station; `responses` overrides answers per action."""

    def __init__(self, boot_status: str = "Accepted", heartbeat_s: int = 300) -> None:
        self.boot_status = boot_status
        self.heartbeat_s = heartbeat_s
        self.conns: dict[str, Conn] = {}
        self.connects: dict[str, int] = defaultdict(int)
        self.calls: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.errors: list[str] = []
        self.responses: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self._tx_ids = itertools.count(1)
        self.port = 0

    async def start(self) -> str:
        self._server = await ws_create_server(self._on_upgrade, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def stop(self) -> None:
        for conn in list(self.conns.values()):
            if conn.transport is not None:
                conn.transport.disconnect()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _on_upgrade(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        station_id = request.path.decode().rsplit("/", 1)[-1]
        version = request.headers.get("Sec-WebSocket-Protocol", "")
        conn = Conn(station_id, version, request.headers.get("Authorization"))
        response = WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Protocol": version}
        )
        return WSUpgradeResponseWithListener(response, StubListener(self, conn))

    # -- inbound --------------------------------------------------------------------
    def on_message(self, conn: Conn, raw: bytes) -> None:
        msg = orjson.loads(raw)
        if msg[0] == 2:
            self._on_call(conn, msg[1], msg[2], msg[3])
        elif msg[0] in (3, 4):
            fut = conn.pending.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        self.changed.set()

    def _on_call(self, conn: Conn, msg_id: str, action: str, payload: dict[str, Any]) -> None:
        self.calls[conn.station_id].append((action, payload))
        self._validate(conn, request_schema(conn.version, action), payload)
        answer = self.responses.get(action, self._default)(action, payload)
        assert conn.transport is not None
        conn.transport.send(WSMsgType.TEXT, orjson.dumps([3, msg_id, answer]))

    def _validate(self, conn: Conn, schema: str, payload: dict[str, Any]) -> None:
        try:
            validator(conn.version, schema)(payload)
        except fastjsonschema.JsonSchemaException as exc:
            self.errors.append(f"{conn.station_id} {schema}: {exc} in {payload}")

    def _default(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "BootNotification":
            return {
                "status": self.boot_status,
                "currentTime": now_ts(),
                "interval": self.heartbeat_s,
            }
        if action == "Heartbeat":
            return {"currentTime": now_ts()}
        if action == "Authorize":
            key = "idTagInfo" if "idTag" in payload else "idTokenInfo"
            return {key: {"status": "Accepted"}}
        if action == "StartTransaction":
            return {"transactionId": next(self._tx_ids), "idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return {}

    # -- outbound -------------------------------------------------------------------
    async def call(
        self, station_id: str, action: str, payload: dict[str, Any], timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Send a CALL; return the CALLRESULT payload (validated) or raise on CALLERROR."""
        conn = self.conns[station_id]
        msg_id = str(next(self._ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[msg_id] = fut
        assert conn.transport is not None
        conn.transport.send(WSMsgType.TEXT, orjson.dumps([2, msg_id, action, payload]))
        msg = await asyncio.wait_for(fut, timeout_s)
        if msg[0] == 4:
            raise CallErrorReceived(msg[2], msg[3])
        self._validate(conn, f"{action}Response", msg[2])
        return dict(msg[2])

    # -- waiting ---------------------------------------------------------------------
    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for `condition` over received frames; AssertionError on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("condition not met in time")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def actions(self, station_id: str) -> list[str]:
        return [a for a, _ in self.calls[station_id]]

    def last(self, station_id: str, action: str) -> dict[str, Any]:
        return next(p for a, p in reversed(self.calls[station_id]) if a == action)

    @staticmethod
    def basic_password(header: str | None) -> str | None:
        if not header:
            return None
        return base64.b64decode(header.split(" ", 1)[1]).decode().split(":", 1)[1]


class CallErrorReceived(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
