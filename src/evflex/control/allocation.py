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
   In a direction's first pass every unit starts at its baseline, so whether it
   moves and where it lands when moved fully do not depend on ΔP: `prepare` lists
   those moves (`Pass`) and `allocate` finds how many of them a ΔP takes with one
   C-level running sum and a bisection; only the marginal units and the later
   passes run unit by unit. A fleet-wide step no longer walks 10,000 units.
3. `commands(plan, moved, current, threshold_w)` is the Minimal step: only limits that
   change by more than `threshold_w`, pause↔run transitions and releases are sent,
   so evaluating the same state twice yields no commands.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from itertools import accumulate, compress, islice
from operator import ne, neg, sub
from typing import NamedTuple

from evflex.control.units import Key, Unit

Command = tuple[str, int, float | None]
"""(station_id, evse_id, limit_w); limit None = release (remove evflex's limit)."""

_MASK = 0xFFFFFFFF
_SHIFT = 4294967296.0  # 2³²: laxity bucket above the hash; exact while |bucket| < 2²¹
_SOFT_NO_DISCHARGE, _SOFT, _HARD = 0, 1, 2
# relative size of a float operation's rounding that the fast cut keeps clear of
# (2⁻⁴⁰ ≫ 2⁻⁵³): there the precomputed full move and the unit-by-unit walk agree
_ROUNDING = 2.0**-40


class Pass(NamedTuple):
    """A direction's first pass, precomputed: the units it can move, in plan order.

    Each starts the pass at its baseline, so its full move (to max(floor, 0) down,
    to hi up, or to the gap edge on its side of those) is fixed by the plan; only
    how many of them a ΔP takes is not (`_cut`).
    """

    units: Sequence[Unit]  # the unit list these moves were computed for
    unit_ix: list[int]  # unit index of each move
    target_w: list[float]  # where the unit lands when moved fully
    amount_w: list[float]  # |target − baseline| > 0: what moving it fully covers
    total_w: list[float]  # running Σ amount_w: where to look for the cut
    at: list[int]  # position of the unit in the plan's order
    keys: list[Key]  # (station_id, evse_id) of each move
    commands: list[Command]  # (station_id, evse_id, target_w) of each move, on first use
    scale_w: float  # largest |power| involved, for the rounding margin


class Plan(NamedTuple):
    units: Sequence[Unit]
    down: list[int]  # unit indices, first to reduce first
    up: list[int]  # unit indices, first to raise first
    lower: Pass | None = None  # first down pass (reduce/pause, no discharge)
    raise_: Pass | None = None  # the up pass
    sort_keys: list[float] | None = None  # each unit's key in `down`'s sort
    sorted_by: tuple[int, float] | None = None  # (epoch, bucket_s) of those keys


def prepare(
    units: Sequence[Unit],
    epoch: int = 0,
    *,
    bucket_s: float = 900.0,
    previous: Plan | None = None,
) -> Plan:
    """Order units for both directions in O(n log n), and precompute both first passes.

    key_i = h(seed_i, epoch) − ⌊laxity_i/bucket_s⌋·2³², h a 32-bit multiplicative mix:
    down sorts by descending laxity bucket, ties in hash order (the rotation); up is
    the reverse. The order depends only on laxity and seed, so while the unit list
    keeps its indices a new baseline needs only `plan._replace(units=...)` (the
    precomputed passes then no longer apply and `allocate` walks unit by unit).

    `previous`: the plan of an earlier unit list (a re-plan's). The keys of the units
    it shares at the same index (the same objects) are taken from it, and when no
    key changed (laxity buckets are 900 s wide: the usual re-plan) neither does the
    order, so it is not sorted again. The answer is the same with or without it.
    """
    steps = prepare_steps(units, epoch, bucket_s=bucket_s, previous=previous)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            plan: Plan = done.value
            return plan


def prepare_steps(
    units: Sequence[Unit],
    epoch: int = 0,
    *,
    bucket_s: float = 900.0,
    previous: Plan | None = None,
) -> Generator[None, None, Plan]:
    """`prepare` in three steps, pausing (`yield`) after the order and after the down
    pass; returns the plan (`StopIteration.value`). A caller on an event loop runs a
    step per turn: at 10,000 units each takes a few ms, the whole up to ~15 ms."""
    mix = (epoch * 0x85EBCA6B + 0x27D4EB2F) & _MASK
    keys: list[float]
    down: list[int] | None = None
    old = previous
    if (
        old is not None
        and old.sort_keys is not None
        and old.sorted_by == (epoch, bucket_s)
        and len(old.units) == len(units)
    ):
        keys = [
            k if u is p else _sort_key(u, mix, bucket_s)
            for u, p, k in zip(units, old.units, old.sort_keys, strict=True)
        ]
        if keys == old.sort_keys:  # equal keys: a (deterministic) sort gives the same order
            down, up = old.down, old.up
    else:
        keys = [
            (((u.seed ^ mix) * 0x9E3779B1) & _MASK) - (u.laxity_s // bucket_s) * _SHIFT
            for u in units
        ]
    if down is None:
        down = sorted(range(len(units)), key=keys.__getitem__)
        up = down[::-1]
    yield
    lower = _first_pass(units, down, False)
    yield
    raise_ = _first_pass(units, up, True)
    return Plan(units, down, up, lower, raise_, keys, (epoch, bucket_s))


def _sort_key(u: Unit, mix: int, bucket_s: float) -> float:
    """A unit's key in `prepare`'s sort (the comprehension there, for one unit)."""
    return (((u.seed ^ mix) * 0x9E3779B1) & _MASK) - (u.laxity_s // bucket_s) * _SHIFT


def _first_pass(units: Sequence[Unit], order: list[int], up: bool) -> Pass:
    """The full moves of a first pass from the baselines (`_lower`'s _SOFT_NO_DISCHARGE
    pass, or `_raise`), in `order`; units it cannot move at any ΔP are left out.
    Column by column (comprehensions): this runs on every re-plan."""
    ordered = list(map(units.__getitem__, order))
    pos: list[int]
    bound: list[float]
    if up:
        pos = [j for j, u in enumerate(ordered) if u.baseline_w < u.hi_w]
        bound = [ordered[j].hi_w for j in pos]
    else:  # p > max(floor, 0); the bound keeps a floor of −0.0 as `_lower` does
        pos = [j for j, u in enumerate(ordered) if u.baseline_w > u.floor_w and u.baseline_w > 0.0]
        bound = [0.0 if f < 0.0 else f for f in (ordered[j].floor_w for j in pos)]
    moving = [ordered[j] for j in pos]
    base = [u.baseline_w for u in moving]
    gap = [u.gap_w for u in moving]
    target = bound[:]
    dropped: set[int] = set()
    for j in compress(range(len(bound)), bound):  # bounds ≠ 0: maybe in an AC gap band
        b, g = bound[j], gap[j]
        if g > 0.0 and -g < b < g:  # the band's edge toward p, or no move at all (a
            snapped = snap(b, base[j], g)  # partial move could not do better)
            if snapped is None:
                dropped.add(j)
            else:
                target[j] = snapped
    if dropped:
        kept = [j for j in range(len(pos)) if j not in dropped]
        pos, target = [pos[j] for j in kept], [target[j] for j in kept]
        moving, base = [moving[j] for j in kept], [base[j] for j in kept]
    amount = list(map(sub, target, base)) if up else list(map(sub, base, target))
    scale = max(abs(max(base + target, default=0.0)), abs(min(base + target, default=0.0)))
    return Pass(
        units,
        list(map(order.__getitem__, pos)),
        target,
        amount,
        list(accumulate(amount)),
        pos,
        [(u.station_id, u.evse_id) for u in moving],
        [],
        max(scale, max(gap, default=0.0)),
    )


class Moves(NamedTuple):
    """An allocation in parts: the first `fresh` moves of `first` are taken in full;
    `rest` holds every other moved unit (new power, W) and wins over them."""

    first: Pass | None
    fresh: int
    rest: dict[int, float]


def allocate(plan: Plan, delta_w: float, *, eps_w: float = 1.0) -> dict[int, float]:
    """New power (W) of every unit that moves to realise `delta_w`; others stay at baseline.

    Reaches Σ(p − baseline) = delta_w when capacity allows, up to one AC unit's gap
    (I_min·V·phases) of rounding; never leaves [lo, hi] of a unit.
    """
    return moved_of(moves(plan, delta_w, eps_w=eps_w))


def moved_of(m: Moves) -> dict[int, float]:
    """The {unit index: new power W} that `m` stands for."""
    if m.first is None or not m.fresh:
        return dict(m.rest)
    moved = dict(zip(m.first.unit_ix[: m.fresh], m.first.target_w[: m.fresh], strict=True))
    moved.update(m.rest)
    return moved


def moves(plan: Plan, delta_w: float, *, eps_w: float = 1.0) -> Moves:
    """`allocate`, with the first pass's full moves left as a count (see `Moves`).

    Exactly `allocate`'s walk: the full moves of the first pass are those the walk
    would make, and what remains after them is its own running remainder.
    """
    units = plan.units
    if delta_w > eps_w:
        first = plan.raise_ if plan.raise_ is not None and plan.raise_.units is units else None
        moved: dict[int, float] = {}
        if first is None:
            _raise(units, plan.up, moved, delta_w, eps_w)
            return Moves(None, 0, moved)
        k, r = _cut(first, delta_w, eps_w)
        if r > eps_w:
            _raise(units, plan.up[first.at[k - 1] + 1 if k else 0 :], moved, r, eps_w)
        return _merged(first, k, moved)
    if delta_w < -eps_w:
        need = -delta_w
        first = plan.lower if plan.lower is not None and plan.lower.units is units else None
        moved = {}
        if first is None:
            rest = _lower(units, plan.down, moved, need, _SOFT_NO_DISCHARGE, eps_w)
            k = 0
        else:
            k, rest = _cut(first, need, eps_w)
            if rest > eps_w:
                tail = plan.down[first.at[k - 1] + 1 if k else 0 :]
                rest = _lower(units, tail, moved, rest, _SOFT_NO_DISCHARGE, eps_w, fresh=True)
        if rest <= eps_w:
            return _merged(first, k, moved) if first is not None else Moves(None, 0, moved)
        # later passes start from where the first left the units
        moved = moved_of(Moves(first, k, moved))
        rest = _lower(units, plan.down, moved, rest, _SOFT, eps_w)
        if rest > eps_w and soft_down_w(units) < need:
            _lower(units, plan.down, moved, rest, _HARD, eps_w)
        return Moves(None, 0, moved)
    return Moves(None, 0, {})


def _merged(first: Pass, k: int, rest: dict[int, float]) -> Moves:
    """`Moves(first, k, rest)`, with the walk's first moves counted among the full
    moves when they are just that (the cut stops short of the last full move: a
    fleet-wide step is then one run of full moves, the plan's own lists)."""
    unit_ix, target_w, n = first.unit_ix, first.target_w, len(first.unit_ix)
    taken = 0
    for i, p in rest.items():
        if k + taken >= n or i != unit_ix[k + taken]:
            break
        t = target_w[k + taken]
        if p != t or math.copysign(1.0, p) != math.copysign(1.0, t):  # (0.0 vs −0.0)
            break
        taken += 1
    if not taken:
        return Moves(first, k, rest)
    ahead = dict(islice(rest.items(), taken, None)) if taken < len(rest) else {}
    return Moves(first, k + taken, ahead)


def _cut(first: Pass, r: float, eps: float) -> tuple[int, float]:
    """How many of `first`'s moves a pass covering `r` W takes in full, and what
    remains after them (W): the walk's own running remainder r − a₀ − a₁ − …,
    stopped before it comes within max(eps, rounding margin) of zero — the marginal
    move is left to the walk, which decides it exactly as before."""
    lim = max(eps, (r + first.scale_w) * _ROUNDING)
    amount, n = first.amount_w, len(first.amount_w)
    # the precomputed running sum finds the cut up to rounding; the exact remainder
    # is recomputed up to there (and beyond, should rounding have hidden it)
    end = min(n, bisect_left(first.total_w, r - lim) + 8)
    start = 0
    while True:
        left = list(accumulate(amount[start:end], sub, initial=r))  # non-increasing
        i = bisect_left(left, -lim, 1, key=neg)  # the first remainder ≤ lim
        if i < len(left):
            return start + i - 1, left[i - 1]
        if end >= n:
            return n, left[-1]
        start, r, end = end, left[-1], min(n, 2 * end + 8)


def _lower(
    units: Sequence[Unit],
    order: list[int],
    moved: dict[int, float],
    r: float,
    mode: int,
    eps: float,
    *,
    fresh: bool = False,
) -> float:
    """Reduce units in `order` until `r` W is covered; returns what is left (W).

    `fresh`: no unit of `order` has moved yet (as in a first pass from nothing)."""
    # the first pass starts from nothing moved, and a pass visits each unit once, so
    # there p is the baseline: no lookup
    fresh = fresh or not moved
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


class Commands(NamedTuple):
    """Minimal commands in parts (`command_list` joins them): the moves of `first` at
    positions `fresh`, each to its full target; then `other` (every other changed
    limit, in allocation order); then the releases, in `current`'s order. The parts
    let the engine reuse what it built per plan for `first`'s moves."""

    first: Pass | None
    fresh: Sequence[int]  # positions in `first` (a range when they are all its first k)
    other: list[Command]
    releases: list[Key]


def minimal(
    plan: Plan, m: Moves, current: Mapping[Key, float], threshold_w: float = 200.0
) -> Commands:
    """`commands` for an allocation given as `Moves` (same commands, same order).

    Its full moves are compared with `current` in bulk: when the limits in force were
    set in the plan's order (the usual case: they came from earlier steps of this
    plan), their values are read off in order instead of looked up one by one.
    """
    units = plan.units
    first, k = m.first, m.fresh
    if first is None:
        k = 0
    other: list[Command] = []
    if not current:
        # nothing limited yet (a first step: every moved unit is new), so no
        # comparison and no releases
        for i, p in m.rest.items():
            other.append((units[i].station_id, units[i].evse_id, p))
        return Commands(first, range(k), other, [])
    if not k and not m.rest:  # nothing to move (a release): every limit goes
        return Commands(first, range(0), other, list(current))
    fresh: Sequence[int] = range(k)
    wanted: set[Key] = set()
    tail: list[Key] | None = None  # current's keys after the full moves', when in order
    if first is not None and k:
        keys, targets = first.keys[:k], first.target_w[:k]
        now: list[float | None]
        if len(current) >= k and list(islice(current, k)) == keys:
            now = list(islice(current.values(), k))
            tail = list(islice(current, k, None))
        else:
            lookup: Callable[[Key], float | None] = current.get
            now = list(map(lookup, keys))
            wanted.update(keys)
        if threshold_w < 0.0:  # every limit differs by more than that
            fresh = range(k)
        elif now == targets:  # the usual re-evaluation: all in force already
            fresh = range(0)
        else:  # only where the limit differs can it need a command
            differs = compress(range(k), map(ne, now, targets))
            fresh = [j for j in differs if _changed(targets[j], now[j], threshold_w)]
    get = current.get
    for i, p in m.rest.items():
        u = units[i]
        key = (u.station_id, u.evse_id)
        wanted.add(key)
        if _changed(p, get(key), threshold_w):
            other.append((key[0], key[1], p))
    if tail is not None:  # current starts with the full moves: only its tail can go
        releases = [key for key in tail if key not in wanted] if wanted else tail
    else:
        releases = [key for key in current if key not in wanted]
    return Commands(first, fresh, other, releases)


def _changed(p: float, cur: float | None, threshold_w: float) -> bool:
    """Whether a unit's new power `p` needs a command over the limit `cur` in force."""
    return cur is None or abs(p - cur) > threshold_w or (p == 0.0) != (cur == 0.0)


def command_list(c: Commands) -> list[Command]:
    """The commands of `c` as one list (`commands`' answer)."""
    out: list[Command] = []
    first = c.first
    if first is not None and c.fresh:
        if not first.commands:  # built once per plan, for this list form only
            first.commands.extend(
                [(sid, eid, t) for (sid, eid), t in zip(first.keys, first.target_w, strict=True)]
            )
        if isinstance(c.fresh, range):
            out = first.commands[c.fresh.start : c.fresh.stop]
        else:
            out = list(map(first.commands.__getitem__, c.fresh))
    out += c.other
    out += [(sid, eid, None) for sid, eid in c.releases]
    return out


def evaluate(
    plan: Plan, delta_w: float, current: Mapping[Key, float], threshold_w: float = 200.0
) -> list[Command]:
    """`commands(plan, allocate(plan, delta_w), current, threshold_w)`, in bulk."""
    return command_list(minimal(plan, moves(plan, delta_w), current, threshold_w))


def apply_commands(current: Mapping[Key, float], cmds: Iterable[Command]) -> dict[Key, float]:
    """The limits in force once `cmds` are delivered (what the engine should remember)."""
    out = dict(current)
    for sid, eid, limit in cmds:
        if limit is None:
            out.pop((sid, eid), None)
        else:
            out[(sid, eid)] = limit
    return out
