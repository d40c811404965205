"""Charging profiles and the composite schedule, as a charging station evaluates them.

Pure functions over an immutable `Profile`; time is POSIX seconds (float).
The rules (OCPP 1.6 §3.13, 2.0.1 K01/K08):

- Within one purpose the valid profile with the highest stackLevel prevails; a
  profile whose schedule has no period at that moment (not yet started, past its
  duration, outside validFrom/validTo) yields to the next lower stackLevel.
- TxProfile overrules TxDefaultProfile; the ChargePointMax/ChargingStationMax
  profile caps the result: limit = min(StationMax, Tx if present else TxDefault).
- With no profile in force the station is unconstrained: a curtailment with a
  validTo or duration releases itself when it ends, even if the CSMS is gone.

`composite` also returns when its answer may next change, so a station needs to
re-evaluate only at that moment (or when its profiles or transaction change),
which is equivalent to evaluating every second at a fraction of the cost.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

INF = math.inf
_CYCLE_S = {"Daily": 86_400.0, "Weekly": 604_800.0}


class Purpose(enum.IntEnum):
    STATION_MAX = 0  # 1.6 ChargePointMaxProfile, 2.0.1 ChargingStationMaxProfile
    TX_DEFAULT = 1
    TX = 2


@dataclass(frozen=True, slots=True)
class Period:
    start_s: int
    limit: float  # in the profile's unit; negative = discharge (V2G)
    phases: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    profile_id: int
    stack_level: int
    purpose: Purpose
    kind: str  # "Absolute" | "Recurring" | "Relative"
    periods: tuple[Period, ...]
    amps: bool  # chargingRateUnit "A" (else "W")
    evse: int = 0  # 0 = the whole station
    start: float | None = None  # startSchedule
    duration: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    recurrency: str | None = None  # "Daily" | "Weekly"
    transaction_id: str | None = None
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Limit:
    """The composite limit in watts (None = unconstrained) and until when it holds."""

    watts: float | None
    phases: int | None
    until: float


# Converts a period's limit to watts: (limit, amps, phases or None) -> W
ToWatts = Callable[[float, bool, int | None], float]
UNLIMITED = Limit(None, None, INF)


def active_period(p: Profile, t: float, tx_start: float | None) -> tuple[Period | None, float]:
    """The period of `p` in force at `t` (None if none) and when that may change."""
    if p.valid_from is not None and t < p.valid_from:
        return None, p.valid_from
    if p.valid_to is not None and t >= p.valid_to:
        return None, INF
    start, cycle_end = _schedule_start(p, t, tx_start)
    valid_to = INF if p.valid_to is None else p.valid_to
    if start is None:
        return None, min(cycle_end, valid_to)
    elapsed = t - start
    if elapsed < 0:
        return None, min(start, valid_to)
    if p.duration is not None and elapsed >= p.duration:
        return None, min(cycle_end, valid_to)
    end = cycle_end if p.duration is None else min(cycle_end, start + p.duration)
    current: Period | None = None
    for period in p.periods:
        if period.start_s > elapsed:
            return current, min(start + period.start_s, end, valid_to)
        current = period
    return current, min(end, valid_to)


def _schedule_start(p: Profile, t: float, tx_start: float | None) -> tuple[float | None, float]:
    """When the schedule's period 0 begins for time `t`, and when the next cycle starts."""
    if p.kind == "Relative":
        # 1.6 §7.13: relative to a station-determined start, the start of the transaction
        return tx_start, INF
    base = p.start if p.start is not None else p.received_at
    if p.kind != "Recurring":
        return base, INF
    cycle = _CYCLE_S.get(p.recurrency or "Daily", 86_400.0)
    if t < base:
        return base, base
    start = base + math.floor((t - base) / cycle) * cycle
    return start, start + cycle


def applies(p: Profile, evse: int, tx_id: str | None) -> bool:
    """Whether `p` governs EVSE `evse` (with transaction `tx_id`, if any)."""
    if p.purpose is Purpose.STATION_MAX:
        return True
    if p.purpose is Purpose.TX_DEFAULT:
        return p.evse in (0, evse)
    # A TxProfile belongs to one transaction and ends with it (1.6 §3.13.2, K01.FR.16)
    return (
        tx_id is not None
        and p.evse in (0, evse)
        and (p.transaction_id is None or p.transaction_id == tx_id)
    )


def stack_order(profiles: Iterable[Profile]) -> tuple[Profile, ...]:
    """Highest stackLevel first; an EVSE-specific profile before a station-wide one."""
    return tuple(sorted(profiles, key=lambda p: (-p.stack_level, p.evse == 0, p.profile_id)))


def composite(
    profiles: tuple[Profile, ...],
    t: float,
    *,
    evse: int,
    tx_id: str | None,
    tx_start: float | None,
    to_watts: ToWatts,
) -> Limit:
    """The composite limit for one EVSE at `t`; `profiles` in `stack_order`."""
    if not profiles:
        return UNLIMITED
    winners: dict[Purpose, Period] = {}
    amps: dict[Purpose, bool] = {}
    until = INF
    for p in profiles:
        if not applies(p, evse, tx_id):
            continue
        period, change = active_period(p, t, tx_start)
        until = min(until, change)
        if period is not None and p.purpose not in winners:
            winners[p.purpose] = period
            amps[p.purpose] = p.amps
    return _combine(winners, amps, until, to_watts)


def _combine(
    winners: dict[Purpose, Period],
    amps: dict[Purpose, bool],
    until: float,
    to_watts: ToWatts,
) -> Limit:
    chosen = [Purpose.STATION_MAX]
    chosen.append(Purpose.TX if Purpose.TX in winners else Purpose.TX_DEFAULT)
    watts: float | None = None
    phases: int | None = None
    for purpose in chosen:
        period = winners.get(purpose)
        if period is None:
            continue
        w = to_watts(period.limit, amps[purpose], period.phases)
        if watts is None or w < watts:
            watts = w
        if period.phases is not None:
            phases = period.phases if phases is None else min(phases, period.phases)
    return Limit(watts, phases, until)


def composite_periods(
    profiles: tuple[Profile, ...],
    t0: float,
    duration_s: int,
    *,
    evse: int,
    tx_id: str | None,
    tx_start: float | None,
    to_watts: ToWatts,
    max_periods: int = 1024,
) -> list[tuple[int, float | None, int | None]]:
    """The composite schedule over [t0, t0 + duration) as (offset s, W or None, phases)."""
    out: list[tuple[int, float | None, int | None]] = []
    t, end = t0, t0 + duration_s
    while t < end and len(out) < max_periods:
        limit = composite(profiles, t, evse=evse, tx_id=tx_id, tx_start=tx_start, to_watts=to_watts)
        offset = math.floor(t - t0)
        if not out or (out[-1][1], out[-1][2]) != (limit.watts, limit.phases):
            out.append((offset, limit.watts, limit.phases))
        # Boundaries fall on whole seconds of the schedule; never stall on a fraction.
        t = max(limit.until, math.floor(t) + 1.0)
    return out
