"""MQTT frequency source: payload parsing, and a round trip through the real broker.

The broker test needs a broker at 127.0.0.1:1883 (and the optional aiomqtt package);
it is skipped when either is missing, unless CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

import orjson
import pytest

from evflex.grid.mqtt import MqttSource, parse_payload
from evflex.grid.samples import FrequencySample

BROKER = ("127.0.0.1", 1883)


def test_parse_payload_numbers_and_iso() -> None:
    assert parse_payload(b'{"ts": 1700000000.5, "hz": 49.97}') == FrequencySample(
        1700000000.5, 49.97
    )
    iso = parse_payload('{"ts": "2023-11-14T22:13:20Z", "hz": "50.02"}')
    assert iso == FrequencySample(1700000000.0, 50.02)


@pytest.mark.parametrize(
    "payload", [b"not json", b"[]", b'{"ts": 1}', b'{"ts": "yesterday", "hz": 50}', b'{"hz": 1}']
)
def test_parse_payload_rejects_malformed(payload: bytes) -> None:
    assert parse_payload(payload) is None


def _require_broker() -> None:
    reason = None
    try:
        import aiomqtt  # noqa: F401
    except ImportError:
        reason = "aiomqtt not installed (optional dependency of evflex.grid.mqtt)"
    if reason is None:
        try:
            socket.create_connection(BROKER, timeout=0.5).close()
        except OSError as exc:
            reason = f"no MQTT broker at {BROKER[0]}:{BROKER[1]} ({exc})"
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: MQTT tests must run)")
        pytest.skip(reason)


async def test_round_trip_through_real_broker() -> None:
    _require_broker()
    import aiomqtt

    topic = f"evflex/test/{uuid.uuid4().hex}/frequency"
    source = MqttSource(*BROKER, topic=topic)
    received: list[FrequencySample] = []

    async def consume() -> None:
        async for sample in source:
            received.append(sample)
            if len(received) >= 3:
                return

    consumer = asyncio.create_task(consume())
    async with aiomqtt.Client(*BROKER) as pub:
        # publish until the subscriber (which connects on its own) has seen 3 samples
        for k in range(50):
            if consumer.done():
                break
            hz = 49.9 if k % 7 else 50.1
            await pub.publish(topic, orjson.dumps({"ts": 1000.0 + k, "hz": hz}))
            await pub.publish(topic, b"garbage")  # must be skipped, not end the feed
            await asyncio.sleep(0.1)
    try:
        await asyncio.wait_for(consumer, timeout=2.0)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    assert len(received) == 3
    assert [s.ts for s in received] == sorted(s.ts for s in received)
    assert all(s.freq_hz in (49.9, 50.1) for s in received)
