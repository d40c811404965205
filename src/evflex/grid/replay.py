"""Replay recorded frequency from CSV (`ts,hz`), in real time or accelerated.

`ts` is Unix epoch seconds or an ISO 8601 timestamp (a naive one is taken as UTC);
`hz` is the frequency in Hz. A header line and blank or `#` lines are skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from evflex.grid.samples import Clock, FrequencySample, Sleep, paced


def parse_ts(text: str) -> float:
    """Epoch seconds from `text` (a number, or ISO 8601; naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


def parse_csv(lines: Iterable[str]) -> Iterator[FrequencySample]:
    """Samples from `ts,hz` lines; raises ValueError naming the line number when malformed."""
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if lineno == 1 and parts[:2] == ["ts", "hz"]:
            continue
        try:
            yield FrequencySample(parse_ts(parts[0]), float(parts[1]))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"line {lineno}: expected 'ts,hz', got {line!r}") from exc


@dataclass(slots=True)
class CsvReplaySource:
    """A `FrequencySource` replaying a CSV file at `speed` × real time (≤ 0: unpaced)."""

    path: Path
    speed: float = 1.0
    sleep: Sleep = field(default=asyncio.sleep, repr=False)
    clock: Clock = field(default=time.monotonic, repr=False)

    def __aiter__(self) -> AsyncIterator[FrequencySample]:
        # read up front (not inside the event loop's async path); replay files are small
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return paced(parse_csv(lines), self.speed, sleep=self.sleep, clock=self.clock)
