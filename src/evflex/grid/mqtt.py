"""Frequency from an MQTT topic carrying JSON `{"ts": <epoch s | ISO 8601>, "hz": <float>}`.

Needs the optional `aiomqtt` package, imported only when the source is iterated.
The source reconnects after broker errors and never ends by itself; a silent or
dead broker shows up as a stale feed in `grid.health`, which is where the engine
decides its safe state.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from evflex.grid.replay import parse_ts
from evflex.grid.samples import FrequencySample

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "evflex/grid/frequency"


def parse_payload(payload: bytes | bytearray | str) -> FrequencySample | None:
    """A sample from one message, or None (logged) when it is not `{"ts":..., "hz":...}`."""
    try:
        data = orjson.loads(payload)
        ts = data["ts"]
        return FrequencySample(
            parse_ts(ts) if isinstance(ts, str) else float(ts), float(data["hz"])
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring malformed frequency message: %s", exc)
        return None


@dataclass(slots=True)
class MqttSource:
    """A `FrequencySource` subscribed to `topic` on the broker at `host`:`port`."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = DEFAULT_TOPIC
    username: str | None = None
    password: str | None = None
    reconnect_s: float = 2.0
    qos: int = 0

    def __aiter__(self) -> AsyncIterator[FrequencySample]:
        return self._run()

    async def _run(self) -> AsyncIterator[FrequencySample]:
        # optional dependency, imported by name so type checking and installs without
        # it keep working; aiomqtt ≥ 2 API: Client(host, port, ...), client.messages
        aiomqtt: Any = importlib.import_module("aiomqtt")

        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, username=self.username, password=self.password
                ) as client:
                    await client.subscribe(self.topic, qos=self.qos)
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray | str):
                            continue  # aiomqtt only decodes to int/float/None for local publishes
                        sample = parse_payload(payload)
                        if sample is not None:
                            yield sample
            except aiomqtt.MqttError as exc:
                log.warning(
                    "MQTT %s:%s lost (%s); retrying in %.1fs",
                    self.host,
                    self.port,
                    exc,
                    self.reconnect_s,
                )
                await asyncio.sleep(self.reconnect_s)
