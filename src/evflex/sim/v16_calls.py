"""OCPP 1.6 CSMS-initiated calls answered by a simulated station (§5).

Each handler takes the station and the request payload and returns the
response payload; work that must follow the answer (a transaction start, a
reset, a triggered message) is queued with `after_reply`. Actions not listed
here are answered with CALLERROR NotImplemented.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

from evflex.sim.catalogue import Kind
from evflex.sim.evse import Evse
from evflex.sim.framing import PROPERTY_CONSTRAINT, CallError
from evflex.sim.link import Handler, Payload
from evflex.sim.profiles import PURPOSE_V16, parse_v16
from evflex.sim.schedule import Profile

if TYPE_CHECKING:
    from evflex.sim.v16 import V16Station


def _evse(st: V16Station, connector: int) -> Evse | None:
    return st.evses[connector - 1] if 1 <= connector <= len(st.evses) else None


def reset(st: V16Station, p: Payload) -> Payload:
    kind = p["type"]
    st.after_reply(lambda: st.reset(kind))
    return {"status": "Accepted"}


def unlock_connector(st: V16Station, p: Payload) -> Payload:
    evse = _evse(st, p["connectorId"])
    if evse is None:
        return {"status": "NotSupported"}
    if evse.tx is not None:
        # §5.18: "the Charge Point SHALL first stop the transaction"
        st.stop_transaction(evse, time.time(), "UnlockCommand")
    return {"status": "Unlocked"}


def change_availability(st: V16Station, p: Payload) -> Payload:
    connector, operative = p["connectorId"], p["type"] == "Operative"
    targets = st.evses if connector == 0 else [e for e in [_evse(st, connector)] if e]
    if not targets:
        return {"status": "Rejected"}
    busy = any(e.tx is not None for e in targets)
    for evse in targets:
        evse.operative = operative
    # §5.2: in a transaction the change is Scheduled, done when it ends
    return {"status": "Scheduled" if busy and not operative else "Accepted"}


def remote_start(st: V16Station, p: Payload) -> Payload:
    connector = p.get("connectorId")
    battery = st.battery
    if battery is not None and (
        connector not in (1, 2) or battery.refusal(charging=connector == 2) is not None
    ):
        return {"status": "Rejected"}  # local protection refuses outside its envelope
    connector = connector or 1
    evse = _evse(st, connector)
    if evse is None or evse.tx is not None or not evse.operative:
        return {"status": "Rejected"}
    cp = p.get("chargingProfile")
    profile: Profile | None = None
    if cp is not None:
        # §5.11: a profile in RemoteStartTransaction SHALL be a TxProfile
        if cp.get("chargingProfilePurpose") != "TxProfile":
            return {"status": "Rejected"}
        profile = parse_v16(cp, connector, time.time())
    tag = p["idTag"]

    def start() -> None:
        now = time.time()
        if st.model.kind is not Kind.BESS:
            st.ev_for_remote_start(evse, now, tag)
        st.start_transaction(evse, now, tag)
        if profile is not None:
            st.install(profile)

    st.after_reply(start)
    return {"status": "Accepted"}


def remote_stop(st: V16Station, p: Payload) -> Payload:
    for evse in st.evses:
        if evse.tx is not None and evse.tx.remote_id == p["transactionId"]:
            st.after_reply(partial(st.stop_transaction, evse, time.time(), "Remote"))
            return {"status": "Accepted"}
    return {"status": "Rejected"}


def get_configuration(st: V16Station, p: Payload) -> Payload:
    known, unknown = st.config.get(p.get("key"))
    out: Payload = {"configurationKey": known}
    if unknown:
        out["unknownKey"] = unknown
    return out


def change_configuration(st: V16Station, p: Payload) -> Payload:
    status = st.config.change(p["key"], p["value"])
    if status == "Accepted":
        if p["key"] == "HeartbeatInterval" and st.config.int("HeartbeatInterval") > 0:
            st.heartbeat_s = float(st.config.int("HeartbeatInterval"))
            st.next_heartbeat = time.time() + st.heartbeat_s
        st.reload_config()
    return {"status": status}


def trigger_message(st: V16Station, p: Payload) -> Payload:
    message, connector = p["requestedMessage"], p.get("connectorId")
    if connector is not None and connector != 0 and _evse(st, connector) is None:
        return {"status": "Rejected"}
    action = _TRIGGERS.get(message)
    if action is None:
        return {"status": "NotImplemented"}
    st.after_reply(lambda: action(st, connector))
    return {"status": "Accepted"}


def _trigger_meter_values(st: V16Station, connector: int | None) -> None:
    now = time.time()
    for evse in st.evses:
        if connector in (None, 0, evse.id):
            st.meter_values(evse, now, "Trigger", st.power_measurands())


def _trigger_status(st: V16Station, connector: int | None) -> None:
    st.send_all_status()


_TRIGGERS: dict[str, Any] = {
    "BootNotification": lambda st, c: st.send_boot(),
    "Heartbeat": lambda st, c: st.send_heartbeat(time.time()),
    "StatusNotification": _trigger_status,
    "MeterValues": _trigger_meter_values,
    "DiagnosticsStatusNotification": lambda st, c: st.call(
        "DiagnosticsStatusNotification", {"status": "Idle"}
    ),
    "FirmwareStatusNotification": lambda st, c: st.call(
        "FirmwareStatusNotification", {"status": "Idle"}
    ),
}


def set_charging_profile(st: V16Station, p: Payload) -> Payload:
    try:
        return {"status": st.set_profile(p["connectorId"], p["csChargingProfiles"])}
    except ValueError as exc:  # unparseable timestamp, empty schedule
        raise CallError(PROPERTY_CONSTRAINT, str(exc)) from None


def clear_charging_profile(st: V16Station, p: Payload) -> Payload:
    """§5.5: by id, or by any combination of connectorId, purpose and stackLevel."""
    pid, connector = p.get("id"), p.get("connectorId")
    purpose = PURPOSE_V16.get(p.get("chargingProfilePurpose", ""))
    level = p.get("stackLevel")

    def doomed(profile: Profile) -> bool:
        if pid is not None:
            return bool(profile.profile_id == pid)
        return (
            (connector is None or profile.evse == connector)
            and (purpose is None or profile.purpose is purpose)
            and (level is None or profile.stack_level == level)
        )

    return {"status": "Accepted" if st.remove_profiles(doomed) else "Unknown"}


def get_composite_schedule(st: V16Station, p: Payload) -> Payload:
    connector, duration = p["connectorId"], p["duration"]
    unit = p.get("chargingRateUnit") or ("W" if "W" in st.model.rate_units else "A")
    if connector > len(st.evses) or unit not in st.model.rate_units:
        return {"status": "Rejected"}
    return st.composite_schedule(connector, duration, unit)


HANDLERS: dict[str, Handler] = {
    "Reset": reset,
    "UnlockConnector": unlock_connector,
    "ChangeAvailability": change_availability,
    "RemoteStartTransaction": remote_start,
    "RemoteStopTransaction": remote_stop,
    "GetConfiguration": get_configuration,
    "ChangeConfiguration": change_configuration,
    "TriggerMessage": trigger_message,
    "SetChargingProfile": set_charging_profile,
    "ClearChargingProfile": clear_charging_profile,
    "GetCompositeSchedule": get_composite_schedule,
    "ClearCache": lambda st, p: {"status": "Accepted"},
    "DataTransfer": lambda st, p: {"status": "UnknownVendorId"},
}
