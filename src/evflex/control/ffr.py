"""Fast Frequency Reserve as a pure state machine: (state, sample) → (state, ΔP).

Fingrid FFR options (trigger → time to full activation): 49.7 Hz → 1.3 s,
49.6 Hz → 1.0 s, 49.5 Hz → 0.7 s. Support lasts at least 5 s when deactivation is
at most 20 % of capacity per second, otherwise 30 s; the unit must be ready again
within 15 min. Phases:

    ARMED --f ≤ trigger--> ACTIVE --support_s--> DEACTIVATING (5 s option: ramp
    at 20 %/s) or straight to RECOVERING (30 s option: step) --rearm_s--> ARMED

Time comes from the samples' timestamps, so the machine is deterministic and
replayable. ΔP (W, load convention) = −capacity while active: consume less.
The full-activation time is a deadline for the delivery path, not a ramp here:
the output steps at once and `deadline_ts` tells the engine when it must be met.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from evflex.grid.samples import FrequencySample

FFR_OPTIONS: dict[float, float] = {49.7: 1.3, 49.6: 1.0, 49.5: 0.7}
SLOW_DEACTIVATION_PER_S = 0.2


class FfrPhase(enum.StrEnum):
    ARMED = "armed"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"
    RECOVERING = "recovering"


@dataclass(frozen=True, slots=True)
class FfrParams:
    capacity_w: float
    trigger_hz: float = 49.7
    support_s: float = 5.0
    rearm_s: float = 900.0

    def __post_init__(self) -> None:
        if self.trigger_hz not in FFR_OPTIONS:
            raise ValueError(f"FFR trigger must be one of {sorted(FFR_OPTIONS)} Hz")
        if self.support_s not in (5.0, 30.0):
            raise ValueError("FFR support duration is 5 s or 30 s")
        if self.capacity_w < 0 or self.rearm_s < 0:
            raise ValueError("capacity and re-arm time must be ≥ 0")

    @property
    def full_activation_s(self) -> float:
        return FFR_OPTIONS[self.trigger_hz]


@dataclass(frozen=True, slots=True)
class FfrState:
    phase: FfrPhase = FfrPhase.ARMED
    since_ts: float = 0.0  # start of the current phase (sample time, epoch s)
    deadline_ts: float | None = None  # full activation due (ACTIVE only)


def ffr_step(state: FfrState, sample: FrequencySample, p: FfrParams) -> tuple[FfrState, float]:
    """Advance on one sample; returns the new state and ΔP (W, ≤ 0)."""
    t, cap = sample.ts, p.capacity_w
    if state.phase is FfrPhase.ARMED:
        if sample.freq_hz <= p.trigger_hz:
            return FfrState(FfrPhase.ACTIVE, t, t + p.full_activation_s), -cap
        return state, 0.0
    elapsed = t - state.since_ts
    if state.phase is FfrPhase.ACTIVE:
        if elapsed < p.support_s:
            return state, -cap
        end = state.since_ts + p.support_s
        if p.support_s == 5.0:
            return ffr_step(FfrState(FfrPhase.DEACTIVATING, end), sample, p)
        return FfrState(FfrPhase.RECOVERING, end), 0.0
    if state.phase is FfrPhase.DEACTIVATING:
        remaining = 1.0 - SLOW_DEACTIVATION_PER_S * elapsed
        if remaining > 0.0:
            return state, -cap * remaining
        return FfrState(FfrPhase.RECOVERING, state.since_ts + 1.0 / SLOW_DEACTIVATION_PER_S), 0.0
    if elapsed >= p.rearm_s:
        return ffr_step(FfrState(), sample, p)
    return state, 0.0
