"""Grid frequency: samples, where they come from, and whether the feed can be trusted.

Pure of the rest of evflex: sources yield `FrequencySample`s, `health` judges the feed,
and the grid-service engine (`evflex.control`) decides what to do with both.
"""

from evflex.grid.health import FeedHealth, FeedStatus, HealthParams, assess, observe
from evflex.grid.samples import FrequencySample, FrequencySource

__all__ = [
    "FeedHealth",
    "FeedStatus",
    "FrequencySample",
    "FrequencySource",
    "HealthParams",
    "assess",
    "observe",
]
