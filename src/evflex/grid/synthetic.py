"""Synthetic frequency traces: a piecewise-linear profile (steps, ramps) plus noise.

The profile is a tuple of breakpoints (t_s, f_hz) with non-decreasing t; two
breakpoints at the same t make a step, two at different t a ramp. Noise is a
first-order autoregressive (Ornstein-Uhlenbeck) process with stationary standard
deviation σ (default 20 mHz, the order of normal CE frequency variation) and
correlation time τ. Deterministic for a given seed.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

from evflex.grid.samples import NOMINAL_HZ, Clock, FrequencySample, Sleep, paced

Profile = tuple[tuple[float, float], ...]


def step(at_s: float, from_hz: float, to_hz: float) -> Profile:
    """A step from `from_hz` to `to_hz` at `at_s` seconds."""
    return ((0.0, from_hz), (at_s, from_hz), (at_s, to_hz))


def ramp(start_s: float, duration_s: float, from_hz: float, to_hz: float) -> Profile:
    """A linear ramp from `from_hz` to `to_hz` over [start_s, start_s + duration_s]."""
    return ((0.0, from_hz), (start_s, from_hz), (start_s + duration_s, to_hz))


def profile_hz(profile: Profile, t_s: float) -> float:
    """Profile value at `t_s` (Hz): linear between breakpoints, flat beyond the ends.

    At a step (equal times) the later breakpoint wins from that instant on.
    """
    times = [t for t, _ in profile]
    i = bisect.bisect_right(times, t_s)
    if i == 0:
        return profile[0][1]
    if i == len(profile):
        return profile[-1][1]
    (t0, f0), (t1, f1) = profile[i - 1], profile[i]
    return f0 + (f1 - f0) * (t_s - t0) / (t1 - t0)


def trace(
    profile: Profile,
    duration_s: float,
    *,
    dt_s: float = 1.0,
    sigma_hz: float = 0.02,
    tau_s: float = 10.0,
    seed: int = 0,
    t0: float = 0.0,
) -> Iterator[FrequencySample]:
    """Samples every `dt_s` seconds over [0, duration_s): f(t) = profile(t) + n(t).

    n is AR(1): n_k = φ·n_{k−1} + σ·√(1−φ²)·ε_k, φ = exp(−dt/τ), ε ~ N(0, 1), n_0 ~ N(0, σ²),
    so Var(n) = σ² at every k (Hz²). τ ≤ 0 gives white noise. `t0` offsets the
    timestamps (epoch seconds) without changing the values.
    """
    rng = random.Random(seed)
    phi = math.exp(-dt_s / tau_s) if tau_s > 0 else 0.0
    innovation = sigma_hz * math.sqrt(1.0 - phi * phi)
    noise = rng.gauss(0.0, sigma_hz) if sigma_hz > 0 else 0.0
    for k in range(math.ceil(duration_s / dt_s)):
        t = k * dt_s
        if k:
            noise = phi * noise + (innovation * rng.gauss(0.0, 1.0) if sigma_hz > 0 else 0.0)
        yield FrequencySample(t0 + t, profile_hz(profile, t) + noise)


@dataclass(slots=True)
class SyntheticSource:
    """A `FrequencySource` playing `trace(...)`, paced at `speed` × real time (≤ 0: unpaced).

    Timestamps start at the wall-clock time of iteration unless `t0` is given.
    """

    profile: Profile = ((0.0, NOMINAL_HZ),)
    duration_s: float = 3600.0
    dt_s: float = 1.0
    sigma_hz: float = 0.02
    tau_s: float = 10.0
    seed: int = 0
    speed: float = 1.0
    t0: float | None = None
    sleep: Sleep = field(default=asyncio.sleep, repr=False)
    clock: Clock = field(default=time.monotonic, repr=False)

    def __aiter__(self) -> AsyncIterator[FrequencySample]:
        samples = trace(
            self.profile,
            self.duration_s,
            dt_s=self.dt_s,
            sigma_hz=self.sigma_hz,
            tau_s=self.tau_s,
            seed=self.seed,
            t0=time.time() if self.t0 is None else self.t0,
        )
        return paced(samples, self.speed, sleep=self.sleep, clock=self.clock)


def concat(*profiles: Sequence[tuple[float, float]]) -> Profile:
    """Join profiles end to end; each one's times are shifted to start at the previous end."""
    out: list[tuple[float, float]] = []
    offset = 0.0
    for prof in profiles:
        for t, f in prof:
            out.append((offset + t, f))
        offset = out[-1][0] if out else 0.0
    return tuple(out)
