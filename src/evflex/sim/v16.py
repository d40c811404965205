"""An OCPP 1.6J station: its messages, its configuration keys and its answers to the CSMS.

Telemetry follows the PowerBank rules for 1.6: during a transaction the power is
measured every second; a MeterValues.req goes out when it has changed by
`MeterValuePowerActiveImportDeltaTrigger` W since the last one that carried
Power.Active.Import, and every `MeterValueSampleInterval` s with the measurands
of `MeterValuesSampledData`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import orjson

from evflex.sim.catalogue import Model
from evflex.sim.clock import timestamp
from evflex.sim.config16 import DELTA_KEY, Configuration
from evflex.sim.evse import Evse, State, Transaction
from evflex.sim.faults import Fault
from evflex.sim.link import Context, Payload
from evflex.sim.meter import reading, readings, sampled_template
from evflex.sim.profiles import PURPOSE_V16, parse_v16, schedule_payload
from evflex.sim.schedule import Purpose, composite_periods
from evflex.sim.sessions import SessionGenerator
from evflex.sim.station import Station, sample_due
from evflex.sim.v16_calls import HANDLERS

STATUS = {
    State.AVAILABLE: "Available",
    State.PLUGGED: "Preparing",
    State.CHARGING: "Charging",
    State.SUSPENDED_EV: "SuspendedEV",
    State.SUSPENDED_EVSE: "SuspendedEVSE",
    State.FINISHING: "Finishing",
    State.UNAVAILABLE: "Unavailable",
}
_POWER = "Power.Active.Import"
_BATTERY_REPORT_S = 900.0


class V16Station(Station):
    HANDLERS = HANDLERS
    __slots__ = ("_delta_w", "_sample_s", "_sampled", "config", "next_battery_report")

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
        self.config = Configuration(
            model, sample_interval_s=ctx.meter_interval_s, delta_w=ctx.delta_w
        )
        self.next_battery_report = 0.0
        self.reload_config()

    def reload_config(self) -> None:
        """Re-read the keys the per-second path uses (after a change or a reboot)."""
        self._sample_s = self.config.int("MeterValueSampleInterval")
        self._delta_w = self.config.int(DELTA_KEY)
        sampled = self.config.csl("MeterValuesSampledData")
        self._sampled = sampled
        heartbeat = self.config.int("HeartbeatInterval")
        if heartbeat > 0 and self.boot != "accepted":
            self.heartbeat_s = float(heartbeat)

    def apply_reboot_settings(self) -> None:
        self.config.apply_reboot()
        self.reload_config()

    # -- station-initiated messages ----------------------------------------------------
    def boot_payload(self) -> Payload:
        m = self.model
        return {
            "chargePointVendor": m.vendor,
            "chargePointModel": m.model,
            "chargePointSerialNumber": self.station_id[-25:],
            "firmwareVersion": m.firmware,
        }

    def on_booted(self, now: float) -> None:
        self.config.set_value("HeartbeatInterval", str(int(self.heartbeat_s)))
        super().on_booted(now)

    def send_all_status(self) -> None:
        now = time.time()
        operative = any(e.operative for e in self.evses)
        self._status(0, "Available" if operative else "Unavailable", now)
        for evse in self.evses:
            self._status(evse.id, STATUS[evse.state], now)

    def _status(self, connector: int, status: str, now: float) -> None:
        self.call(
            "StatusNotification",
            {
                "connectorId": connector,
                "errorCode": "NoError",
                "status": status,
                "timestamp": timestamp(now),
            },
        )

    def on_state_change(self, evse: Evse, old: State, now: float) -> None:
        self._status(evse.id, STATUS[evse.state], now)

    def tick(self, now: float, mono: float) -> None:
        super().tick(now, mono)
        if self.battery is not None and self.operational and now >= self.next_battery_report:
            self.next_battery_report = now + _BATTERY_REPORT_S
            self.report_battery()

    def report_battery(self) -> None:
        """SoH has no 1.6 measurand: the BESS reports it by DataTransfer (datasheet)."""
        b = self.battery
        if b is None:
            return
        data = {
            "soc": round(b.soc * 100, 1),
            "soh": round(b.soh * 100, 1),
            "temperature": round(b.temp_c, 1),
            "voltage": round(b.voltage, 1),
        }
        self.call(
            "DataTransfer",
            {
                "vendorId": self.model.vendor,
                "messageId": "BatteryStatus",
                "data": orjson.dumps(data).decode(),
            },
        )

    # -- transactions ------------------------------------------------------------------
    def authorize_payload(self, id_tag: str) -> Payload:
        return {"idTag": id_tag}

    def authorized(self, response: Payload) -> bool:
        return bool(response.get("idTagInfo", {}).get("status") == "Accepted")

    def start_transaction(self, evse: Evse, now: float, id_tag: str) -> None:
        tx = self.new_transaction(evse, now, id_tag)
        payload = {
            "connectorId": evse.id,
            "idTag": id_tag,
            "meterStart": int(evse.import_wh),
            "timestamp": timestamp(now),
        }

        def started(response: Payload) -> None:
            tx.remote_id = int(response["transactionId"])
            if evse.tx is tx:
                evse.limit_dirty = True  # a TxProfile may name this id
            status = response.get("idTagInfo", {}).get("status")
            if status != "Accepted" and evse.tx is tx:
                self.stop_transaction(evse, time.time(), "DeAuthorized")

        self.call("StartTransaction", payload, started, tx=True)

    def stop_transaction(self, evse: Evse, now: float, reason: str) -> None:
        tx = self.end_transaction(evse)
        if tx is None:
            return
        body = {
            "idTag": tx.id_tag,
            "meterStop": int(evse.import_wh),
            "timestamp": timestamp(now),
            "reason": reason,
        }

        def build() -> Payload | None:
            if tx.remote_id is None:
                return None  # StartTransaction never got through: nothing to stop
            return {**body, "transactionId": tx.remote_id}

        self.call("StopTransaction", build, tx=True)

    def sample_interval(self) -> float:
        return float(self._sample_s) if self._sample_s > 0 else float("inf")

    def tx_key(self, tx: Transaction) -> str | None:
        return str(tx.remote_id) if tx.remote_id is not None else tx.local_id

    # -- telemetry -----------------------------------------------------------------------
    def on_measured(self, evse: Evse, now: float) -> None:
        delta = self._delta_w
        if delta > 0 and abs(evse.power_w - evse.last_reported_w) >= delta:
            self.meter_values(evse, now, "Other", self.power_measurands())
        elif sample_due(evse, now, self._sample_s):
            self.meter_values(evse, now, "Sample.Periodic", self._sampled)

    def power_measurands(self) -> tuple[str, ...]:
        return self._sampled if _POWER in self._sampled else (*self._sampled, _POWER)

    def meter_values(
        self, evse: Evse, now: float, context: str, measurands: tuple[str, ...]
    ) -> None:
        """MeterValues.req, formatted from a template (the per-second path)."""
        values = readings(self, evse, measurands)
        if values is None:  # e.g. no SoC without a car: send what there is
            measurands = tuple(m for m in measurands if reading(self, evse, m) is not None)
            values = readings(self, evse, measurands) or ()
        if _POWER in measurands:
            evse.last_reported_w = evse.power_w
        if not measurands:
            return
        sampled = sampled_template(True, measurands, context, self.battery is not None) % values
        head = f'{{"connectorId":{evse.id},'
        tail = f'"meterValue":[{{"timestamp":"{timestamp(now)}","sampledValue":{sampled}}}]}}'
        tx = evse.tx
        if tx is None:
            self.call("MeterValues", (head + tail).encode())
        elif tx.remote_id is not None:
            body = f'{head}"transactionId":{tx.remote_id},{tail}'
            self.call("MeterValues", body.encode(), tx=True)
        else:  # StartTransaction not answered yet (offline): the id is filled in at sending
            self.call("MeterValues", lambda: _with_tx(head, tail, tx.remote_id), tx=True)

    # -- smart charging --------------------------------------------------------------------
    def check_profile(self, connector: int, cp: dict[str, Any]) -> str | None:
        """Why a SetChargingProfile must be Rejected (1.6 §5.16, §3.13), or None."""
        purpose = PURPOSE_V16[cp["chargingProfilePurpose"]]
        schedule = cp["chargingSchedule"]
        if connector > len(self.evses):
            return "Rejected"
        if purpose is Purpose.STATION_MAX and connector != 0:
            return "Rejected"  # "only be set at Charge Point ConnectorId 0"
        if purpose is Purpose.TX and connector == 0:
            return "Rejected"
        if purpose is Purpose.TX:
            tx = self.evses[connector - 1].tx
            wanted = cp.get("transactionId")
            if tx is None or (wanted is not None and str(wanted) != self.tx_key(tx)):
                return "Rejected"
        too_many = len(self.profiles.installed) >= self.model.max_profiles and all(
            p.profile_id != cp["chargingProfileId"] for p in self.profiles.installed
        )
        if (
            cp["stackLevel"] > self.model.max_stack_level
            or len(schedule["chargingSchedulePeriod"]) > self.model.max_periods
            or schedule["chargingRateUnit"] not in self.model.rate_units
            or too_many
        ):
            return "Rejected"
        return None

    def set_profile(self, connector: int, cp: dict[str, Any]) -> str:
        refusal = self.check_profile(connector, cp)
        if refusal is not None:
            return refusal
        profile = parse_v16(cp, connector, time.time())
        if profile.purpose is Purpose.TX and profile.transaction_id is None:
            tx = self.evses[connector - 1].tx
            assert tx is not None
            profile = dataclasses.replace(profile, transaction_id=self.tx_key(tx))
        self.install(profile)
        return "Accepted"

    def composite_schedule(self, connector: int, duration: int, unit: str) -> Payload:
        now = time.time()
        evse = self.evses[connector - 1] if connector else None
        tx = evse.tx if evse is not None else None
        periods = composite_periods(
            self.profiles.installed,
            now,
            duration,
            evse=connector,
            tx_id=self.tx_key(tx) if tx is not None else None,
            tx_start=tx.started if tx is not None else None,
            to_watts=self._to_watts,
        )
        amps = unit == "A"
        schedule = schedule_payload(
            periods,
            amps=amps,
            duration_s=duration,
            unconstrained_w=self.model.max_power_w,
            to_unit=lambda w, ph: self.to_unit(w, ph, amps),
        )
        schedule["startSchedule"] = timestamp(now)
        return {
            "status": "Accepted",
            "connectorId": connector,
            "scheduleStart": timestamp(now),
            "chargingSchedule": schedule,
        }


def _with_tx(head: str, tail: str, tx_id: int | None) -> bytes | None:
    if tx_id is None:
        return None  # the transaction never got an id: nothing to attribute this to
    return f'{head}"transactionId":{tx_id},{tail}'.encode()
