"""OCPP 2.0.1 CSMS-initiated calls answered by a simulated station.

Each handler takes the station and the request payload and returns the response
payload; follow-up messages (NotifyReport, a TransactionEvent, a reset) are queued
with `after_reply` so they go out after the CALLRESULT. Actions not listed here
are answered with CALLERROR NotImplemented.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

from evflex.sim.catalogue import Monitoring
from evflex.sim.framing import NOT_SUPPORTED, PROPERTY_CONSTRAINT, CallError
from evflex.sim.link import Handler, Payload
from evflex.sim.profiles import PURPOSE_V201, format_ts, parse_v201, schedule_payload
from evflex.sim.schedule import Profile, Purpose, composite_periods

if TYPE_CHECKING:
    from evflex.sim.evse import Evse
    from evflex.sim.v201 import V201Station


def _evse(st: V201Station, evse_id: int | None) -> Evse | None:
    if evse_id is None:
        return None
    return st.evses[evse_id - 1] if 1 <= evse_id <= len(st.evses) else None


# -- B: provisioning ---------------------------------------------------------------------
def reset(st: V201Station, p: Payload) -> Payload:
    if p.get("evseId"):
        return {"status": "Rejected"}  # resetting a single EVSE is not supported
    busy = any(e.tx is not None for e in st.evses)
    st.boot_reason = "RemoteReset"
    if p["type"] == "OnIdle" and busy:
        st.reset_when_idle = True  # B12.FR.01: reset once transactions have ended
        return {"status": "Scheduled"}

    st.after_reply(partial(st.reset, "Hard"))
    return {"status": "Accepted"}


def get_variables(st: V201Station, p: Payload) -> Payload:
    return {"getVariableResult": [st.device.get(item) for item in p["getVariableData"]]}


def set_variables(st: V201Station, p: Payload) -> Payload:
    results = [st.device.set(item) for item in p["setVariableData"]]
    st.reload_settings()
    return {"setVariableResult": results}


def get_base_report(st: V201Station, p: Payload) -> Payload:
    data = st.device.report(p["reportBase"])
    if not data:
        return {"status": "EmptyResultSet"}
    st.after_reply(lambda: st.send_report("NotifyReport", p["requestId"], "reportData", data))
    return {"status": "Accepted"}


# -- F: remote control -------------------------------------------------------------------
def request_start(st: V201Station, p: Payload) -> Payload:
    evse = _evse(st, p.get("evseId") or 1)
    if evse is None or evse.tx is not None or not evse.operative:
        return {"status": "Rejected"}
    profile: Profile | None = None
    cp = p.get("chargingProfile")
    if cp is not None:
        # F01.FR.12: the profile in RequestStartTransaction SHALL be a TxProfile
        if cp.get("chargingProfilePurpose") != "TxProfile":
            return {"status": "Rejected"}
        profile = parse_v201(cp, evse.id, time.time())
    token, remote_id = p["idToken"]["idToken"], p["remoteStartId"]

    def start() -> None:
        now = time.time()
        st.ev_for_remote_start(evse, now, token)
        st.start_transaction(evse, now, token, remote_start_id=remote_id)
        if profile is not None and evse.tx is not None:
            st.install(_for_tx(profile, evse.tx.local_id))

    st.after_reply(start)
    return {"status": "Accepted"}


def _for_tx(profile: Profile, tx_id: str) -> Profile:
    import dataclasses

    return dataclasses.replace(profile, transaction_id=tx_id)


def request_stop(st: V201Station, p: Payload) -> Payload:
    for evse in st.evses:
        if evse.tx is not None and evse.tx.local_id == p["transactionId"]:
            st.after_reply(partial(st.stop_transaction, evse, time.time(), "Remote"))
            return {"status": "Accepted"}
    return {"status": "Rejected"}


def unlock_connector(st: V201Station, p: Payload) -> Payload:
    evse = _evse(st, p["evseId"])
    if evse is None or p["connectorId"] != 1:
        return {"status": "UnknownConnector"}
    if evse.tx is not None:
        return {"status": "OngoingAuthorizedTransaction"}  # F05.FR.02
    return {"status": "Unlocked"}


def change_availability(st: V201Station, p: Payload) -> Payload:
    operative = p["operationalStatus"] == "Operative"
    evse_id = (p.get("evse") or {}).get("id", 0)
    targets = st.evses if not evse_id else [e for e in [_evse(st, evse_id)] if e]
    if not targets:
        return {"status": "Rejected"}
    busy = any(e.tx is not None for e in targets)
    for evse in targets:
        evse.operative = operative
    return {"status": "Scheduled" if busy and not operative else "Accepted"}


def trigger_message(st: V201Station, p: Payload) -> Payload:
    message = p["requestedMessage"]
    evse = _evse(st, (p.get("evse") or {}).get("id"))
    now = time.time()
    if message == "BootNotification" and st.boot == "accepted":
        return {"status": "Rejected"}  # F06.FR.17: not after an accepted boot
    actions: dict[str, Any] = {
        "BootNotification": st.send_boot,
        "Heartbeat": lambda: st.send_heartbeat(now),
        "StatusNotification": st.send_all_status,
        "MeterValues": partial(_trigger_meter_values, st, evse, now),
        "TransactionEvent": partial(_trigger_transaction_event, st, evse, now),
    }
    action = actions.get(message)
    if action is None:
        return {"status": "NotImplemented"}
    st.after_reply(action)
    return {"status": "Accepted"}


def _targets(st: V201Station, evse: Evse | None) -> list[Evse]:
    return st.evses if evse is None else [evse]


def _trigger_meter_values(st: V201Station, evse: Evse | None, now: float) -> None:
    for target in _targets(st, evse):
        st.send_meter_values(target, now)


def _trigger_transaction_event(st: V201Station, evse: Evse | None, now: float) -> None:
    for target in _targets(st, evse):
        if target.tx is not None:
            st.transaction_event(target, target.tx, now, "Updated", "Trigger")


# -- K: smart charging -------------------------------------------------------------------
def check_profile(st: V201Station, evse_id: int, cp: Payload) -> str | None:
    """Why SetChargingProfile must be Rejected (2.0.1 K01.FR.*), or None."""
    purpose = PURPOSE_V201.get(cp["chargingProfilePurpose"])
    if purpose is None:
        return "Rejected"  # ChargingStationExternalConstraints: set locally, not by the CSMS
    schedule = cp["chargingSchedule"][0]
    periods = schedule["chargingSchedulePeriod"]
    relative = cp["chargingProfileKind"] == "Relative"
    checks = (
        evse_id > len(st.evses),  # K01.FR.28
        purpose is Purpose.STATION_MAX and (evse_id != 0 or relative),  # K01.FR.03, FR.38
        purpose is Purpose.TX and (evse_id == 0 or "transactionId" not in cp),  # FR.16, FR.03
        not periods or periods[0]["startPeriod"] != 0,  # K01.FR.31
        relative == ("startSchedule" in schedule),  # K01.FR.40, FR.41
        schedule["chargingRateUnit"] not in st.model.rate_units,  # K01.FR.26
        cp["stackLevel"] > st.model.max_stack_level,
        len(periods) > st.model.max_periods,
    )
    if any(checks):
        return "Rejected"
    if purpose is Purpose.TX:
        tx = st.evses[evse_id - 1].tx
        if tx is None or tx.local_id != cp["transactionId"]:
            return "Rejected"  # K01.FR.09, FR.33
        clash = any(
            p.purpose is Purpose.TX
            and p.stack_level == cp["stackLevel"]
            and p.profile_id != cp["id"]
            and p.transaction_id == cp["transactionId"]
            for p in st.profiles.installed
        )
        if clash:
            return "Rejected"  # K01.FR.39
    return None


def set_charging_profile(st: V201Station, p: Payload) -> Payload:
    evse_id, cp = p["evseId"], p["chargingProfile"]
    try:
        refusal = check_profile(st, evse_id, cp)
        if refusal is not None:
            return {"status": refusal}
        st.install(parse_v201(cp, evse_id, time.time()))
    except ValueError as exc:
        raise CallError(PROPERTY_CONSTRAINT, str(exc)) from None
    return {"status": "Accepted"}


def clear_charging_profile(st: V201Station, p: Payload) -> Payload:
    """K10: by id, or by the criteria (evseId, purpose, stackLevel)."""
    pid = p.get("chargingProfileId")
    criteria = p.get("chargingProfileCriteria") or {}
    evse_id = criteria.get("evseId")
    purpose = PURPOSE_V201.get(criteria.get("chargingProfilePurpose", ""))
    level = criteria.get("stackLevel")

    def doomed(profile: Profile) -> bool:
        if pid is not None:
            return bool(profile.profile_id == pid)
        return (
            (evse_id is None or profile.evse == evse_id)
            and (purpose is None or profile.purpose is purpose)
            and (level is None or profile.stack_level == level)
        )

    return {"status": "Accepted" if st.remove_profiles(doomed) else "Unknown"}


def get_composite_schedule(st: V201Station, p: Payload) -> Payload:
    evse_id, duration = p["evseId"], p["duration"]
    unit = p.get("chargingRateUnit") or ("W" if "W" in st.model.rate_units else "A")
    if evse_id > len(st.evses) or unit not in st.model.rate_units:
        return {"status": "Rejected"}
    now = time.time()
    evse = _evse(st, evse_id)
    tx = evse.tx if evse is not None else None
    periods = composite_periods(
        st.profiles.installed,
        now,
        duration,
        evse=evse_id,
        tx_id=tx.local_id if tx is not None else None,
        tx_start=tx.started if tx is not None else None,
        to_watts=st._to_watts,
    )
    amps = unit == "A"
    body = schedule_payload(
        periods,
        amps=amps,
        duration_s=duration,
        unconstrained_w=st.model.max_power_w,
        to_unit=lambda w, ph: st.to_unit(w, ph, amps),
    )
    schedule = {"evseId": evse_id, "scheduleStart": format_ts(now), **body}
    return {"status": "Accepted", "schedule": schedule}


# -- N: monitoring -----------------------------------------------------------------------
def _needs_monitoring(st: V201Station) -> None:
    if st.model.monitoring is Monitoring.NONE:
        raise CallError(NOT_SUPPORTED, "this firmware implements no monitoring")


def set_variable_monitoring(st: V201Station, p: Payload) -> Payload:
    _needs_monitoring(st)
    now = time.time()
    results = []
    for item in p["setMonitoringData"]:
        evse = _evse(st, (item["component"].get("evse") or {}).get("id"))
        current = evse.power_w if evse is not None else 0.0
        results.append(st.monitors.set(item, st.device, now, current))
    return {"setMonitoringResult": results}


def clear_variable_monitoring(st: V201Station, p: Payload) -> Payload:
    _needs_monitoring(st)
    return {"clearMonitoringResult": st.monitors.clear(p["id"])}


def get_monitoring_report(st: V201Station, p: Payload) -> Payload:
    if st.model.monitoring is Monitoring.NONE:
        return {"status": "NotSupported"}
    data = st.monitors.report(p.get("monitoringCriteria"), p.get("componentVariable"))
    if not data:
        return {"status": "EmptyResultSet"}
    st.after_reply(
        lambda: st.send_report("NotifyMonitoringReport", p["requestId"], "monitor", data)
    )
    return {"status": "Accepted"}


def set_monitoring_base(st: V201Station, p: Payload) -> Payload:
    _needs_monitoring(st)
    if p["monitoringBase"] != "All":
        st.monitors.clear_all()  # FactoryDefault / HardWiredOnly drop custom monitors
    return {"status": "Accepted"}


def set_monitoring_level(st: V201Station, p: Payload) -> Payload:
    _needs_monitoring(st)
    st.monitors.level = int(p["severity"])
    return {"status": "Accepted"}


HANDLERS: dict[str, Handler] = {
    "Reset": reset,
    "GetVariables": get_variables,
    "SetVariables": set_variables,
    "GetBaseReport": get_base_report,
    "RequestStartTransaction": request_start,
    "RequestStopTransaction": request_stop,
    "UnlockConnector": unlock_connector,
    "ChangeAvailability": change_availability,
    "TriggerMessage": trigger_message,
    "SetChargingProfile": set_charging_profile,
    "ClearChargingProfile": clear_charging_profile,
    "GetCompositeSchedule": get_composite_schedule,
    "SetVariableMonitoring": set_variable_monitoring,
    "ClearVariableMonitoring": clear_variable_monitoring,
    "GetMonitoringReport": get_monitoring_report,
    "SetMonitoringBase": set_monitoring_base,
    "SetMonitoringLevel": set_monitoring_level,
    "ClearCache": lambda st, p: {"status": "Accepted"},
    "DataTransfer": lambda st, p: {"status": "UnknownVendorId"},
}
