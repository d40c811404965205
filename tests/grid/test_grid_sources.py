"""Frequency sources: synthetic, CSV replay, HTTP-fed push queue."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from evflex.grid.push import PushSource
from evflex.grid.replay import CsvReplaySource, parse_csv
from evflex.grid.samples import FrequencySample, FrequencySource, paced
from evflex.grid.synthetic import SyntheticSource, concat, profile_hz, ramp, step, trace


class FakeTime:
    """A clock that only moves when slept on, recording the sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def test_sample_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        FrequencySample(0.0, math.nan)


async def test_paced_spaces_samples_by_timestamp_over_speed() -> None:
    ft = FakeTime()
    samples = [FrequencySample(t, 50.0) for t in (100.0, 101.0, 103.0)]
    got = [s async for s in paced(samples, speed=2.0, sleep=ft.sleep, clock=ft.clock)]
    assert got == samples
    assert ft.sleeps == [0.5, 1.0]


async def test_paced_unpaced_never_sleeps() -> None:
    ft = FakeTime()
    samples = [FrequencySample(float(t), 50.0) for t in range(5)]
    assert len([s async for s in paced(samples, 0, sleep=ft.sleep, clock=ft.clock)]) == 5
    assert ft.sleeps == []


def test_profile_steps_and_ramps() -> None:
    prof = concat(step(10.0, 50.0, 49.8), ramp(5.0, 10.0, 49.8, 50.0))
    assert profile_hz(prof, 9.99) == 50.0
    assert profile_hz(prof, 10.0) == 49.8
    assert profile_hz(prof, 20.0) == pytest.approx(49.9)
    assert profile_hz(prof, 1e6) == 50.0


def test_trace_is_deterministic_per_seed() -> None:
    a = list(trace(((0.0, 50.0),), 100, seed=7))
    assert a == list(trace(((0.0, 50.0),), 100, seed=7))
    assert a != list(trace(((0.0, 50.0),), 100, seed=8))
    assert [s.ts for s in a[:3]] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("tau_s", [0.0, 10.0])
def test_trace_noise_has_the_requested_sigma(tau_s: float) -> None:
    # 20,000 samples: the sample σ of an AR(1) with τ = 10 dt is within ~5 % of σ
    xs = [s.freq_hz - 50.0 for s in trace(((0.0, 50.0),), 20_000, tau_s=tau_s, seed=1)]
    assert abs(statistics.fmean(xs)) < 0.003
    assert statistics.pstdev(xs) == pytest.approx(0.02, rel=0.08)


async def test_synthetic_source_unpaced() -> None:
    src = SyntheticSource(step(2.0, 50.0, 49.5), duration_s=5, sigma_hz=0.0, speed=0, t0=0.0)
    assert isinstance(src, FrequencySource)
    assert [s.freq_hz async for s in src] == [50.0, 50.0, 49.5, 49.5, 49.5]


def test_parse_csv_header_comments_iso_and_errors() -> None:
    lines = ["ts,hz", "# recorded", "", "1700000000,49.98", "2023-11-14T22:13:21Z, 50.01"]
    got = list(parse_csv(lines))
    assert got == [FrequencySample(1700000000.0, 49.98), FrequencySample(1700000001.0, 50.01)]
    with pytest.raises(ValueError, match="line 2"):
        list(parse_csv(["1,50", "oops"]))


async def test_csv_replay_accelerated(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("ts,hz\n0,50.0\n10,49.9\n20,49.8\n")
    ft = FakeTime()
    src = CsvReplaySource(path, speed=10.0, sleep=ft.sleep, clock=ft.clock)
    assert [s.freq_hz async for s in src] == [50.0, 49.9, 49.8]
    assert ft.sleeps == [1.0, 1.0]


async def test_push_source_orders_dedups_drops_oldest_and_closes() -> None:
    src = PushSource(maxsize=3)
    assert src.push(FrequencySample(1.0, 50.0))
    assert not src.push(FrequencySample(1.0, 50.0))  # duplicate (retried request)
    assert src.push_many([FrequencySample(t, 49.9) for t in (4.0, 2.0, 3.0, 0.5)]) == 3
    assert (src.rejected, src.dropped) == (2, 1)
    src.close()
    got = [s.ts async for s in src]
    assert got == [3.0, 4.0]  # 1.0 and 2.0 dropped (oldest): queue bound, then close
