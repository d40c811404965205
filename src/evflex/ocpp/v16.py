"""OCPP 1.6J station-initiated messages → fleet events and CALLRESULT payloads.

Handlers take the validated camelCase payload and return the response payload.
They use plain dicts rather than the `ocpp` library's dataclasses: building and
case-converting a dataclass per frame costs more than everything else here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evflex.fleet.events import (
    MeterSampled,
    SampledValue,
    StationBooted,
    StationNotice,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from evflex.fleet.model import EvseStatus
from evflex.ocpp import txids
from evflex.ocpp.timefmt import format_ts, now, parse_ts
from evflex.ocpp.validation import V16 as SCHEMAS

__all__ = ["HANDLERS", "SCHEMAS"]

if TYPE_CHECKING:
    from evflex.ocpp.session import Handler, Session

Payload = dict[str, Any]
_DEFAULT_MEASURAND = "Energy.Active.Import.Register"  # 1.6 §7.31 default when absent
_STATUS = {s.value: s for s in EvseStatus}


def boot_notification(session: Session, p: Payload) -> Payload:
    at = now()
    session.emit(
        StationBooted(
            session.station_id,
            p["chargePointVendor"],
            p["chargePointModel"],
            p.get("firmwareVersion"),
            p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
            None,
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
    connector = p["connectorId"]
    ts = p.get("timestamp")
    session.emit(
        StatusChanged(
            session.station_id,
            connector,
            connector,
            _STATUS.get(p["status"], EvseStatus.UNKNOWN),
            parse_ts(ts) if ts else now(),
            p.get("errorCode"),
        )
    )
    return {}


def authorize(session: Session, p: Payload) -> Payload:
    status = session.gateway.directory.authorize(session.station_id, p["idTag"])
    return {"idTagInfo": {"status": status}}


def start_transaction(session: Session, p: Payload) -> Payload:
    directory = session.gateway.directory
    status = directory.authorize(session.station_id, p["idTag"])
    tx_id = directory.allocate_transaction_id()
    txids.remember(str(tx_id), True)  # its JSON for the limit frames, off their path
    # The transaction is recorded even when the tag is refused: 1.6 §4.8 says the
    # station may keep charging (StopTransactionOnInvalidId=false), and the energy counts.
    session.emit(
        TransactionStarted(
            session.station_id,
            p["connectorId"],
            str(tx_id),
            parse_ts(p["timestamp"]),
            p["idTag"],
            float(p["meterStart"]),
        )
    )
    return {"transactionId": tx_id, "idTagInfo": {"status": status}}


def stop_transaction(session: Session, p: Payload) -> Payload:
    tx_id = str(p["transactionId"])
    for mv in p.get("transactionData") or ():
        # transactionData carries no connector: 0 plus the transaction id lets the
        # fleet attribute it to the transaction's EVSE.
        _emit_meter_value(session, 0, tx_id, mv)
    session.emit(
        TransactionStopped(
            session.station_id,
            tx_id,
            parse_ts(p["timestamp"]),
            float(p["meterStop"]),
            p.get("reason", "Local"),
        )
    )
    if "idTag" in p:
        return {
            "idTagInfo": {
                "status": session.gateway.directory.authorize(session.station_id, p["idTag"])
            }
        }
    return {}


def meter_values(session: Session, p: Payload) -> Payload:
    tx = p.get("transactionId")
    tx_id = str(tx) if tx is not None else None
    for mv in p["meterValue"]:
        _emit_meter_value(session, p["connectorId"], tx_id, mv)
    return {}


def _emit_meter_value(session: Session, connector_id: int, tx_id: str | None, mv: Payload) -> None:
    values = []
    for sv in mv["sampledValue"]:
        if sv.get("format") == "SignedData":
            continue  # signed meter data is stored by the station's own means, not parsed
        try:
            value = float(sv["value"])
        except ValueError:
            continue  # the 1.6 schema types values as strings; non-numeric ones are skipped
        measurand = sv.get("measurand")
        values.append(
            SampledValue(
                measurand or _DEFAULT_MEASURAND,
                value,
                sv.get("unit", "Wh" if measurand is None else None),
                sv.get("phase"),
                sv.get("context"),
                sv.get("location"),
            )
        )
    if values:
        session.emit(
            MeterSampled(
                session.station_id,
                connector_id,
                parse_ts(mv["timestamp"]),
                now(),
                tuple(values),
                tx_id,
            )
        )


def data_transfer(session: Session, p: Payload) -> Payload:
    session.emit(StationNotice(session.station_id, "data_transfer", now(), dict(p)))
    # No vendor extensions are implemented: 1.6 §4.3 answers UnknownVendorId.
    return {"status": "UnknownVendorId"}


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
    "StartTransaction": start_transaction,
    "StopTransaction": stop_transaction,
    "MeterValues": meter_values,
    "DataTransfer": data_transfer,
    "FirmwareStatusNotification": _notice("firmware_status"),
    "DiagnosticsStatusNotification": _notice("diagnostics_status"),
    "SecurityEventNotification": _notice("security_event"),
    "SignedFirmwareStatusNotification": _notice("firmware_status"),
    "LogStatusNotification": _notice("log_status"),
}
