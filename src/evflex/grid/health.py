"""Feed health: is the frequency feed fit to act on? A pure state machine.

`observe(health, sample, now)` folds in one sample received at `now` (monotonic
seconds, the receiver's clock, so sender clock skew cannot hide staleness);
`assess(health, now)` adds the time-based verdict (stale). Faults:

- implausible: f outside [min_hz, max_hz] (default 47–53 Hz, beyond any operating
  range); the sample is discarded.
- jump: |f_k − f_{k−1}| > max_jump_hz between consecutive samples (default 0.5 Hz;
  real CE frequency moves well under 0.1 Hz per second); the sample is kept as the
  new reference, so a genuine step clears after `recover_samples` good samples.
- stale: nothing received for `stale_after_s` (default 3 s).

The feed is usable (`health.ok`) only after `recover_samples` consecutive good
samples (default 3), so a flapping feed does not flap the fleet. When it is not
usable the engine takes its safe state (hold baseline / release limits).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from evflex.grid.samples import FrequencySample


class FeedStatus(enum.StrEnum):
    OK = "ok"
    NO_DATA = "no_data"
    RECOVERING = "recovering"
    STALE = "stale"
    IMPLAUSIBLE = "implausible"
    JUMP = "jump"
    OUT_OF_ORDER = "out_of_order"


@dataclass(frozen=True, slots=True)
class HealthParams:
    stale_after_s: float = 3.0
    min_hz: float = 47.0
    max_hz: float = 53.0
    max_jump_hz: float = 0.5
    recover_samples: int = 3


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """Verdict plus what it was derived from. `reason` is a short human-readable detail."""

    status: FeedStatus = FeedStatus.NO_DATA
    reason: str = "no sample received yet"
    last: FrequencySample | None = None
    received_at: float | None = None
    good_streak: int = 0

    @property
    def ok(self) -> bool:
        return self.status is FeedStatus.OK

    @property
    def freq_hz(self) -> float | None:
        """The last accepted frequency, only while the feed is usable."""
        return self.last.freq_hz if self.ok and self.last is not None else None


def observe(
    health: FeedHealth, sample: FrequencySample, now: float, params: HealthParams = HealthParams()
) -> FeedHealth:
    """Fold one sample received at `now` (monotonic s) into the verdict."""
    f = sample.freq_hz
    if not params.min_hz <= f <= params.max_hz:
        reason = f"{f:.3f} Hz outside {params.min_hz}–{params.max_hz} Hz"
        return replace(health, status=FeedStatus.IMPLAUSIBLE, reason=reason, good_streak=0)
    last = health.last
    if last is not None and sample.ts <= last.ts:
        reason = f"sample ts {sample.ts} not after {last.ts}; ignored"
        return replace(health, status=FeedStatus.OUT_OF_ORDER, reason=reason, good_streak=0)
    received = replace(health, last=sample, received_at=now)
    if last is not None and abs(f - last.freq_hz) > params.max_jump_hz:
        reason = f"jump {f - last.freq_hz:+.3f} Hz > {params.max_jump_hz} Hz"
        return replace(received, status=FeedStatus.JUMP, reason=reason, good_streak=0)
    streak = health.good_streak + 1
    if streak >= params.recover_samples:
        return replace(received, status=FeedStatus.OK, reason="", good_streak=streak)
    reason = f"{streak}/{params.recover_samples} good samples"
    return replace(received, status=FeedStatus.RECOVERING, reason=reason, good_streak=streak)


def assess(health: FeedHealth, now: float, params: HealthParams = HealthParams()) -> FeedHealth:
    """The verdict at `now`: stale when nothing arrived for `stale_after_s`, else unchanged.

    Staleness resets the good streak: after a silence the feed must prove itself again.
    """
    if health.received_at is None or now - health.received_at <= params.stale_after_s:
        return health
    if health.status is FeedStatus.STALE:
        return health
    reason = f"no sample for {now - health.received_at:.1f} s (> {params.stale_after_s} s)"
    return replace(health, status=FeedStatus.STALE, reason=reason, good_streak=0)
