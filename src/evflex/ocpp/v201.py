"""OCPP 2.0.1 station-initiated messages → fleet events and CALLRESULT payloads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evflex.fleet.events import (
    ChargingNeedsReported,
    MeterSampled,
    SampledValue,
    StationBooted,
    StationNotice,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
    TransactionUpdated,
)
from evflex.fleet.model import ChargingNeeds, EvseStatus
from evflex.ocpp import txids
from evflex.ocpp.timefmt import format_ts, now, parse_ts
from evflex.ocpp.validation import V201 as SCHEMAS

if TYPE_CHECKING:
    from evflex.ocpp.session import Handler, Session

Payload = dict[str, Any]
_DEFAULT_MEASURAND = "Energy.Active.Import.Register"
_STATUS = {s.value: s for s in EvseStatus}

__all__ = ["HANDLERS", "SCHEMAS"]


def boot_notification(session: Session, p: Payload) -> Payload:
    at = now()
    cs = p["chargingStation"]
    session.emit(
        StationBooted(
            session.station_id,
            cs["vendorName"],
            cs["model"],
            cs.get("firmwareVersion"),
            cs.get("serialNumber"),
            p["reason"],
            at,
        )
    )
    session.booted = True
    return {
        "status": "Accepted",
        "currentTime": format_ts(at),
        "interval": session.gateway.heartbeat_interval_s,
    }


def heartbeat(session: Session, p: Payload) -> Payload:
    at = now()
    session.emit(StationSeen(session.station_id, at))
    return {"currentTime": format_ts(at)}


def status_notification(session: Session, p: Payload) -> Payload:
    session.emit(
        StatusChanged(
            session.station_id,
            p["evseId"],
            p["connectorId"],
            _STATUS.get(p["connectorStatus"], EvseStatus.UNKNOWN),
            parse_ts(p["timestamp"]),
        )
    )
    return {}


def authorize(session: Session, p: Payload) -> Payload:
    status = session.gateway.directory.authorize(session.station_id, p["idToken"]["idToken"])
    return {"idTokenInfo": {"status": status}}


def transaction_event(session: Session, p: Payload) -> Payload:
    """E01–E15: one event type for start, update and end of a transaction.

    `offline: true` marks events queued while the station had no connection; they
    are history (stored, counted) and must not overwrite newer live state. seqNo
    gaps are counted per transaction so lost events are visible.
    """
    info = p["transactionInfo"]
    tx_id = info["transactionId"]
    at = parse_ts(p["timestamp"])
    offline = bool(p.get("offline", False))
    seq_no = p["seqNo"]
    evse = p.get("evse")
    evse_id = evse["id"] if evse else 0
    token = p.get("idToken")
    event_type = p["eventType"]
    if event_type == "Started":
        txids.remember(tx_id, False)  # its JSON for the limit frames, off their path
        session.emit(
            TransactionStarted(
                session.station_id,
                evse_id,
                tx_id,
                at,
                token["idToken"] if token else None,
                _meter_start_wh(p),
                offline,
                seq_no,
            )
        )
    for mv in p.get("meterValue") or ():
        _emit_meter_value(session, evse_id, tx_id, mv)
    if event_type == "Updated" or (event_type == "Started" and info.get("chargingState")):
        session.emit(
            TransactionUpdated(
                session.station_id,
                evse_id,
                tx_id,
                at,
                info.get("chargingState"),
                offline,
                seq_no,
                p.get("triggerReason"),
            )
        )
    elif event_type == "Ended":
        session.emit(
            TransactionStopped(
                session.station_id,
                tx_id,
                at,
                _register_wh(p),
                info.get("stoppedReason", "Local"),
                offline,
                seq_no,
                evse_id or None,
            )
        )
    if token is not None:
        # E01/C01: idTokenInfo is required in the response when an idToken was sent.
        status = session.gateway.directory.authorize(session.station_id, token["idToken"])
        return {"idTokenInfo": {"status": status}}
    return {}


def _meter_start_wh(p: Payload) -> float | None:
    return _register_wh(p)


def _register_wh(p: Payload) -> float | None:
    for mv in p.get("meterValue") or ():
        for sv in mv["sampledValue"]:
            if sv.get("measurand", _DEFAULT_MEASURAND) == _DEFAULT_MEASURAND and "phase" not in sv:
                return _scaled(sv) * (1000.0 if _unit(sv) == "kWh" else 1.0)
    return None


def meter_values(session: Session, p: Payload) -> Payload:
    for mv in p["meterValue"]:
        _emit_meter_value(session, p["evseId"], None, mv)
    return {}


def _scaled(sv: Payload) -> float:
    uom = sv.get("unitOfMeasure")
    multiplier = uom.get("multiplier", 0) if uom else 0
    value = float(sv["value"])
    return value * 10.0**multiplier if multiplier else value


def _unit(sv: Payload) -> str | None:
    uom = sv.get("unitOfMeasure")
    if uom is None:
        return "Wh" if sv.get("measurand", _DEFAULT_MEASURAND) == _DEFAULT_MEASURAND else None
    unit = uom.get("unit")
    return unit if isinstance(unit, str) else "Wh"


def _emit_meter_value(session: Session, evse_id: int, tx_id: str | None, mv: Payload) -> None:
    values = tuple(
        SampledValue(
            sv.get("measurand", _DEFAULT_MEASURAND),
            _scaled(sv),
            _unit(sv),
            sv.get("phase"),
            sv.get("context"),
            sv.get("location"),
        )
        for sv in mv["sampledValue"]
    )
    session.emit(
        MeterSampled(
            session.station_id,
            evse_id,
            parse_ts(mv["timestamp"]),
            now(),
            values,
            tx_id,
        )
    )


def data_transfer(session: Session, p: Payload) -> Payload:
    session.emit(StationNotice(session.station_id, "data_transfer", now(), dict(p)))
    # P01/P02: no vendor extension is implemented, so every vendorId is unknown.
    return {"status": "UnknownVendorId"}


_POWER = "Power.Active.Import"
# N07 Delta alerts become change-triggered samples, N08 Periodic events periodic ones
_EVENT_CONTEXT = {"Delta": "Trigger", "Periodic": "Sample.Periodic", "Alerting": "Trigger"}


def notify_event(session: Session, p: Payload) -> Payload:
    """N07/N08: monitor events. EVSE.Power events are power samples; the rest are notices."""
    received = now()
    other = []
    for ev in p["eventData"]:
        comp = ev["component"]
        evse = comp.get("evse")
        if comp["name"] == "EVSE" and evse and ev["variable"]["name"] == "Power":
            try:
                value = float(ev["actualValue"])
            except ValueError:
                other.append(ev)
                continue
            session.emit(
                MeterSampled(
                    session.station_id,
                    evse["id"],
                    parse_ts(ev["timestamp"]),
                    received,
                    (
                        SampledValue(
                            _POWER, value, "W", None, _EVENT_CONTEXT.get(ev["trigger"], "Other")
                        ),
                    ),
                    ev.get("transactionId"),
                )
            )
        else:
            other.append(ev)
    if other:
        session.emit(StationNotice(session.station_id, "event", received, {"events": other}))
    return {}


def notify_monitoring_report(session: Session, p: Payload) -> Payload:
    """N02 report part → a "monitoring_report" notice with version-neutral monitors."""
    monitors = [
        {
            "monitor_id": m["id"],
            "component": entry["component"]["name"],
            "evse_id": (entry["component"].get("evse") or {}).get("id"),
            "variable": entry["variable"]["name"],
            "kind": m["type"],
            "value": m["value"],
            "severity": m["severity"],
            "transaction": m["transaction"],
        }
        for entry in p.get("monitor") or ()
        for m in entry["variableMonitoring"]
    ]
    session.emit(
        StationNotice(
            session.station_id,
            "monitoring_report",
            now(),
            {
                "request_id": p["requestId"],
                "seq_no": p["seqNo"],
                "more": bool(p.get("tbc", False)),
                "monitors": monitors,
            },
        )
    )
    return {}


_AC_PHASES = {"AC_single_phase": 1, "AC_two_phase": 2, "AC_three_phase": 3}
_AC_PHASE_V = 230.0  # evMaxCurrent is per phase; the EV reports no phase voltage


def notify_ev_charging_needs(session: Session, p: Payload) -> Payload:
    """K17: the EV's needs (ISO 15118) → version-neutral `ChargingNeeds` on the EVSE."""
    needs = p["chargingNeeds"]
    ac, dc = needs.get("acChargingParameters"), needs.get("dcChargingParameters")
    energy_wh = max_w = capacity_wh = None
    if ac is not None:
        energy_wh = float(ac["energyAmount"])
        phases = _AC_PHASES.get(needs["requestedEnergyTransfer"], 3)
        max_w = float(ac["evMaxCurrent"]) * _AC_PHASE_V * phases
    elif dc is not None:
        energy_wh = float(dc["energyAmount"]) if "energyAmount" in dc else None
        max_w = float(dc.get("evMaxPower") or dc["evMaxCurrent"] * dc["evMaxVoltage"])
        capacity_wh = float(dc["evEnergyCapacity"]) if "evEnergyCapacity" in dc else None
    departure = needs.get("departureTime")
    session.emit(
        ChargingNeedsReported(
            session.station_id,
            p["evseId"],
            ChargingNeeds(
                at=now(),
                source="ev",
                departure_at=parse_ts(departure) if departure else None,
                energy_wh=energy_wh,
                ev_max_power_w=max_w,
                battery_wh=capacity_wh,
            ),
        )
    )
    return {"status": "Accepted"}


def _notice(kind: str) -> Handler:
    def handle(session: Session, p: Payload) -> Payload:
        session.emit(StationNotice(session.station_id, kind, now(), dict(p)))
        return {}

    return handle


HANDLERS: dict[str, Handler] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "Authorize": authorize,
    "TransactionEvent": transaction_event,
    "MeterValues": meter_values,
    "DataTransfer": data_transfer,
    "NotifyReport": _notice("report"),
    "NotifyEvent": notify_event,
    "NotifyMonitoringReport": notify_monitoring_report,
    "NotifyEVChargingNeeds": notify_ev_charging_needs,
    "SecurityEventNotification": _notice("security_event"),
    "FirmwareStatusNotification": _notice("firmware_status"),
    "LogStatusNotification": _notice("log_status"),
}
