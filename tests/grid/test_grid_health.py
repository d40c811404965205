"""Feed health: the verdict the engine's safe state depends on."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from evflex.grid.health import FeedHealth, FeedStatus, HealthParams, assess, observe
from evflex.grid.samples import FrequencySample

P = HealthParams(stale_after_s=3.0, max_jump_hz=0.5, recover_samples=3)


def feed(values: list[float], start: FeedHealth | None = None) -> FeedHealth:
    h = start or FeedHealth()
    ts = 1000.0 if h.last is None else h.last.ts
    for f in values:
        ts += 1.0
        h = observe(h, FrequencySample(ts, f), now=ts - 1000.0, params=P)
    return h


def test_no_data_until_first_sample_and_ok_after_recover_samples() -> None:
    assert FeedHealth().status is FeedStatus.NO_DATA
    assert feed([50.0]).status is FeedStatus.RECOVERING
    assert feed([50.0, 50.01]).status is FeedStatus.RECOVERING
    h = feed([50.0, 50.01, 49.99])
    assert h.ok and h.freq_hz == 49.99 and h.reason == ""


def test_implausible_sample_is_discarded_and_resets_streak() -> None:
    h = feed([50.0, 50.0, 50.0, 46.9])
    assert h.status is FeedStatus.IMPLAUSIBLE and "46.900 Hz" in h.reason
    assert h.last is not None and h.last.freq_hz == 50.0  # the bad sample was not kept
    assert h.freq_hz is None
    assert feed([50.0, 50.0, 50.0], h).ok


def test_jump_flags_and_then_accepts_a_genuine_step() -> None:
    h = feed([50.0, 50.0, 50.0, 50.6])
    assert h.status is FeedStatus.JUMP and "+0.600 Hz" in h.reason
    h = feed([50.6, 50.6], h)
    assert h.status is FeedStatus.RECOVERING
    assert feed([50.6], h).ok


def test_stale_after_silence_and_must_prove_itself_again() -> None:
    h = feed([50.0, 50.0, 50.0])  # last received at now=3.0
    assert assess(h, now=6.0, params=P).ok
    stale = assess(h, now=6.1, params=P)
    assert stale.status is FeedStatus.STALE and "no sample for 3.1 s" in stale.reason
    assert assess(stale, now=99.0, params=P) is stale
    back = observe(stale, FrequencySample(2000.0, 50.0), now=6.0, params=P)
    assert back.status is FeedStatus.RECOVERING


def test_out_of_order_sample_is_ignored() -> None:
    h = feed([50.0, 50.0, 50.0])
    h = observe(h, FrequencySample(1002.0, 50.0), now=3.0, params=P)
    assert h.status is FeedStatus.OUT_OF_ORDER
    assert h.last is not None and h.last.ts == 1003.0


@given(st.lists(st.floats(44.0, 56.0), min_size=1, max_size=40))
def test_ok_only_after_enough_plausible_small_steps(values: list[float]) -> None:
    h = feed(values)
    if h.ok:
        tail = values[-P.recover_samples :]
        assert all(P.min_hz <= f <= P.max_hz for f in tail)
        assert all(abs(b - a) <= P.max_jump_hz for a, b in itertools.pairwise(tail))
        assert h.freq_hz == values[-1]
    if not P.min_hz <= values[-1] <= P.max_hz:
        assert not h.ok
