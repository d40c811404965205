"""Allocation units: what each EVSE can do right now, built once from fleet state.

A `Unit` holds the numbers the allocator needs (load convention, W):

    lo_w ≤ floor_w ≤ baseline_w ≤ hi_w   (typically), and the gap (0, gap_w):

- gap_w: smallest non-zero |P| an AC EVSE can command, I_min·V·phases
  (IEC 61851-1: 6 A minimum PWM current; below it the car pauses). 0 for DC/BESS.
- floor_w: lowest power that keeps the driver's departure need and the battery's
  SoC window intact over the activation horizon H (`departure_floor_w`); negative
  when the unit may discharge (V2G/BESS).
- lo_w: lowest power when the target cannot be met otherwise: a vehicle may then be
  paused below its need, but never discharged into a shortfall nor below reserve.
- hi_w: highest reachable power. A limit cannot make a car draw more than it wants,
  so a plain charging EVSE has hi_w = baseline_w; setpoint-controlled units
  (bidirectional EVSEs, BESS) can be raised to their charge limit.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from evflex.fleet.model import ChargingNeeds, Evse, EvseStatus, Station
from evflex.fleet.state import FleetState

Key = tuple[str, int]
V2gBudget = Callable[[str, int], float]
"""Remaining discharge energy allowed for the vehicle at (station_id, evse_id), Wh."""

NO_DEPARTURE_LAXITY_S = 1e9
_UNUSABLE = (EvseStatus.FAULTED, EvseStatus.UNAVAILABLE)


def unlimited_budget(station_id: str, evse_id: int) -> float:
    return math.inf


@dataclass(frozen=True, slots=True)
class BessSpec:
    """Protection limits of a stationary battery behind an OCPP endpoint."""

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc_min_pct: float = 10.0
    soc_max_pct: float = 90.0


@dataclass(frozen=True, slots=True)
class EvseSpec:
    """Static facts about an EVSE (inventory/configuration). Defaults: 11 kW AC, 3 × 16 A."""

    max_w: float = 11_040.0
    phases: int = 3
    voltage_v: float = 230.0
    ac: bool = True
    min_current_a: float = 6.0
    max_discharge_w: float = 0.0  # > 0: bidirectional (V2G-capable) EVSE
    bess: BessSpec | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the driver/vehicle told us. Unknown fields make the unit fully flexible."""

    departure_ts: float | None = None
    energy_need_wh: float | None = None  # still wanted by departure
    battery_wh: float | None = None
    reserve_pct: float = 30.0  # V2G never discharges below this SoC
    v2g: bool = False  # vehicle capable and driver consented
    opt_out: bool = False


_NO_SESSION = SessionInfo()


@dataclass(frozen=True, slots=True)
class Unit:
    station_id: str
    evse_id: int
    baseline_w: float
    hi_w: float
    floor_w: float
    lo_w: float
    gap_w: float
    laxity_s: float = NO_DEPARTURE_LAXITY_S  # slack before departure at full power, |·| ≤ 1e9
    seed: int = 0  # stable per-unit hash for rotation
    stationary: bool = False  # BESS: never departs
    # the fleet's object for this EVSE (`units_from_fleet`), so the engine reaches its
    # transaction and power without a lookup per unit; not part of the unit's value
    evse: Evse | None = field(default=None, compare=False, repr=False)


def a_to_w(current_a: float, voltage_v: float, phases: int) -> float:
    """P = I·V·n (W) for n phases at phase voltage V, unity power factor."""
    return current_a * voltage_v * phases


def w_to_a(power_w: float, voltage_v: float, phases: int) -> float:
    """I = P/(V·n) (A per phase)."""
    return power_w / (voltage_v * phases)


def departure_floor_w(need_wh: float, left_s: float, max_w: float, horizon_s: float) -> float:
    """Lowest power over the next H seconds that still meets the departure need (W).

    Charging at p for H then at max_w until departure delivers p·H + max_w·(T − H),
    which must reach E: p ≥ (3600·E − max_w·(T − H))/H, clamped to [0, max_w].
    If departure is within H: p ≥ 3600·E/T. E in Wh, T = `left_s`, H = `horizon_s`.
    """
    if need_wh <= 0:
        return 0.0
    if left_s <= horizon_s:
        return max_w if left_s <= 0 else min(max_w, 3600.0 * need_wh / left_s)
    return min(max_w, max(0.0, (3600.0 * need_wh - max_w * (left_s - horizon_s)) / horizon_s))


def laxity_s(need_wh: float, left_s: float, max_w: float) -> float:
    """Slack before departure: T − 3600·E/max_w (s). Negative: the need cannot be met."""
    return left_s - (3600.0 * need_wh / max_w if max_w > 0 else 0.0)


def v2g_discharge_w(
    spec: EvseSpec,
    session: SessionInfo,
    soc_pct: float | None,
    left_s: float | None,
    need_wh: float,
    horizon_s: float,
    budget_wh: float,
) -> float:
    """Discharge power a vehicle can sustain for H seconds without harm (W, ≥ 0).

    d = min(P_dis, 3600·C·(SoC − reserve)/100/H, 3600·B/H, (P_max·(T − H) − 3600·E)/H):
    EVSE rating, SoC reserve (C battery Wh, SoC in %), V2G budget B (Wh), and the
    departure need E (Wh) still reachable at P_max after discharging. 0 when the
    vehicle is not V2G-enabled or its SoC/capacity is unknown.
    """
    if not session.v2g or spec.max_discharge_w <= 0 or soc_pct is None or not session.battery_wh:
        return 0.0
    caps = [
        spec.max_discharge_w,
        3600.0 * session.battery_wh * (soc_pct - session.reserve_pct) / 100.0 / horizon_s,
        3600.0 * budget_wh / horizon_s,
    ]
    if left_s is not None:
        caps.append((spec.max_w * (left_s - horizon_s) - 3600.0 * need_wh) / horizon_s)
    return max(0.0, min(caps))


def ev_unit(
    key: Key,
    baseline_w: float,
    spec: EvseSpec,
    session: SessionInfo,
    soc_pct: float | None,
    now: float,
    horizon_s: float,
    budget_wh: float = math.inf,
    evse: Evse | None = None,
) -> Unit:
    """The unit for an EVSE with a vehicle charging (see the module docstring for bounds)."""
    hi_fixed, floor, gap, lax = _ev_bounds(spec, session, soc_pct, now, horizon_s, budget_wh)
    hi = max(baseline_w, 0.0) if hi_fixed is None else hi_fixed
    return Unit(*key, baseline_w, hi, floor, min(0.0, floor), gap, lax, _seed(key), False, evse)


def _ev_bounds(
    spec: EvseSpec,
    session: SessionInfo,
    soc_pct: float | None,
    now: float,
    horizon_s: float,
    budget_wh: float,
) -> tuple[float | None, float, float, float]:
    """`ev_unit`'s numbers that do not depend on the baseline: (hi_w, or None when it
    is the baseline's max(p, 0); floor_w; gap_w; laxity_s)."""
    gap = a_to_w(spec.min_current_a, spec.voltage_v, spec.phases) if spec.ac else 0.0
    need = session.energy_need_wh or 0.0
    left = None if session.departure_ts is None else session.departure_ts - now
    floor = 0.0 if left is None else departure_floor_w(need, left, spec.max_w, horizon_s)
    if 0.0 < floor < gap:
        floor = gap  # an AC EVSE cannot run between 0 and its minimum current
    dis = v2g_discharge_w(spec, session, soc_pct, left, need, horizon_s, budget_wh)
    if dis < gap:
        dis = 0.0  # AC discharge also has a minimum current: less than that is none
    if floor <= 0.0 < dis:
        floor = -dis
    lax = NO_DEPARTURE_LAXITY_S if left is None else laxity_s(need, left, spec.max_w)
    lax = max(-NO_DEPARTURE_LAXITY_S, min(NO_DEPARTURE_LAXITY_S, lax))
    return (spec.max_w if dis > 0 else None), floor, gap, lax


def bess_unit(
    key: Key, baseline_w: float, bess: BessSpec, soc_pct: float, horizon_s: float
) -> Unit:
    """A stationary battery: charge/discharge within its protection limits and SoC window.

    hi = min(P_ch, 3600·C·(SoC_max − SoC)/100/H)
    floor = lo = −min(P_dis, 3600·C·(SoC − SoC_min)/100/H)   (C in Wh, SoC in %, H in s).
    """
    energy_s = 3600.0 * bess.capacity_wh / 100.0 / horizon_s
    hi = max(0.0, min(bess.max_charge_w, energy_s * (bess.soc_max_pct - soc_pct)))
    dis = max(0.0, min(bess.max_discharge_w, energy_s * (soc_pct - bess.soc_min_pct)))
    return Unit(*key, baseline_w, hi, -dis, -dis, 0.0, NO_DEPARTURE_LAXITY_S, _seed(key), True)


def session_from_needs(needs: ChargingNeeds | None, register_wh: float | None) -> SessionInfo:
    """What the allocator knows of a session from the EV's or the driver's statement.

    The energy still needed shrinks by what the EVSE's register counted since the
    statement: E_left = E_stated − (register_now − register_then), at least 0.
    """
    if needs is None:
        return _NO_SESSION
    need = needs.energy_wh
    if need is not None and needs.register_wh is not None and register_wh is not None:
        need = max(0.0, need - (register_wh - needs.register_wh))
    return SessionInfo(
        departure_ts=needs.departure_at.timestamp() if needs.departure_at else None,
        energy_need_wh=need,
        battery_wh=needs.battery_wh,
        reserve_pct=needs.reserve_pct if needs.reserve_pct is not None else 30.0,
        v2g=needs.v2g,
        opt_out=needs.opt_out,
    )


def units_from_fleet(
    fleet: FleetState,
    baseline: Mapping[Key, float],
    specs: Mapping[Key, EvseSpec],
    sessions: Mapping[Key, SessionInfo],
    now: float,
    *,
    horizon_s: float = 900.0,
    budget: V2gBudget = unlimited_budget,
    default_spec: EvseSpec = EvseSpec(),
    model_specs: Mapping[tuple[str, str], EvseSpec] | None = None,
    memo: UnitMemo | None = None,
) -> list[Unit]:
    """One unit per controllable EVSE of the connected stations.

    Included: EVSEs with an active transaction (vehicles) and EVSEs whose spec is a
    BESS with a known SoC. Excluded: faulted/unavailable EVSEs and opted-out drivers.
    Baseline power defaults to the EVSE's last measured power. The spec is the EVSE's
    own (`specs`), else its hardware model's (`model_specs`, by vendor and model),
    else `default_spec`; the session is `sessions`' entry, else what the EV or the
    driver stated (`Evse.needs`), and an EV's own power limit caps the EVSE's.
    `memo` (updated in place) lets a call reuse the units of the previous one whose
    inputs did not change (see `UnitMemo`).
    """
    collection = UnitCollection(
        baseline,
        specs,
        sessions,
        now,
        horizon_s=horizon_s,
        budget=budget,
        default_spec=default_spec,
        model_specs=model_specs,
        memo=memo,
    )
    collection.add(fleet.stations.values())
    return collection.finish()


class UnitCollection:
    """`units_from_fleet` a few stations at a time: `add` them in any number of calls
    (each station once), then `finish`. The engine's periodic re-plan collects the
    fleet over several event-loop turns this way so that no turn takes long.

    The memo is updated station by station as they are added (each entry stays a
    correct cache entry on its own), and pruned of EVSEs not visited by `finish`: a
    collection given up half-way leaves a memo that is still a valid cache.
    """

    __slots__ = (
        "_baseline",
        "_budget",
        "_default_spec",
        "_entries",
        "_fixed",
        "_horizon_s",
        "_memo",
        "_model_specs",
        "_now",
        "_reuse",
        "_sessions",
        "_specs",
        "units",
    )

    def __init__(
        self,
        baseline: Mapping[Key, float],
        specs: Mapping[Key, EvseSpec],
        sessions: Mapping[Key, SessionInfo],
        now: float,
        *,
        horizon_s: float = 900.0,
        budget: V2gBudget = unlimited_budget,
        default_spec: EvseSpec = EvseSpec(),
        model_specs: Mapping[tuple[str, str], EvseSpec] | None = None,
        memo: UnitMemo | None = None,
    ) -> None:
        self._baseline, self._specs, self._sessions, self._now = baseline, specs, sessions, now
        self._horizon_s, self._budget = horizon_s, budget
        self._default_spec, self._model_specs, self._memo = default_spec, model_specs, memo
        self.units: list[Unit] = []
        # reuse a unit only while the memo was built with the same fixed inputs, and
        # only with the default budget (any other budget may change between two calls)
        self._fixed = (horizon_s, default_spec, model_specs)
        self._reuse = memo is not None and budget is unlimited_budget and memo.fixed == self._fixed
        # updated in place, so an unchanged unit allocates nothing that outlives the loop
        # (a new dict would keep 10,000 new key tuples: enough to set off the cyclic GC)
        self._entries: dict[Key, _MemoEntry] = (
            memo.entries if memo is not None and self._reuse else {}
        )

    def add(self, stations: Iterable[Station]) -> None:
        """Add the units of these stations' EVSEs (each station once per collection)."""
        units, entries, now, horizon_s = self.units, self._entries, self._now, self._horizon_s
        default_spec, model_specs, budget = self._default_spec, self._model_specs, self._budget
        # (bound once: this loop runs over every EVSE on every re-plan)
        spec_of, base_of = self._specs.get, self._baseline.get
        session_of, entry_of = self._sessions.get, entries.get
        for station in stations:
            if not station.connected:
                continue
            station_spec = default_spec
            if model_specs:
                hardware = (station.vendor or "", station.model or "")
                station_spec = model_specs.get(hardware, default_spec)
            for evse in station.evses.values():
                key = (station.station_id, evse.evse_id)
                spec = spec_of(key, station_spec)
                if evse.status in _UNUSABLE or (spec.bess is None and evse.transaction is None):
                    entries.pop(key, None)  # (no unit)
                    continue
                base = base_of(key, evse.power_w or 0.0)
                given = session_of(key)
                # everything the unit is computed from: frozen values, and the EVSE by
                # identity (the unit refers to it; it keeps the id taken); `now` only
                # counts for a unit with a departure
                sig = (id(evse), base, spec, given, evse.needs, evse.energy_wh, evse.soc_pct)
                old = entry_of(key)
                if old is not None and (old[2] is None or old[2] == now):
                    if old[0] == sig:
                        units.append(old[1])
                        continue
                    was = old[0]
                    if was[0] == sig[0] and was[2:] == sig[2:]:
                        # only the baseline changed (a meter reading of a unit evflex does
                        # not limit): the unit's other numbers do not depend on it
                        u, hi_fixed = old[1], old[3]
                        hi = max(base, 0.0) if hi_fixed is None else hi_fixed
                        unit = Unit(
                            *key, base, hi, u.floor_w, u.lo_w, u.gap_w, u.laxity_s, u.seed,
                            u.stationary, u.evse,
                        )  # fmt: skip
                        entries[key] = (sig, unit, old[2], hi_fixed)
                        units.append(unit)
                        continue
                if spec.bess is not None:
                    if evse.soc_pct is None:
                        entries.pop(key, None)
                        continue
                    unit = bess_unit(key, base, spec.bess, evse.soc_pct, horizon_s)
                    unit = replace(unit, evse=evse)
                    entries[key] = (sig, unit, None, unit.hi_w)
                    units.append(unit)
                    continue
                session = given or session_from_needs(evse.needs, evse.energy_wh)
                needs = evse.needs
                if needs is not None and needs.ev_max_power_w and needs.ev_max_power_w < spec.max_w:
                    spec = replace(spec, max_w=needs.ev_max_power_w)
                if not session.opt_out:
                    budget_wh = budget(*key)
                    bounds = _ev_bounds(spec, session, evse.soc_pct, now, horizon_s, budget_wh)
                    hi_fixed, floor, gap, lax = bounds
                    hi = max(base, 0.0) if hi_fixed is None else hi_fixed
                    # (`ev_unit`, with the bounds kept for a later change of baseline)
                    unit = Unit(
                        *key, base, hi, floor, min(0.0, floor), gap, lax, _seed(key), False, evse
                    )
                    timed = None if session.departure_ts is None else now
                    entries[key] = (sig, unit, timed, hi_fixed)
                    units.append(unit)
                else:
                    entries.pop(key, None)

    def finish(self) -> list[Unit]:
        """The units added, in the order added; the memo keeps only their entries."""
        units, entries = self.units, self._entries
        if len(entries) != len(units):  # EVSEs not visited (station gone or offline)
            entries = {(u.station_id, u.evse_id): entries[(u.station_id, u.evse_id)] for u in units}
        if self._memo is not None:
            self._memo.fixed, self._memo.entries = self._fixed, entries
        return units


_MemoEntry = tuple[tuple[object, ...], Unit, float | None, float | None]
"""(what the unit was computed from, the unit, `now` when it depends on it, its hi_w
when that does not follow its baseline)."""


@dataclass(slots=True)
class UnitMemo:
    """The units of the last `units_from_fleet` call, by EVSE, with their inputs.

    A re-plan every few seconds mostly finds the same inputs (a limited unit's
    baseline is fixed; without a departure nothing depends on the clock): their
    units are taken as they are (the same objects, so an unchanged fleet gives an
    identical unit list, cheap to recognise) instead of computed again. Only a
    cache: `units_from_fleet` answers the same with or without it.
    """

    fixed: object = None
    entries: dict[Key, _MemoEntry] = field(default_factory=dict)


@functools.lru_cache(maxsize=1 << 16)
def _seed(key: Key) -> int:
    """Stable across processes (unlike `hash(str)`), so a rotation can be replayed."""
    return zlib.crc32(f"{key[0]}/{key[1]}".encode())
