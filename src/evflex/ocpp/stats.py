"""Gateway counters kept as plain integers on the hot path.

Prometheus client objects take a lock and a label lookup per increment; at tens of
thousands of messages per second that is measurable, so the gateway bumps dict
entries and a collector (see evflex.metrics) reads them at scrape time.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

# Handler latency buckets in seconds (upper bounds), Prometheus-style.
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class GatewayStats:
    def __init__(self) -> None:
        self.messages: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        """(protocol, action, direction) → count; direction is "in" or "out"."""
        self.call_errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, code) → count; "sent" to stations or "received" from them."""
        self.command_timeouts = 0
        self.handshake_rejections: defaultdict[str, int] = defaultdict(int)
        self.unmatched_responses = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds
