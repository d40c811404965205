"""When the cyclic garbage collector may pause the event loop, and when it may not.

Every pause of the collector stalls every station's acknowledgements. Two rules:

* Every `interval_s`, the objects that survived are frozen (`gc.freeze()`): they
  are our long-lived state (sessions, fleet, caches), freed by reference counting
  when dropped, and a full collection would only walk them again.
* While stations connect in numbers, a collection of the older generations (1
  and 2) is replaced by a freeze. Why: each new station brings hundreds of
  long-lived objects (session, fleet state, buffered events), so between two
  periodic freezes the older generations grow by tens of thousands of objects
  and CPython walks all of them in one go. Measured, 5,000 stations connecting at
  once: six full collections in 4.4 s, 31-141 ms each (0.4-0.8 s of loop stalls,
  the largest stalls of the connect storm), and generation-1 collections of up to
  8 ms. Frozen at the start of the collection, the generations are empty and the
  collection takes microseconds. "In numbers" is measured by the startup frames
  (the first frames of new connections, see evflex.ocpp.pacing) handled since
  the last freeze.

What freezing gives up, either way, is reclaiming *cyclic* garbage that happens to
be on the heap at that moment: in the storm above, full collections found ~3,300
cyclic garbage objects in all, which now stay allocated. Outside a connect burst
collections run as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable
from typing import Any


class GcPolicy:
    """The periodic freezer and a gc callback that turns a burst's collections of the
    older generations into freezes."""

    def __init__(
        self, interval_s: float, startup_frames: Callable[[], int], burst_frames: int = 500
    ) -> None:
        """`startup_frames`: a counter of the startup frames handled so far.
        `burst_frames`: this many since the last freeze make a burst."""
        self.interval_s = interval_s
        self.burst_frames = burst_frames
        self._startup_frames = startup_frames
        self._frames_at_freeze = 0
        self.freezes = 0  # periodic ones
        self.collections_frozen = 0  # collections replaced by a freeze
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "start" or info["generation"] == 0:
            return
        frames = self._startup_frames()
        if frames - self._frames_at_freeze >= self.burst_frames:
            # Safe inside the callback: the collector takes its object lists after the
            # "start" callbacks return, and finds them (nearly) empty.
            gc.freeze()
            self._frames_at_freeze = frames
            self.collections_frozen += 1

    def freeze(self) -> None:
        gc.freeze()
        self._frames_at_freeze = self._startup_frames()
        self.freezes += 1

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="evflex-gc-freeze")

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self.freeze()
            await asyncio.sleep(self.interval_s)
