"""The frequency sample, the source protocol every feed implements, and replay pacing."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

NOMINAL_HZ = 50.0


@dataclass(frozen=True, slots=True)
class FrequencySample:
    """One frequency measurement.

    Attributes:
        ts: measurement time, Unix epoch seconds (UTC).
        freq_hz: grid frequency in Hz.
    """

    ts: float
    freq_hz: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ts) and math.isfinite(self.freq_hz)):
            raise ValueError(f"non-finite frequency sample: ts={self.ts!r} hz={self.freq_hz!r}")


@runtime_checkable
class FrequencySource(Protocol):
    """A feed of frequency samples: `async for sample in source: ...`.

    A live source never ends by itself; a finite one (replay) ends when exhausted.
    Sources do not judge samples: plausibility and staleness are `grid.health`'s job.
    """

    def __aiter__(self) -> AsyncIterator[FrequencySample]: ...


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


async def paced(
    samples: Iterable[FrequencySample],
    speed: float = 1.0,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> AsyncIterator[FrequencySample]:
    """Yield `samples` spaced as their timestamps say, `speed` times faster than real time.

    Sample k is released at start + (ts_k − ts_0)/speed on `clock` (seconds), so
    sleep jitter does not accumulate. speed ≤ 0 means no pacing (as fast as possible).
    """
    start: float | None = None
    ts0 = 0.0
    for sample in samples:
        if start is None:
            start, ts0 = clock(), sample.ts
        elif speed > 0:
            delay = start + (sample.ts - ts0) / speed - clock()
            if delay > 0:
                await sleep(delay)
        yield sample
