"""FFR state machine: trigger, support duration, deactivation, 15-min re-arm."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflex.control.ffr import FfrParams, FfrPhase, FfrState, ffr_step
from evflex.grid.samples import FrequencySample

CAP = 100_000.0


def run(params: FfrParams, samples: list[tuple[float, float]]) -> list[tuple[FfrPhase, float]]:
    state, out = FfrState(), []
    for ts, hz in samples:
        state, dp = ffr_step(state, FrequencySample(ts, hz), params)
        out.append((state.phase, dp))
    return out


def test_five_second_support_then_20_percent_per_second_ramp() -> None:
    p = FfrParams(CAP, trigger_hz=49.7, support_s=5.0)
    trace = run(
        p, [(0, 49.8), (1, 49.7), (3, 49.6), (5.9, 49.8), (6, 49.9), (8.5, 50.0), (11, 50.0)]
    )
    assert trace == [
        (FfrPhase.ARMED, 0.0),
        (FfrPhase.ACTIVE, -CAP),  # 49.7 Hz reached the trigger
        (FfrPhase.ACTIVE, -CAP),
        (FfrPhase.ACTIVE, -CAP),  # 4.9 s into support
        (FfrPhase.DEACTIVATING, -CAP),  # support over at t=6, ramp starts from full
        (FfrPhase.DEACTIVATING, pytest.approx(-0.5 * CAP)),
        (FfrPhase.RECOVERING, 0.0),
    ]


def test_activation_deadline_follows_the_trigger_option() -> None:
    state, _ = ffr_step(FfrState(), FrequencySample(10.0, 49.5), FfrParams(CAP, trigger_hz=49.5))
    assert state.deadline_ts == pytest.approx(10.7)


def test_thirty_second_support_steps_off_and_rearms_after_15_minutes() -> None:
    p = FfrParams(CAP, trigger_hz=49.6, support_s=30.0)
    trace = run(p, [(0, 49.55), (29.9, 49.9), (30, 49.9), (500, 49.0), (929.9, 49.0), (930, 49.0)])
    assert trace == [
        (FfrPhase.ACTIVE, -CAP),
        (FfrPhase.ACTIVE, -CAP),
        (FfrPhase.RECOVERING, 0.0),
        (FfrPhase.RECOVERING, 0.0),  # no second activation while recovering
        (FfrPhase.RECOVERING, 0.0),
        (FfrPhase.ACTIVE, -CAP),  # re-armed at 30 + 900 s and still below trigger
    ]


def test_above_trigger_never_activates() -> None:
    assert all(dp == 0.0 for _, dp in run(FfrParams(CAP), [(t, 49.71) for t in range(100)]))


@pytest.mark.parametrize(
    "kwargs", [{"trigger_hz": 49.8}, {"support_s": 10.0}, {"capacity_w": -1.0}]
)
def test_invalid_params(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FfrParams(**{"capacity_w": CAP, **kwargs})


@given(
    st.lists(st.tuples(st.floats(0.01, 400.0), st.floats(49.0, 50.2)), max_size=60),
    st.sampled_from([5.0, 30.0]),
)
def test_ffr_bounded_and_never_reactivates_within_support_plus_rearm(
    steps: list[tuple[float, float]], support_s: float
) -> None:
    p = FfrParams(CAP, trigger_hz=49.6, support_s=support_s)
    state, ts, activations = FfrState(), 0.0, []
    for dt, hz in steps:
        ts += dt
        before = state.phase
        state, dp = ffr_step(state, FrequencySample(ts, hz), p)
        assert -CAP <= dp <= 0.0
        if state.phase is FfrPhase.ACTIVE and before is not FfrPhase.ACTIVE:
            assert hz <= p.trigger_hz
            activations.append(ts)
    for a, b in itertools.pairwise(activations):
        assert b - a >= support_s + p.rearm_s
