"""One shared 1-second tick for the whole fleet, spread over the second.

A timer per station would cost a timer handle and a wake-up each; instead the
stations are dealt into `slots` groups and one chained callback runs group k
at k/slots of every second, so 10,000 stations make 20 wake-ups a second and
their traffic is spread evenly rather than sent in one burst.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from evflex.sim.stats import Stats

log = logging.getLogger(__name__)


class Ticking(Protocol):
    def tick(self, now: float, mono: float) -> None: ...


class Ticker:
    __slots__ = ("_groups", "_handle", "_loop", "_next", "_on_second", "_slot", "_stats")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        members: Sequence[Ticking],
        stats: Stats,
        slots: int = 20,
        on_second: Callable[[], None] | None = None,
    ) -> None:
        slots = max(1, min(slots, len(members) or 1))
        self._groups = [list(members[k::slots]) for k in range(slots)]
        self._loop = loop
        self._stats = stats
        self._slot = 0
        self._next = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._on_second = on_second  # after each full round, e.g. to wake waiters

    @property
    def period_s(self) -> float:
        return 1.0 / len(self._groups)

    def start(self) -> None:
        self._next = self._loop.time()
        self._handle = self._loop.call_at(self._next, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        started = time.perf_counter()
        now, mono = time.time(), self._loop.time()
        for member in self._groups[self._slot]:
            try:
                member.tick(now, mono)
            except Exception:  # one broken station must not stop the fleet's clock
                log.exception("station tick failed")
        self._stats.ticks += 1
        self._stats.tick_seconds += time.perf_counter() - started
        self._slot = (self._slot + 1) % len(self._groups)
        if self._slot == 0 and self._on_second is not None:
            self._on_second()
        # Absolute schedule: no drift; if we fell behind, skip ahead instead of bursting
        self._next = max(self._next + self.period_s, mono - self.period_s)
        self._handle = self._loop.call_at(self._next, self._run)
