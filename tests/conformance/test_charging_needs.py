"""OCPP 2.0.1 K17 NotifyEVChargingNeeds: the EV's needs reach the fleet state.

The allocator needs each session's departure time and energy need to keep drivers
whole (issue 5, point 3); with ISO 15118 the EV states them in NotifyEVChargingNeeds.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import websockets
from harness import V201, running_gateway

from evflex.control.units import session_from_needs

BOOT201 = {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"}


async def call(ws: websockets.ClientConnection, message_id: str, action: str, payload: Any) -> Any:
    await ws.send(json.dumps([2, message_id, action, payload]))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply[:2] == [3, message_id], reply
    return reply[2]


async def test_ac_needs_become_the_evse_session_needs() -> None:
    """OCPP 2.0.1 K17.FR.01 (paraphrased): the CSMS SHALL answer NotifyEVChargingNeeds
    with a status (Accepted: a schedule will be provided; here the needs are taken into
    account by the grid allocation). acChargingParameters.energyAmount is in Wh,
    evMaxCurrent in A per phase; departureTime is when the EV leaves.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CS")
        async with h.connect("CS", V201) as ws:
            await call(ws, "b", "BootNotification", BOOT201)
            answer = await call(
                ws,
                "n",
                "NotifyEVChargingNeeds",
                {
                    "evseId": 1,
                    "chargingNeeds": {
                        "requestedEnergyTransfer": "AC_three_phase",
                        "departureTime": "2030-01-01T18:00:00Z",
                        "acChargingParameters": {
                            "energyAmount": 20000,
                            "evMinCurrent": 6,
                            "evMaxCurrent": 16,
                            "evMaxVoltage": 400,
                        },
                    },
                },
            )
            assert answer == {"status": "Accepted"}
        needs = h.fleet.stations["CS"].evses[1].needs
        assert needs is not None and needs.source == "ev"
        assert needs.departure_at == datetime(2030, 1, 1, 18, tzinfo=UTC)
        assert needs.energy_wh == 20_000.0
        assert needs.ev_max_power_w == 16 * 230.0 * 3
        info = session_from_needs(needs, register_wh=None)
        assert info.departure_ts == needs.departure_at.timestamp()
        assert info.energy_need_wh == 20_000.0


async def test_missing_charging_needs_is_an_occurrence_violation() -> None:
    """OCPP-J §4.2.3: a payload missing a required field gets a CallError
    (OccurrenceConstraintViolation) and changes nothing."""
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CS")
        async with h.connect("CS", V201) as ws:
            await call(ws, "b", "BootNotification", BOOT201)
            await ws.send(json.dumps([2, "n", "NotifyEVChargingNeeds", {"evseId": 1}]))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply[0] == 4 and reply[1] == "n"
            assert reply[2] in ("OccurrenceConstraintViolation", "FormationViolation")
        evse = h.fleet.stations["CS"].evses.get(1)
        assert evse is None or evse.needs is None
