"""Boot, heartbeat, status, authorization and notices, for OCPP 1.6J and 2.0.1."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from harness import V16, V201, running_gateway, ts
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from evflex.fleet.events import (
    StationBooted,
    StationNotice,
    StationSeen,
    StatusChanged,
)
from evflex.fleet.model import EvseStatus, Protocol


def _recent(value: str) -> bool:
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return abs(datetime.now(UTC) - at) < timedelta(seconds=10)


async def test_boot_v16_returns_interval_and_records_station() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(heartbeat_interval_s=42) as h,
        h.station("CP16", V16, boot=False) as cp,
    ):
        h.assert_fleet(connected=1, charging=0, power_w=0.0)
        assert h.fleet.stations["CP16"].booted_at is None
        response = await cp.boot(firmware="1.2.3", serial="SN-1")
        assert response.status == "Accepted"
        assert response.interval == 42
        assert _recent(response.current_time)
        booted = await h.wait_for(lambda e: isinstance(e, StationBooted))
        assert booted == StationBooted(
            "CP16", "Vendor", "Model-16", "1.2.3", "SN-1", None, booted.at
        )
        station = h.fleet.stations["CP16"]
        assert (station.vendor, station.model, station.firmware, station.serial) == (
            "Vendor",
            "Model-16",
            "1.2.3",
            "SN-1",
        )
        assert station.protocol is Protocol.OCPP16
        assert station.booted_at == booted.at
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_boot_v201_returns_interval_and_reason() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(heartbeat_interval_s=17) as h,
        h.station("CS201", V201, boot=False) as cs,
    ):
        response = await cs.boot(firmware="4.5", serial="SN-2", reason="RemoteReset")
        assert (response.status, response.interval) == ("Accepted", 17)
        assert _recent(response.current_time)
        booted = await h.wait_for(lambda e: isinstance(e, StationBooted))
        assert (booted.vendor, booted.model, booted.firmware, booted.serial) == (
            "Vendor",
            "Model-201",
            "4.5",
            "SN-2",
        )
        assert booted.reason == "RemoteReset"
        assert h.fleet.stations["CS201"].protocol is Protocol.OCPP201
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


@pytest.mark.parametrize("version", [V16, V201])
async def test_heartbeat_answers_current_time_and_marks_station_seen(version: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("HB", version) as cp:
        before = h.fleet.stations["HB"].last_seen
        module = call16 if version == V16 else call201
        response = await cp.call(module.Heartbeat())
        assert _recent(response.current_time)
        seen = await h.wait_for(lambda e: isinstance(e, StationSeen))
        assert h.fleet.stations["HB"].last_seen == seen.at
        assert before is not None and seen.at >= before


async def test_status_notification_v16_updates_evse_and_charging_count() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:

        async def status(connector: int, value: str, error: str = "NoError") -> None:
            mark = len(h.events)
            await cp.call(
                call16.StatusNotification(
                    connector_id=connector, error_code=error, status=value, timestamp=ts()
                )
            )
            await h.wait_for(lambda e: isinstance(e, StatusChanged), since=mark)

        await status(0, "Available")  # connector 0 is the station itself, not an outlet
        assert h.fleet.stations["CP"].evses == {}
        await status(1, "Preparing")
        assert h.fleet.stations["CP"].evses[1].status is EvseStatus.PREPARING
        h.assert_fleet(connected=1, charging=0, power_w=0.0)
        await status(1, "Charging")
        await status(2, "Charging")
        h.assert_fleet(connected=1, charging=2, power_w=0.0)
        await status(2, "Faulted", "GroundFailure")
        assert h.of_type(StatusChanged)[-1].error_code == "GroundFailure"
        assert h.fleet.stations["CP"].evses[2].status is EvseStatus.FAULTED
        h.assert_fleet(connected=1, charging=1, power_w=0.0)
        await status(1, "Available")
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_status_notification_v201_updates_evse() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        at = ts()
        await cs.call(
            call201.StatusNotification(
                timestamp=at, connector_status="Occupied", evse_id=2, connector_id=1
            )
        )
        changed = await h.wait_for(lambda e: isinstance(e, StatusChanged))
        assert (changed.evse_id, changed.connector_id, changed.status) == (
            2,
            1,
            EvseStatus.OCCUPIED,
        )
        assert changed.at == datetime.fromisoformat(at)
        evse = h.fleet.stations["CS"].evses[2]
        assert (evse.status, evse.status_at) == (EvseStatus.OCCUPIED, changed.at)
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


@pytest.mark.parametrize("version", [V16, V201])
@pytest.mark.parametrize(("token", "expected"), [("TAG-1", "Accepted"), ("BLOCKED", "Blocked")])
async def test_authorize(version: str, token: str, expected: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("AU", version) as cp:
        if version == V16:
            response = await cp.call(call16.Authorize(id_tag=token))
            assert response.id_tag_info == {"status": expected}
        else:
            response = await cp.call(
                call201.Authorize(id_token={"id_token": token, "type": "ISO14443"})
            )
            assert response.id_token_info == {"status": expected}


@pytest.mark.parametrize("version", [V16, V201])
async def test_data_transfer_is_unknown_vendor_and_noticed(version: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("DT", version) as cp:
        if version == V16:
            response = await cp.call(call16.DataTransfer(vendor_id="com.acme", data="x"))
        else:
            response = await cp.call(call201.DataTransfer(vendor_id="com.acme", data="x"))
        assert response.status == "UnknownVendorId"
        notice = await h.wait_for(lambda e: isinstance(e, StationNotice))
        assert (notice.station_id, notice.kind) == ("DT", "data_transfer")
        assert notice.data["vendorId"] == "com.acme"


async def test_v201_notices() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("N", V201) as cs:
        report = [
            {
                "component": {"name": "SmartChargingCtrlr"},
                "variable": {"name": "Enabled"},
                "variable_attribute": [{"value": "true"}],
            }
        ]
        sent = [
            (
                call201.NotifyReport(request_id=7, generated_at=ts(), seq_no=0, report_data=report),
                "report",
                {"requestId": 7},
            ),
            (
                call201.SecurityEventNotification(type="TamperDetectionActivated", timestamp=ts()),
                "security_event",
                {"type": "TamperDetectionActivated"},
            ),
            (
                call201.FirmwareStatusNotification(status="Installed", request_id=3),
                "firmware_status",
                {"status": "Installed", "requestId": 3},
            ),
        ]
        for message, kind, fields in sent:
            mark = len(h.events)
            assert await cs.call(message) is not None
            notice = await h.wait_for(lambda e: isinstance(e, StationNotice), since=mark)
            assert notice.kind == kind
            assert fields.items() <= notice.data.items()
        reported = h.of_type(StationNotice)[0].data["reportData"][0]
        assert reported["variable"] == {"name": "Enabled"}


async def test_v16_notices() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("N", V16) as cp:
        sent = [
            (call16.FirmwareStatusNotification(status="Downloaded"), "firmware_status"),
            (call16.DiagnosticsStatusNotification(status="Uploaded"), "diagnostics_status"),
            (
                call16.SecurityEventNotification(
                    type="SettingSystemTime", timestamp=ts(), tech_info=None
                ),
                "security_event",
            ),
        ]
        for message, kind in sent:
            mark = len(h.events)
            await cp.call(message)
            notice = await h.wait_for(lambda e: isinstance(e, StationNotice), since=mark)
            assert notice.kind == kind
        assert [n.data.get("status") for n in h.of_type(StationNotice)[:2]] == [
            "Downloaded",
            "Uploaded",
        ]


async def test_v16_timestamp_without_offset_is_taken_as_utc() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        await cp.call(
            call16.StatusNotification(
                connector_id=1,
                error_code="NoError",
                status="Available",
                timestamp="2030-01-01T08:00:00",
            )
        )
        changed = h.of_type(StatusChanged)[-1]
        assert changed.at == datetime(2030, 1, 1, 8, tzinfo=UTC)
