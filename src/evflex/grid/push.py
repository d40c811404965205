"""A frequency source fed by pushes: an API route (or a test) hands in samples.

`push` never blocks the caller: the queue is bounded and, when full, the oldest
sample is dropped (the engine wants the newest frequency, not a backlog).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from evflex.grid.samples import FrequencySample

_CLOSED = None


class PushSource:
    """A `FrequencySource` whose samples arrive through `push`/`push_many`.

    Samples not newer than the last accepted one are rejected (duplicates and
    reordered batches), so a retried HTTP batch is harmless.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._queue: asyncio.Queue[FrequencySample | None] = asyncio.Queue(maxsize)
        self._last_ts = float("-inf")
        self.dropped = 0
        self.rejected = 0

    def push(self, sample: FrequencySample) -> bool:
        """Queue one sample; returns False when it is not newer than the last accepted."""
        if sample.ts <= self._last_ts:
            self.rejected += 1
            return False
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(sample)
        self._last_ts = sample.ts
        return True

    def push_many(self, samples: Iterable[FrequencySample]) -> int:
        """Queue a batch in timestamp order; returns how many were accepted."""
        return sum(self.push(s) for s in sorted(samples, key=lambda s: s.ts))

    def close(self) -> None:
        """End iteration once the queued samples are consumed (drops the oldest if full)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(_CLOSED)

    def __aiter__(self) -> AsyncIterator[FrequencySample]:
        return self._run()

    async def _run(self) -> AsyncIterator[FrequencySample]:
        while (sample := await self._queue.get()) is not _CLOSED:
            yield sample
