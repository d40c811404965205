"""Test stations on the `ocpp` library's client classes, with `@on(...)` handlers for every
CSMS-initiated call evflex can send (the Home Assistant OCPP integration's test style).

On top of the library they record every CALL frame exactly as it arrived, can hold an
answer back (`hold`), never answer (`silent`), answer with a CALLERROR (`fail`) or with
another status (`status`), and count how many of our CALLs they had open at once
(`max_outstanding`).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from typing import Any

import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201


class _StationMixin:
    """Recording and answer control shared by the 1.6 and 2.0.1 test stations."""

    def _setup(self) -> None:
        self.frames: list[list[Any]] = []  # every frame we received, parsed, in order
        self.calls: list[list[Any]] = []  # the CALL frames among them
        self.raw_calls: list[str] = []  # the CALL frames exactly as they arrived
        self._incoming: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.status: dict[str, str] = {}  # action -> status to answer with
        self.fail: dict[str, OCPPError] = {}  # action -> CALLERROR to answer with
        self.silent: set[str] = set()  # actions never answered
        self.holds: dict[str, asyncio.Event] = {}  # actions answered once the event is set
        self.outstanding = 0
        self.max_outstanding = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answers: dict[str, asyncio.Future[None]] = {}

    async def route_message(self, raw_msg: str) -> None:  # type: ignore[override]
        msg = json.loads(raw_msg)
        self.frames.append(msg)
        if isinstance(msg, list) and msg and msg[0] == 2:
            self.calls.append(msg)
            self.raw_calls.append(raw_msg)
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            self._incoming.put_nowait(msg)
            if msg[2] in self.silent:
                return
            # Handle each CALL in its own task so a held answer does not stop this
            # station from receiving the answers to its own calls meanwhile.
            task = asyncio.create_task(super().route_message(raw_msg))  # type: ignore[misc]
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        await super().route_message(raw_msg)  # type: ignore[misc]

    async def _send(self, message: str) -> None:  # type: ignore[override]
        answer = message.startswith(("[3", "[4"))
        if answer:
            self.outstanding -= 1
        await super()._send(message)  # type: ignore[misc]
        if answer:
            self._answer_future(json.loads(message)[1]).set_result(None)

    def _answer_future(self, message_id: str) -> asyncio.Future[None]:
        if message_id not in self._answers:
            self._answers[message_id] = asyncio.get_running_loop().create_future()
        return self._answers[message_id]

    async def answered(self, message_id: str, timeout_s: float = 5.0) -> None:
        """Wait until this station has written its answer to our CALL `message_id`."""
        await asyncio.wait_for(asyncio.shield(self._answer_future(message_id)), timeout_s)

    async def expect_call(self, action: str | None = None, timeout_s: float = 5.0) -> list[Any]:
        """The next CALL this station received; fails if it is not `action`."""
        frame = await asyncio.wait_for(self._incoming.get(), timeout_s)
        if action is not None:
            assert frame[2] == action, f"expected a {action} CALL, got {frame}"
        return frame

    def hold(self, action: str) -> asyncio.Event:
        event = self.holds[action] = asyncio.Event()
        return event

    async def _answer(self, action: str, default: str = "Accepted") -> str:
        gate = self.holds.get(action)
        if gate is not None:
            await gate.wait()
        error = self.fail.get(action)
        if error is not None:
            raise error
        return self.status.get(action, default)

    async def serve(self) -> None:
        with suppress(websockets.ConnectionClosed):
            await self.start()  # type: ignore[attr-defined]

    async def stop_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Station16(_StationMixin, ChargePoint16):
    """An OCPP 1.6J charge point answering every CSMS call evflex can send."""

    def __init__(self, station_id: str, connection: Any) -> None:
        super().__init__(station_id, connection, response_timeout=5)
        self._setup()

    async def boot(self, **fields: Any) -> Any:
        return await self.call(
            call16.BootNotification(
                charge_point_model=fields.get("model", "Model-16"),
                charge_point_vendor=fields.get("vendor", "Vendor"),
                firmware_version=fields.get("firmware"),
                charge_point_serial_number=fields.get("serial"),
            )
        )

    @on("RemoteStartTransaction")
    async def on_remote_start(self, **kw: Any) -> Any:
        return result16.RemoteStartTransaction(status=await self._answer("RemoteStartTransaction"))

    @on("RemoteStopTransaction")
    async def on_remote_stop(self, **kw: Any) -> Any:
        return result16.RemoteStopTransaction(status=await self._answer("RemoteStopTransaction"))

    @on("Reset")
    async def on_reset(self, **kw: Any) -> Any:
        return result16.Reset(status=await self._answer("Reset"))

    @on("UnlockConnector")
    async def on_unlock(self, **kw: Any) -> Any:
        return result16.UnlockConnector(status=await self._answer("UnlockConnector", "Unlocked"))

    @on("ChangeAvailability")
    async def on_change_availability(self, **kw: Any) -> Any:
        return result16.ChangeAvailability(status=await self._answer("ChangeAvailability"))

    @on("ChangeConfiguration")
    async def on_change_configuration(self, key: str, value: str, **kw: Any) -> Any:
        status = await self._answer("ChangeConfiguration")
        return result16.ChangeConfiguration(status=self.status.get(f"key:{key}", status))

    @on("GetConfiguration")
    async def on_get_configuration(self, key: list[str] | None = None, **kw: Any) -> Any:
        await self._answer("GetConfiguration")
        known = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60"}
        wanted = key if key is not None else list(known)
        return result16.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": False, "value": known[k]} for k in wanted if k in known
            ],
            unknown_key=[k for k in wanted if k not in known] or None,
        )

    @on("TriggerMessage")
    async def on_trigger(self, **kw: Any) -> Any:
        return result16.TriggerMessage(status=await self._answer("TriggerMessage"))

    @on("SetChargingProfile")
    async def on_set_profile(self, **kw: Any) -> Any:
        return result16.SetChargingProfile(status=await self._answer("SetChargingProfile"))

    @on("ClearChargingProfile")
    async def on_clear_profile(self, **kw: Any) -> Any:
        return result16.ClearChargingProfile(status=await self._answer("ClearChargingProfile"))

    @on("GetCompositeSchedule")
    async def on_composite(self, connector_id: int, **kw: Any) -> Any:
        status = await self._answer("GetCompositeSchedule")
        return result16.GetCompositeSchedule(status=status, connector_id=connector_id)


class Station201(_StationMixin, ChargePoint201):
    """An OCPP 2.0.1 charging station answering every CSMS call evflex can send."""

    def __init__(self, station_id: str, connection: Any) -> None:
        super().__init__(station_id, connection, response_timeout=5)
        self._setup()

    async def boot(self, **fields: Any) -> Any:
        cs: dict[str, Any] = {
            "model": fields.get("model", "Model-201"),
            "vendor_name": fields.get("vendor", "Vendor"),
        }
        if "firmware" in fields:
            cs["firmware_version"] = fields["firmware"]
        if "serial" in fields:
            cs["serial_number"] = fields["serial"]
        return await self.call(
            call201.BootNotification(charging_station=cs, reason=fields.get("reason", "PowerUp"))
        )

    @on("RequestStartTransaction")
    async def on_request_start(self, **kw: Any) -> Any:
        status = await self._answer("RequestStartTransaction")
        return result201.RequestStartTransaction(status=status)

    @on("RequestStopTransaction")
    async def on_request_stop(self, **kw: Any) -> Any:
        return result201.RequestStopTransaction(status=await self._answer("RequestStopTransaction"))

    @on("Reset")
    async def on_reset(self, **kw: Any) -> Any:
        return result201.Reset(status=await self._answer("Reset"))

    @on("UnlockConnector")
    async def on_unlock(self, **kw: Any) -> Any:
        return result201.UnlockConnector(status=await self._answer("UnlockConnector", "Unlocked"))

    @on("ChangeAvailability")
    async def on_change_availability(self, **kw: Any) -> Any:
        return result201.ChangeAvailability(status=await self._answer("ChangeAvailability"))

    @on("SetVariables")
    async def on_set_variables(self, set_variable_data: list[dict[str, Any]], **kw: Any) -> Any:
        status = await self._answer("SetVariables")
        return result201.SetVariables(
            set_variable_result=[
                {
                    "attribute_status": self.status.get(f"var:{d['variable']['name']}", status),
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in set_variable_data
            ]
        )

    @on("GetVariables")
    async def on_get_variables(self, get_variable_data: list[dict[str, Any]], **kw: Any) -> Any:
        status = await self._answer("GetVariables")
        return result201.GetVariables(
            get_variable_result=[
                {
                    "attribute_status": self.status.get(f"var:{d['variable']['name']}", status),
                    "attribute_value": "42",
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in get_variable_data
            ]
        )

    @on("GetBaseReport")
    async def on_base_report(self, **kw: Any) -> Any:
        return result201.GetBaseReport(status=await self._answer("GetBaseReport"))

    @on("TriggerMessage")
    async def on_trigger(self, **kw: Any) -> Any:
        return result201.TriggerMessage(status=await self._answer("TriggerMessage"))

    @on("SetChargingProfile")
    async def on_set_profile(self, **kw: Any) -> Any:
        return result201.SetChargingProfile(status=await self._answer("SetChargingProfile"))

    @on("ClearChargingProfile")
    async def on_clear_profile(self, **kw: Any) -> Any:
        return result201.ClearChargingProfile(status=await self._answer("ClearChargingProfile"))

    @on("GetCompositeSchedule")
    async def on_composite(self, **kw: Any) -> Any:
        return result201.GetCompositeSchedule(status=await self._answer("GetCompositeSchedule"))
