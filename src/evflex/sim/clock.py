"""The simulator's two clocks.

The *station clock* is the wall clock: timestamps, profile validity, heartbeats,
timeouts and response delays run in real time, so a CSMS sees a fleet that
behaves like the field. The *driver clock* runs `speed` times faster: arrivals,
departures and state of charge, so a simulated day of driving passes quickly.
Meter registers integrate real time, so energy matches the reported power.
"""

from __future__ import annotations

import time


class Clock:
    __slots__ = ("driver0", "speed", "wall0")

    def __init__(self, speed: float = 1.0, wall0: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.wall0 = time.time() if wall0 is None else wall0
        self.driver0 = self.wall0

    def driver(self, wall: float) -> float:
        """Driver time for a wall-clock time."""
        return self.driver0 + (wall - self.wall0) * self.speed

    def wall(self, driver: float) -> float:
        """Wall-clock time for a driver time (the inverse of `driver`)."""
        return self.wall0 + (driver - self.driver0) / self.speed


_last_second = -1
_last_text = ""


def timestamp(t: float) -> str:
    """RFC 3339 UTC at whole seconds, formatted once per second for the whole fleet."""
    global _last_second, _last_text
    second = int(t)
    if second != _last_second:
        _last_second = second
        _last_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return _last_text
