"""Allocation: a portfolio change ΔP (W, load convention) → per-EVSE limits.

Three pure steps, so the expensive one can be cached:

1. `prepare(units, epoch)` orders the units (O(n log n)); redo it when the units or
   the rotation epoch change, not on every frequency sample.
2. `allocate(plan, delta_w)` walks the order and moves units (O(k), k = units moved).
   Fair: down-moves take the units with the most laxity first (they lose least
   energy by departure); among similar laxity (same `bucket_s`) the order is a hash
   of (unit, epoch), so a new epoch rotates who is paused. Up-moves go to the units
   that need energy most. Passes for a reduction R = −ΔP, each only if R remains:
     (1) reduce/pause down to max(floor, 0): no discharge, no departure harm;
     (2) V2G/BESS discharge down to floor;
     (3) only if the soft capacity Σ(baseline − floor)⁺ < R: pause below the
         departure need (lo), least-harmed units first.
   A unit moves fully to its bound before the next one moves (fewest units touched);
   the last one moves partially. AC units never land in (0, gap): a move that would
   stops at the gap edge (the next unit covers the rest) or is skipped.
3. `commands(plan, moved, current, threshold_w)` is the Minimal step: only limits that
   change by more than `threshold_w`, pause↔run transitions and releases are sent,
   so evaluating the same state twice yields no commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from evflex.control.units import Key, Unit

Command = tuple[str, int, float | None]
"""(station_id, evse_id, limit_w); limit None = release (remove evflex's limit)."""

_MASK = 0xFFFFFFFF
_SHIFT = 4294967296.0  # 2³²: laxity bucket above the hash; exact while |bucket| < 2²¹
_SOFT_NO_DISCHARGE, _SOFT, _HARD = 0, 1, 2


class Plan(NamedTuple):
    units: Sequence[Unit]
    down: list[int]  # unit indices, first to reduce first
    up: list[int]  # unit indices, first to raise first


def prepare(units: Sequence[Unit], epoch: int = 0, *, bucket_s: float = 900.0) -> Plan:
    """Order units for both directions in O(n log n).

    key_i = h(seed_i, epoch) − ⌊laxity_i/bucket_s⌋·2³², h a 32-bit multiplicative mix:
    down sorts by descending laxity bucket, ties in hash order (the rotation); up is
    the reverse. The order depends only on laxity and seed, so while the unit list
    keeps its indices a new baseline needs only `plan._replace(units=...)`.
    """
    mix = (epoch * 0x85EBCA6B + 0x27D4EB2F) & _MASK
    keys = [
        (((u.seed ^ mix) * 0x9E3779B1) & _MASK) - (u.laxity_s // bucket_s) * _SHIFT for u in units
    ]
    down = sorted(range(len(units)), key=keys.__getitem__)
    return Plan(units, down, down[::-1])


def allocate(plan: Plan, delta_w: float, *, eps_w: float = 1.0) -> dict[int, float]:
    """New power (W) of every unit that moves to realise `delta_w`; others stay at baseline.

    Reaches Σ(p − baseline) = delta_w when capacity allows, up to one AC unit's gap
    (I_min·V·phases) of rounding; never leaves [lo, hi] of a unit.
    """
    moved: dict[int, float] = {}
    if delta_w > eps_w:
        _raise(plan.units, plan.up, moved, delta_w, eps_w)
    elif delta_w < -eps_w:
        need = -delta_w
        rest = _lower(plan.units, plan.down, moved, need, _SOFT_NO_DISCHARGE, eps_w)
        if rest > eps_w:
            rest = _lower(plan.units, plan.down, moved, rest, _SOFT, eps_w)
        if rest > eps_w and soft_down_w(plan.units) < need:
            _lower(plan.units, plan.down, moved, rest, _HARD, eps_w)
    return moved


def _lower(
    units: Sequence[Unit],
    order: list[int],
    moved: dict[int, float],
    r: float,
    mode: int,
    eps: float,
) -> float:
    """Reduce units in `order` until `r` W is covered; returns what is left (W)."""
    # the first pass starts from nothing moved, and a pass visits each unit once, so
    # there p is the baseline: no lookup (a fleet-wide step walks 10,000 units here)
    fresh = not moved
    hard = mode == _HARD
    no_discharge = mode == _SOFT_NO_DISCHARGE
    for i in order:
        u = units[i]
        p = u.baseline_w if fresh else moved.get(i, u.baseline_w)
        bound = u.lo_w if hard else u.floor_w
        if no_discharge and bound < 0.0:
            bound = 0.0
        if p <= bound:
            continue
        want = p - r if p - r > bound else bound
        gap = u.gap_w
        if gap > 0.0 and want != 0.0 and -gap < want < gap:
            snapped = snap(want, p, gap)
            if snapped is None:
                continue
            want = snapped
        moved[i] = want
        r -= p - want
        if r <= eps:
            break
    return r


def _raise(
    units: Sequence[Unit], order: list[int], moved: dict[int, float], r: float, eps: float
) -> float:
    """Raise units in `order` toward hi until `r` W is covered; returns what is left (W)."""
    for i in order:
        u = units[i]
        p = moved.get(i, u.baseline_w)
        if p >= u.hi_w:
            continue
        want = p + r if p + r < u.hi_w else u.hi_w
        if u.gap_w > 0.0 and want != 0.0 and -u.gap_w < want < u.gap_w:
            snapped = snap(want, p, u.gap_w)
            if snapped is None:
                continue
            want = snapped
        moved[i] = want
        r -= want - p
        if r <= eps:
            break
    return r


def snap(want: float, p: float, gap: float) -> float | None:
    """Move `want` out of the band (−gap, 0) ∪ (0, gap) to its edge on p's side.

    Returns None when that edge is not strictly between `want` and `p` (no move is
    possible without overshooting). Rounding toward p never overshoots the target.
    """
    low, high = (0.0, gap) if want > 0.0 else (-gap, 0.0)
    edge = high if want < p else low
    return edge if (edge - want) * (p - edge) > 0.0 else None


def soft_down_w(units: Iterable[Unit]) -> float:
    """Σ max(0, baseline − floor): reduction available without departure harm (W)."""
    return sum(u.baseline_w - u.floor_w for u in units if u.baseline_w > u.floor_w)


def commands(
    plan: Plan,
    moved: Mapping[int, float],
    current: Mapping[Key, float],
    threshold_w: float = 200.0,
) -> list[Command]:
    """Minimal commands turning the `current` limits into the allocation.

    A moved unit is commanded when it has no limit yet, when |p − current| >
    `threshold_w`, or when it crosses between paused (0) and running; units no longer
    moved but still limited are released. Cost O(moved + current).
    """
    units = plan.units
    if not current:
        # nothing limited yet (a first step: every moved unit is new), so no
        # comparison and no releases: 10,000 units in half the time of the loop below
        return [(units[i].station_id, units[i].evse_id, p) for i, p in moved.items()]
    if not moved:  # nothing to move (a release): every limit goes
        return [(sid, eid, None) for sid, eid in current]
    out: list[Command] = []
    wanted: set[Key] = set()
    get = current.get
    for i, p in moved.items():
        u = units[i]
        key = (u.station_id, u.evse_id)
        wanted.add(key)
        cur = get(key)
        if cur is None or abs(p - cur) > threshold_w or (p == 0.0) != (cur == 0.0):
            out.append((key[0], key[1], p))
    out.extend((sid, eid, None) for sid, eid in current if (sid, eid) not in wanted)
    return out


def evaluate(
    plan: Plan, delta_w: float, current: Mapping[Key, float], threshold_w: float = 200.0
) -> list[Command]:
    """`commands(plan, allocate(plan, delta_w), current, threshold_w)`."""
    return commands(plan, allocate(plan, delta_w), current, threshold_w)


def apply_commands(current: Mapping[Key, float], cmds: Iterable[Command]) -> dict[Key, float]:
    """The limits in force once `cmds` are delivered (what the engine should remember)."""
    out = dict(current)
    for sid, eid, limit in cmds:
        if limit is None:
            out.pop((sid, eid), None)
        else:
            out[(sid, eid)] = limit
    return out
