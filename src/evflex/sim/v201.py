"""An OCPP 2.0.1 station: TransactionEvents, the device model, monitors, and its answers.

Telemetry follows the PowerBank rules for 2.0.1: the power of each EVSE is
measured every second; Delta and Periodic monitors on EVSE.Power raise
NotifyEvent, and TransactionEvent(Updated) carries the TxUpdatedMeasurands
every SampledDataCtrlr.TxUpdatedInterval seconds.
"""

from __future__ import annotations

import random
import time
from typing import Any

from evflex.sim.catalogue import Kind, Model
from evflex.sim.clock import timestamp
from evflex.sim.devicemodel import DeviceModel, Variable
from evflex.sim.evse import Evse, State, Transaction
from evflex.sim.faults import Fault
from evflex.sim.link import Context, OnResult, Payload
from evflex.sim.meter import LOCATIONS, UNITS, reading, readings, sampled_template
from evflex.sim.monitors import Monitor, Monitors, evaluate
from evflex.sim.sessions import SessionGenerator
from evflex.sim.station import Station, sample_due
from evflex.sim.v201_calls import HANDLERS

CONNECTOR_STATUS = {
    State.AVAILABLE: "Available",
    State.UNAVAILABLE: "Unavailable",
}
CHARGING_STATE = {
    State.CHARGING: "Charging",
    State.SUSPENDED_EV: "SuspendedEV",
    State.SUSPENDED_EVSE: "SuspendedEVSE",
    State.PLUGGED: "EVConnected",
    State.FINISHING: "EVConnected",
    State.AVAILABLE: "Idle",
    State.UNAVAILABLE: "Idle",
}
# Stop reasons in the station core → (triggerReason, stoppedReason)
STOP_REASONS = {
    "EVDisconnected": ("EVDeparted", "EVDisconnected"),
    "Remote": ("RemoteStop", "Remote"),
    "HardReset": ("ResetCommand", "ImmediateReset"),
    "SoftReset": ("ResetCommand", "Reboot"),
    "UnlockCommand": ("UnlockCommand", "Other"),
    "DeAuthorized": ("Deauthorized", "DeAuthorized"),
}


def connector_status(state: State) -> str:
    return CONNECTOR_STATUS.get(state, "Occupied")


class V201Station(Station):
    HANDLERS = HANDLERS
    __slots__ = ("_event_id", "_measurands", "_tx_interval", "boot_reason", "device", "monitors")

    def __init__(
        self,
        station_id: str,
        model: Model,
        ctx: Context,
        *,
        rng: random.Random,
        sessions: SessionGenerator | None,
        auth_header: str | None = None,
        fault: Fault = Fault.NONE,
    ) -> None:
        super().__init__(
            station_id, model, ctx, rng=rng, sessions=sessions, auth_header=auth_header, fault=fault
        )
        self.device = DeviceModel(
            model, station_id, interval_s=ctx.meter_interval_s, live=self._live_value
        )
        self.monitors = Monitors(model)
        self.boot_reason = "PowerUp"
        self._event_id = 0
        self.reload_settings()

    def _live_value(self, var: Variable) -> str:
        return f"{self.evses[var.evse - 1].power_w:.1f}"

    def reload_settings(self) -> None:
        """Re-read what the per-second path uses after SetVariables."""
        self._tx_interval = self.device.int("SampledDataCtrlr", "TxUpdatedInterval")
        self._measurands = self.device.members("SampledDataCtrlr", "TxUpdatedMeasurands")
        heartbeat = self.device.int("OCPPCommCtrlr", "HeartbeatInterval")
        if heartbeat > 0 and heartbeat != int(self.heartbeat_s):
            self.heartbeat_s = float(heartbeat)
            self.next_heartbeat = time.time() + self.heartbeat_s

    # -- station-initiated messages --------------------------------------------------
    def boot_payload(self) -> Payload:
        m = self.model
        return {
            "reason": self.boot_reason,
            "chargingStation": {
                "model": m.model,
                "vendorName": m.vendor,
                "firmwareVersion": m.firmware,
                "serialNumber": self.station_id[-25:],
            },
        }

    def on_booted(self, now: float) -> None:
        self.boot_reason = "PowerUp"
        self.device.assign("OCPPCommCtrlr", "HeartbeatInterval", str(int(self.heartbeat_s)))
        super().on_booted(now)

    def send_all_status(self) -> None:
        now = time.time()
        for evse in self.evses:
            self._status(evse, connector_status(evse.state), now)

    def _status(self, evse: Evse, status: str, now: float) -> None:
        self.call(
            "StatusNotification",
            {
                "timestamp": timestamp(now),
                "connectorStatus": status,
                "evseId": evse.id,
                "connectorId": 1,
            },
        )

    def on_state_change(self, evse: Evse, old: State, now: float) -> None:
        status = connector_status(evse.state)
        if status != connector_status(old):
            self._status(evse, status, now)
        tx = evse.tx
        if tx is not None and CHARGING_STATE[evse.state] != CHARGING_STATE[old]:
            self.transaction_event(evse, tx, now, "Updated", "ChargingStateChanged")

    # -- transactions ----------------------------------------------------------------
    def authorize_payload(self, id_tag: str) -> Payload:
        return {"idToken": {"idToken": id_tag, "type": "ISO14443"}}

    def authorized(self, response: Payload) -> bool:
        return bool(response.get("idTokenInfo", {}).get("status") == "Accepted")

    def start_transaction(
        self, evse: Evse, now: float, id_tag: str, remote_start_id: int | None = None
    ) -> None:
        tx = self.new_transaction(evse, now, id_tag)
        tx.remote_start_id = remote_start_id
        trigger = "RemoteStart" if remote_start_id is not None else "Authorized"
        self.transaction_event(evse, tx, now, "Started", trigger)
        self.notify_charging_needs(evse)

    def notify_charging_needs(self, evse: Evse) -> None:
        """K17: an ISO 15118 car states its departure, energy need and limits."""
        ev, m = evse.ev, self.model
        if ev is None or m.kind is Kind.BESS:
            return
        needs: dict[str, Any] = {"departureTime": timestamp(self.ctx.clock.wall(ev.departure))}
        energy = max(0, round(ev.energy_needed_wh))
        if m.kind is Kind.AC:
            phases = min(ev.phases, m.phases)
            needs["requestedEnergyTransfer"] = (
                "AC_three_phase" if phases == 3 else ("AC_single_phase")
            )
            needs["acChargingParameters"] = {
                "energyAmount": energy,
                "evMinCurrent": 6,
                "evMaxCurrent": max(6, int(ev.max_charge_w / (230.0 * ev.phases))),
                "evMaxVoltage": 400,
            }
        else:
            needs["requestedEnergyTransfer"] = "DC"
            needs["dcChargingParameters"] = {
                "evMaxCurrent": max(1, int(ev.max_charge_w / m.dc_voltage_v)),
                "evMaxVoltage": int(m.dc_voltage_v),
                "energyAmount": energy,
                "evMaxPower": int(ev.max_charge_w),
                "evEnergyCapacity": int(ev.capacity_wh),
                "stateOfCharge": int(100 * ev.soc),
            }
        self.call("NotifyEVChargingNeeds", {"evseId": evse.id, "chargingNeeds": needs})

    def stop_transaction(self, evse: Evse, now: float, reason: str) -> None:
        tx = self.end_transaction(evse)
        if tx is not None:
            trigger, stopped = STOP_REASONS.get(reason, ("AbnormalCondition", "Other"))
            self.transaction_event(evse, tx, now, "Ended", trigger, stopped)

    def transaction_event(
        self,
        evse: Evse,
        tx: Transaction,
        now: float,
        event: str,
        trigger: str,
        stopped: str | None = None,
    ) -> None:
        info: dict[str, Any] = {
            "transactionId": tx.local_id,
            "chargingState": CHARGING_STATE[evse.state],
        }
        if stopped is not None:
            info["stoppedReason"] = stopped
        if tx.remote_start_id is not None and event == "Started":
            info["remoteStartId"] = tx.remote_start_id
        payload: dict[str, Any] = {
            "eventType": event,
            "timestamp": timestamp(now),
            "triggerReason": trigger,
            "seqNo": tx.next_seq(),
            "transactionInfo": info,
        }
        if event == "Started":
            payload["evse"] = {"id": evse.id, "connectorId": 1}
            payload["idToken"] = {"idToken": tx.id_tag, "type": "ISO14443"}
        if event != "Updated" or trigger == "MeterValuePeriodic":
            payload["meterValue"] = [
                self._meter_value(evse, now, _CONTEXT[event], self._tx_measurands(event))
            ]
        if self.transport is None or self.boot != "accepted":
            payload["offline"] = True  # E04: generated while offline, delivered later
        answered = self._on_tx_response(evse, tx) if event == "Started" else None
        self.call("TransactionEvent", payload, answered, tx=True)

    def _tx_measurands(self, event: str) -> tuple[str, ...]:
        return self._measurands if event == "Updated" else ("Energy.Active.Import.Register",)

    def _on_tx_response(self, evse: Evse, tx: Transaction) -> OnResult:
        def answered(response: Payload) -> None:
            status = response.get("idTokenInfo", {}).get("status")
            if status not in (None, "Accepted") and evse.tx is tx:
                self.stop_transaction(evse, time.time(), "DeAuthorized")

        return answered

    def sample_interval(self) -> float:
        return float(self._tx_interval) if self._tx_interval > 0 else float("inf")

    def tx_key(self, tx: Transaction) -> str | None:
        return tx.local_id

    # -- telemetry ---------------------------------------------------------------------
    def _meter_value(
        self, evse: Evse, now: float, context: str, measurands: tuple[str, ...]
    ) -> dict[str, Any]:
        sampled = []
        for m in measurands:
            value = reading(self, evse, m)
            if value is None:
                continue
            sv: dict[str, Any] = {
                "value": round(value, 1),
                "context": context,
                "measurand": m,
                "unitOfMeasure": {"unit": UNITS[m]},
            }
            if m in LOCATIONS:
                sv["location"] = LOCATIONS[m]
            sampled.append(sv)
        if not sampled:  # MeterValueType needs at least one sampled value
            sampled.append(
                {
                    "value": round(evse.import_wh, 1),
                    "context": context,
                    "measurand": "Energy.Active.Import.Register",
                }
            )
        return {"timestamp": timestamp(now), "sampledValue": sampled}

    def on_measured(self, evse: Evse, now: float) -> None:
        tx = evse.tx
        if tx is not None and sample_due(evse, now, self._tx_interval):
            self.periodic_update(evse, tx, now)
        self.check_monitors(evse, now)

    def periodic_update(self, evse: Evse, tx: Transaction, now: float) -> None:
        """TransactionEvent(Updated, MeterValuePeriodic), formatted from a template."""
        values = readings(self, evse, self._measurands)
        if values is None or not self._measurands or self.transport is None:
            self.transaction_event(evse, tx, now, "Updated", "MeterValuePeriodic")
            return
        ts = timestamp(now)
        sampled = sampled_template(False, self._measurands, "Sample.Periodic", False) % values
        body = (
            f'{{"eventType":"Updated","timestamp":"{ts}","triggerReason":"MeterValuePeriodic",'
            f'"seqNo":{tx.next_seq()},"transactionInfo":{{"transactionId":"{tx.local_id}",'
            f'"chargingState":"{CHARGING_STATE[evse.state]}"}},'
            f'"meterValue":[{{"timestamp":"{ts}","sampledValue":{sampled}}}]}}'
        )
        self.call("TransactionEvent", body.encode(), tx=True)

    def check_monitors(self, evse: Evse, now: float) -> None:
        monitors = self.monitors.for_evse(evse.id)
        if not monitors:
            return
        power, in_tx = evse.power_w, evse.tx is not None
        events = []
        for m in monitors:
            if m.severity > self.monitors.level:
                continue
            trigger = evaluate(m, power, now, in_tx)
            if trigger is not None:
                events.append(self._event(m, trigger, power, now, evse))
        if events:
            self.call(
                "NotifyEvent",
                {"generatedAt": timestamp(now), "seqNo": 0, "tbc": False, "eventData": events},
            )

    def _event(
        self, m: Monitor, trigger: str, power: float, now: float, evse: Evse
    ) -> dict[str, Any]:
        self._event_id += 1
        event: dict[str, Any] = {
            "eventId": self._event_id,
            "timestamp": timestamp(now),
            "trigger": trigger,
            "actualValue": f"{power:.1f}",
            "eventNotificationType": "CustomMonitor",
            "variableMonitoringId": m.id,
            "component": {"name": "EVSE", "evse": {"id": evse.id}},
            "variable": {"name": "Power"},
        }
        if trigger == "Alerting" and not m.exceeded:
            event["cleared"] = True
        if evse.tx is not None:
            event["transactionId"] = evse.tx.local_id
        return event

    def send_meter_values(self, evse: Evse, now: float) -> None:
        """MeterValuesRequest (TriggerMessage), outside the transaction messages."""
        self.call(
            "MeterValues",
            {
                "evseId": evse.id,
                "meterValue": [self._meter_value(evse, now, "Trigger", self._measurands)],
            },
        )

    def send_report(
        self, action: str, request_id: int, key: str, items: list[dict[str, Any]]
    ) -> None:
        """NotifyReport / NotifyMonitoringReport in parts of 50 items (tbc until the last)."""
        now = timestamp(time.time())
        chunks = [items[i : i + 50] for i in range(0, len(items), 50)] or [[]]
        for seq, chunk in enumerate(chunks):
            payload: dict[str, Any] = {
                "requestId": request_id,
                "generatedAt": now,
                "seqNo": seq,
                "tbc": seq < len(chunks) - 1,
            }
            if chunk:
                payload[key] = chunk
            self.call(action, payload)


_CONTEXT = {
    "Started": "Transaction.Begin",
    "Updated": "Sample.Periodic",
    "Ended": "Transaction.End",
}
