"""Percentiles and coordinated-omission correction of the benchmark loader."""

from __future__ import annotations

import math

import pytest

from evflex.bench.stats import (
    OpenLoopSchedule,
    median,
    nan_array,
    open_loop_latencies,
    percentile,
    stalls,
    summarize,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_percentile_small_sample_rounds_up() -> None:
    # 4 values: p50 is the 2nd (ceil(2.0)), p51 the 3rd: an observed value, never interpolated
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_converts_to_ms() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004])
    assert s.count == 4
    assert s.p50_ms == 2.0
    assert s.max_ms == 4.0
    assert s.mean_ms == 2.5


def test_lost_messages_make_high_percentiles_infinite() -> None:
    # 2 % lost: p50 is finite, p99 and max are "infinite" (None), the mean too
    s = summarize([0.001] * 98 + [math.inf] * 2)
    assert s.p50_ms == 1.0
    assert s.p99_ms is None
    assert s.max_ms is None
    assert s.mean_ms is None
    assert summarize([]).count == 0


def test_schedule_index_at() -> None:
    sched = OpenLoopSchedule(t0=10.0, interval=0.5, total=8)
    assert sched.due(3) == 11.5
    assert sched.index_at(9.0) == 0
    assert sched.index_at(10.0) == 0
    assert sched.index_at(10.1) == 1
    assert sched.index_at(11.5) == 3
    assert sched.index_at(99.0) == 8


def test_latency_is_measured_from_the_scheduled_time() -> None:
    """A loader stalled for 4 ms sends five messages late; the server answers each in
    0.5 ms. Service time hides the stall, the corrected latency shows it."""
    ms = 0.001
    sched = OpenLoopSchedule(t0=0.0, interval=1 * ms, total=10)
    sent = nan_array(10)
    acked = nan_array(10)
    for j in range(10):
        sent[j] = j * ms if j < 5 else 9 * ms  # 5..9 all go out at t = 9 ms
        acked[j] = sent[j] + 0.5 * ms
    lat = open_loop_latencies(sched, sent, acked, (0.0, 10 * ms))
    assert lat.scheduled == lat.acked == 10
    assert max(lat.service) == pytest.approx(0.5 * ms)
    assert max(lat.corrected) == pytest.approx(4.5 * ms)  # j=5: due 5 ms, acked 9.5 ms
    assert sorted(lat.corrected)[5] == pytest.approx(0.5 * ms)
    assert max(lat.send_lag) == pytest.approx(4 * ms)
    assert summarize(lat.corrected).p99_ms == pytest.approx(4.5)


def test_unanswered_and_unsent_count_as_lost() -> None:
    sched = OpenLoopSchedule(t0=0.0, interval=0.1, total=4)
    sent = nan_array(4)
    acked = nan_array(4)
    sent[0], acked[0] = 0.0, 0.01
    sent[1] = 0.1  # never answered
    # 2 and 3 never sent (e.g. the socket closed)
    lat = open_loop_latencies(sched, sent, acked, (0.0, 1.0))
    assert (lat.scheduled, lat.acked, lat.unsent) == (4, 1, 2)
    assert sum(math.isinf(v) for v in lat.corrected) == 3
    assert summarize(lat.corrected).p50_ms is None


def test_window_selects_by_scheduled_time() -> None:
    # a message due inside the window but answered after it still counts (with its latency)
    sched = OpenLoopSchedule(t0=0.0, interval=1.0, total=6)
    sent = nan_array(6)
    acked = nan_array(6)
    for j in range(6):
        sent[j] = float(j)
        acked[j] = j + (10.0 if j == 3 else 0.1)
    lat = open_loop_latencies(sched, sent, acked, (2.0, 4.0))  # due at 2 and 3
    assert lat.scheduled == 2
    assert max(lat.corrected) == pytest.approx(10.0)


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_stalls_group_late_answers_into_episodes() -> None:
    # 1 send per 10 ms for 1 s; the server pauses at 0.2 s and 0.7 s for ~50 ms
    sched = OpenLoopSchedule(t0=0.0, interval=0.01, total=100)
    acked = nan_array(100)
    for j in range(100):
        due = sched.due(j)
        acked[j] = due + 0.001
        for pause in (0.2, 0.7):
            if pause <= due < pause + 0.05:
                acked[j] = pause + 0.05  # everything queued behind the pause
    acked[99] = math.nan  # lost: an episode of its own, with infinite peak
    found = stalls(sched, acked, (0.0, 1.0), threshold=0.02)
    assert len(found) == 3
    assert found[0].start == pytest.approx(0.2)
    assert found[0].end == pytest.approx(0.22)  # later sends waited < 20 ms
    assert found[0].peak == pytest.approx(0.05)
    assert found[1].start == pytest.approx(0.7)
    assert math.isinf(found[2].peak)
    assert stalls(sched, acked, (0.0, 0.1), threshold=0.02) == []
