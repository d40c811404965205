"""A station's charging profiles: what it has accepted, and what it actually follows.

`installed` is what the station reports (GetCompositeSchedule, replacements);
`applied` is what the power electronics follow. A new set becomes applied
after the station's response delay, in the order the commands arrived; a
faulty "accept-but-ignore" station never applies anything.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from evflex.sim.faults import DelayModel
from evflex.sim.schedule import Profile, Purpose, stack_order


class ProfileStore:
    __slots__ = ("_delays", "_last_apply", "_pending", "_rng", "applied", "ignore", "installed")

    def __init__(self, delays: DelayModel, rng: random.Random, *, ignore: bool = False) -> None:
        self._delays = delays
        self._rng = rng
        self.ignore = ignore
        self.installed: tuple[Profile, ...] = ()
        self.applied: tuple[Profile, ...] = ()
        self._pending: deque[tuple[float, tuple[Profile, ...]]] = deque()
        self._last_apply = 0.0

    def install(self, profile: Profile, now: float) -> None:
        """Add `profile`, replacing one with the same id, or the same stackLevel, purpose
        and EVSE (1.6 §5.16.1: "the new charging profile SHALL replace the existing")."""
        kept = tuple(
            p
            for p in self.installed
            if p.profile_id != profile.profile_id
            and (p.stack_level, p.purpose, p.evse)
            != (profile.stack_level, profile.purpose, profile.evse)
        )
        self._set((*kept, profile), now)

    def remove(self, doomed: Callable[[Profile], bool], now: float) -> int:
        """Remove the installed profiles `doomed` selects; returns how many."""
        kept = tuple(p for p in self.installed if not doomed(p))
        removed = len(self.installed) - len(kept)
        if removed:
            self._set(kept, now)
        return removed

    def end_transaction(self, evse: int) -> None:
        """A TxProfile ends with its transaction, at once (1.6 §3.13.2, 2.0.1 K01.FR.16)."""

        def tx_profile(p: Profile) -> bool:
            return p.purpose is Purpose.TX and p.evse in (0, evse)

        self.installed = tuple(p for p in self.installed if not tx_profile(p))
        self.applied = tuple(p for p in self.applied if not tx_profile(p))
        self._pending = deque(
            (at, tuple(p for p in snapshot if not tx_profile(p))) for at, snapshot in self._pending
        )

    def due(self, now: float) -> bool:
        return bool(self._pending) and now >= self._pending[0][0]

    def apply_due(self, now: float) -> None:
        while self._pending and now >= self._pending[0][0]:
            _, self.applied = self._pending.popleft()

    def _set(self, profiles: tuple[Profile, ...], now: float) -> None:
        self.installed = stack_order(profiles)
        if self.ignore:
            return  # answers Accepted, never follows (field fact: go-e #105)
        at = max(now + self._delays.draw(self._rng), self._last_apply)
        self._last_apply = at
        self._pending.append((at, self.installed))
