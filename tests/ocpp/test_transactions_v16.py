"""OCPP 1.6J transactions and meter values, with the fleet aggregates checked after each step.

The gateway emits a frame's events before it writes the CALLRESULT, so once the
station's `call()` has returned, the fleet state reflects that frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

from harness import V16, Station16, running_gateway, ts
from ocpp.v16 import call

from evflex.fleet.events import (
    MeterSampled,
    StationDisconnected,
    TransactionStarted,
    TransactionStopped,
)
from evflex.fleet.model import EvseStatus
from evflex.ocpp import txids


def sv(value: float | str, measurand: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"value": str(value), **extra}
    if measurand is not None:
        out["measurand"] = measurand
    return out


def meter(
    connector: int, values: list[dict[str, Any]], tx: int | None = None, at: float = 0.0
) -> call.MeterValues:
    return call.MeterValues(
        connector_id=connector,
        transaction_id=tx,
        meter_value=[{"timestamp": ts(at), "sampled_value": values}],
    )


async def status(cp: Station16, connector: int, value: str) -> None:
    await cp.call(
        call.StatusNotification(
            connector_id=connector, error_code="NoError", status=value, timestamp=ts()
        )
    )


async def test_full_transaction_with_aggregates_after_each_step() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        h.assert_fleet(connected=1, charging=0, power_w=0.0)
        await status(cp, 1, "Preparing")
        h.assert_fleet(connected=1, charging=0, power_w=0.0)

        started = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp=ts())
        )
        assert started.id_tag_info == {"status": "Accepted"}
        assert isinstance(started.transaction_id, int)
        tx_id = started.transaction_id
        evse = h.fleet.stations["CP"].evses[1]
        assert evse.transaction is not None
        assert (evse.transaction.transaction_id, evse.transaction.id_token) == (str(tx_id), "TAG-1")
        assert evse.transaction.meter_start_wh == 1000.0
        # its id's JSON is ready for limit frames before any grid step needs it
        assert txids.TX16_JSON[str(tx_id)] == b"%d" % tx_id
        h.assert_fleet(connected=1, charging=0, power_w=0.0)

        await status(cp, 1, "Charging")
        h.assert_fleet(connected=1, charging=1, power_w=0.0)

        await cp.call(
            meter(
                1,
                [
                    sv(7360, "Power.Active.Import", unit="W"),
                    sv(2500, "Energy.Active.Import.Register", unit="Wh"),
                    sv(40, "SoC", unit="Percent"),
                ],
                tx=tx_id,
            )
        )
        assert (evse.power_w, evse.energy_wh, evse.soc_pct) == (7360.0, 2500.0, 40.0)
        sample = h.of_type(MeterSampled)[-1]
        assert (sample.evse_id, sample.transaction_id) == (1, str(tx_id))
        h.assert_fleet(connected=1, charging=1, power_w=7360.0)

        # kW and kWh are converted
        await cp.call(
            meter(
                1,
                [
                    sv(11, "Power.Active.Import", unit="kW"),
                    sv(3.5, "Energy.Active.Import.Register", unit="kWh"),
                ],
                tx=tx_id,
                at=1,
            )
        )
        assert (evse.power_w, evse.energy_wh) == (11000.0, 3500.0)
        h.assert_fleet(connected=1, charging=1, power_w=11000.0)

        stopped = await cp.call(
            call.StopTransaction(
                meter_stop=4000,
                timestamp=ts(2),
                transaction_id=tx_id,
                reason="EVDisconnected",
                id_tag="TAG-1",
            )
        )
        assert stopped.id_tag_info == {"status": "Accepted"}
        event = h.of_type(TransactionStopped)[-1]
        assert (event.transaction_id, event.meter_stop_wh, event.reason) == (
            str(tx_id),
            4000.0,
            "EVDisconnected",
        )
        assert evse.transaction is None
        assert evse.status is EvseStatus.FINISHING
        h.assert_fleet(connected=1, charging=0, power_w=0.0)

        await status(cp, 1, "Available")
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_two_stations_sum_and_stop_one() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("A", V16) as a, h.station("B", V16) as b:
            tx = {}
            for cp, power in ((a, 7000), (b, 3000)):
                await status(cp, 1, "Charging")
                started = await cp.call(
                    call.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=ts())
                )
                tx[cp.id] = started.transaction_id
                await cp.call(meter(1, [sv(power, "Power.Active.Import", unit="W")], tx=tx[cp.id]))
            assert tx["A"] != tx["B"]
            h.assert_fleet(connected=2, charging=2, power_w=10000.0)
            await a.call(
                call.StopTransaction(meter_stop=10, timestamp=ts(1), transaction_id=tx["A"])
            )
            h.assert_fleet(connected=2, charging=1, power_w=3000.0)
        for station_id in ("A", "B"):
            await h.wait_for(
                lambda e, s=station_id: isinstance(e, StationDisconnected) and e.station_id == s
            )
        # state outlives the connection: B is still known to be drawing 3 kW
        h.assert_fleet(connected=0, charging=1, power_w=3000.0)


async def test_per_phase_power_is_summed_and_total_preferred() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        phases = [
            sv(2300, "Power.Active.Import", unit="W", phase="L1"),
            sv(2400, "Power.Active.Import", unit="W", phase="L2"),
            sv(2.5, "Power.Active.Import", unit="kW", phase="L3"),
        ]
        await cp.call(meter(1, phases))
        assert h.fleet.stations["CP"].evses[1].power_w == 7200.0
        h.assert_fleet(connected=1, charging=0, power_w=7200.0)
        await cp.call(meter(1, [*phases, sv(7000, "Power.Active.Import", unit="W")], at=1))
        assert h.fleet.stations["CP"].evses[1].power_w == 7000.0
        h.assert_fleet(connected=1, charging=0, power_w=7000.0)


async def test_export_power_is_negative() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("V2G", V16) as cp:
        await cp.call(meter(1, [sv(5000, "Power.Active.Import", unit="W")]))
        await cp.call(meter(2, [sv(1000, "Power.Active.Import", unit="W")]))
        h.assert_fleet(connected=1, charging=0, power_w=6000.0)
        await cp.call(
            meter(
                1,
                [
                    sv(0, "Power.Active.Import", unit="W"),
                    sv(3.5, "Power.Active.Export", unit="kW"),
                ],
                at=1,
            )
        )
        assert h.fleet.stations["V2G"].evses[1].power_w == -3500.0
        h.assert_fleet(connected=1, charging=0, power_w=-2500.0)


async def test_blocked_tag_still_records_transaction_with_new_id() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        first = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0, timestamp=ts())
        )
        second = await cp.call(
            call.StartTransaction(connector_id=2, id_tag="BLOCKED", meter_start=0, timestamp=ts())
        )
        assert second.id_tag_info == {"status": "Blocked"}
        assert second.transaction_id != first.transaction_id
        started = h.of_type(TransactionStarted)
        assert [(e.evse_id, e.id_token) for e in started] == [(1, "TAG"), (2, "BLOCKED")]
        transaction = h.fleet.stations["CP"].evses[2].transaction
        assert transaction is not None
        assert transaction.transaction_id == str(second.transaction_id)


async def test_stop_transaction_data_is_attributed_to_the_transaction_evse() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        started = await cp.call(
            call.StartTransaction(connector_id=2, id_tag="TAG", meter_start=0, timestamp=ts())
        )
        await cp.call(meter(2, [sv(4000, "Power.Active.Import", unit="W")], started.transaction_id))
        stopped = await cp.call(
            call.StopTransaction(
                meter_stop=9000,
                timestamp=ts(2),
                transaction_id=started.transaction_id,
                transaction_data=[
                    {
                        "timestamp": ts(1),
                        "sampled_value": [sv(9, "Energy.Active.Import.Register", unit="kWh")],
                    }
                ],
            )
        )
        assert stopped.id_tag_info is None  # no idTag sent, so no idTagInfo
        sample = h.of_type(MeterSampled)[-1]
        assert (sample.evse_id, sample.transaction_id) == (0, str(started.transaction_id))
        evse = h.fleet.stations["CP"].evses[2]
        assert (evse.energy_wh, evse.power_w, evse.transaction) == (9000.0, 0.0, None)
        assert 0 not in h.fleet.stations["CP"].evses
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_main_meter_on_connector_0_is_not_an_outlet() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        await cp.call(meter(0, [sv(22000, "Power.Active.Import", unit="W")]))
        assert h.of_type(MeterSampled)[-1].evse_id == 0
        assert h.fleet.stations["CP"].evses == {}
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_default_measurand_and_signed_values() -> None:
    """No measurand: Energy.Active.Import.Register in Wh (1.6 §7.45); signed data is skipped."""
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        await cp.call(meter(1, [sv(1234)]))
        sample = h.of_type(MeterSampled)[-1]
        assert (sample.values[0].measurand, sample.values[0].unit) == (
            "Energy.Active.Import.Register",
            "Wh",
        )
        assert h.fleet.stations["CP"].evses[1].energy_wh == 1234.0
        count = len(h.of_type(MeterSampled))
        await cp.call(
            meter(1, [sv("c2lnbmVk", "Energy.Active.Import.Register", format="SignedData")])
        )
        assert len(h.of_type(MeterSampled)) == count
        assert h.fleet.stations["CP"].evses[1].energy_wh == 1234.0
