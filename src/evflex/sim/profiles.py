"""Wire charging profiles (OCPP 1.6 csChargingProfiles, 2.0.1 ChargingProfileType) → `Profile`.

Also the reverse for GetCompositeSchedule answers. Parsing happens once per
SetChargingProfile, never on the per-second path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from evflex.sim.schedule import Period, Profile, Purpose

PURPOSE_V16 = {
    "ChargePointMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}
PURPOSE_V201 = {
    "ChargingStationMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}


class ProfileError(ValueError):
    """The profile is well-formed JSON but not something this station can install."""


def parse_ts(value: str) -> float:
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:  # OCPP timestamps are UTC; tolerate a missing offset
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def format_ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opt_ts(payload: dict[str, Any], key: str) -> float | None:
    value = payload.get(key)
    return None if value is None else parse_ts(value)


def _periods(schedule: dict[str, Any]) -> tuple[Period, ...]:
    raw = schedule.get("chargingSchedulePeriod") or []
    periods = tuple(
        Period(
            int(p["startPeriod"]),
            float(p.get("limit", p.get("setpoint", 0.0))),
            p.get("numberPhases"),
        )
        for p in raw
    )
    if not periods:
        raise ProfileError("a charging schedule needs at least one period")
    if any(b.start_s <= a.start_s for a, b in itertools.pairwise(periods)):
        raise ProfileError("startPeriod values must increase")
    return periods


def parse_v16(cp: dict[str, Any], connector_id: int, now: float) -> Profile:
    """1.6 `csChargingProfiles` as received in SetChargingProfile / RemoteStartTransaction."""
    schedule = cp["chargingSchedule"]
    tx = cp.get("transactionId")
    return Profile(
        profile_id=int(cp["chargingProfileId"]),
        stack_level=int(cp["stackLevel"]),
        purpose=PURPOSE_V16[cp["chargingProfilePurpose"]],
        kind=cp["chargingProfileKind"],
        periods=_periods(schedule),
        amps=schedule["chargingRateUnit"] == "A",
        evse=connector_id,
        start=_opt_ts(schedule, "startSchedule"),
        duration=schedule.get("duration"),
        valid_from=_opt_ts(cp, "validFrom"),
        valid_to=_opt_ts(cp, "validTo"),
        recurrency=cp.get("recurrencyKind"),
        transaction_id=None if tx is None else str(tx),
        received_at=now,
    )


def parse_v201(cp: dict[str, Any], evse_id: int, now: float) -> Profile:
    """2.0.1 `chargingProfile`; of up to three schedules the first is used."""
    schedules = cp["chargingSchedule"]
    if not schedules:
        raise ProfileError("chargingSchedule is empty")
    schedule = schedules[0]
    tx = cp.get("transactionId")
    return Profile(
        profile_id=int(cp["id"]),
        stack_level=int(cp["stackLevel"]),
        purpose=PURPOSE_V201[cp["chargingProfilePurpose"]],
        kind=cp["chargingProfileKind"],
        periods=_periods(schedule),
        amps=schedule["chargingRateUnit"] == "A",
        evse=evse_id,
        start=_opt_ts(schedule, "startSchedule"),
        duration=schedule.get("duration"),
        valid_from=_opt_ts(cp, "validFrom"),
        valid_to=_opt_ts(cp, "validTo"),
        recurrency=cp.get("recurrencyKind"),
        transaction_id=None if tx is None else str(tx),
        received_at=now,
    )


def schedule_payload(
    periods: list[tuple[int, float | None, int | None]],
    *,
    amps: bool,
    duration_s: int,
    unconstrained_w: float,
    to_unit: Callable[[float, int | None], float],
) -> dict[str, Any]:
    """A ChargingSchedule body for GetCompositeSchedule; `to_unit(W, phases)` converts.

    An unconstrained stretch is reported at the station's own maximum: that is
    what it will draw there.
    """
    out = []
    for offset, watts, phases in periods:
        value = to_unit(unconstrained_w if watts is None else watts, phases)
        entry: dict[str, Any] = {"startPeriod": offset, "limit": round(value, 1)}
        if phases is not None:
            entry["numberPhases"] = phases
        out.append(entry)
    return {
        "duration": duration_s,
        "chargingRateUnit": "A" if amps else "W",
        "chargingSchedulePeriod": out,
    }
