"""GcPolicy: in a connect burst, collections of the older generations become freezes."""

from __future__ import annotations

import asyncio
import gc

from evflex.gcpolicy import GcPolicy


async def test_a_burst_turns_older_collections_into_freezes() -> None:
    frames = [0]
    policy = GcPolicy(3600.0, lambda: frames[0], burst_frames=500)
    policy.start()  # freezes once at start (the periodic freezer)
    try:
        await _settle()
        assert policy.freezes == 1
        gc.collect(1)
        assert policy.collections_frozen == 0  # no burst: a normal collection

        frames[0] += 500  # startup frames of ~100 new stations since the last freeze
        cycle: list[object] = []
        cycle.append(cycle)  # something for the collector to find
        before = gc.get_freeze_count()
        gc.collect(0)
        assert policy.collections_frozen == 0  # the youngest generation is always collected
        gc.collect(2)
        assert policy.collections_frozen == 1
        assert gc.get_freeze_count() > before  # frozen instead of walked

        gc.collect(2)  # the burst was consumed by that freeze
        assert policy.collections_frozen == 1
    finally:
        await policy.stop()
        gc.unfreeze()
    assert policy._on_gc not in gc.callbacks


async def test_interval_zero_turns_it_off() -> None:
    policy = GcPolicy(0.0, lambda: 10_000)
    policy.start()
    assert policy._on_gc not in gc.callbacks
    gc.collect(2)
    assert policy.collections_frozen == 0
    await policy.stop()


async def _settle() -> None:
    await asyncio.sleep(0)
