"""Prometheus exposition: a collector that reads the plain counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from evflex.fleet.state import FleetState
from evflex.ocpp.gateway import Gateway
from evflex.ocpp.stats import LATENCY_BUCKETS_S
from evflex.store.writer import EventRecorder
from evflex.telemetry.freshness import freshness
from evflex.telemetry.readiness import counts

if TYPE_CHECKING:
    from evflex.control.loop import Engine
    from evflex.telemetry.service import Telemetry


class EvflexCollector(Collector):
    def __init__(
        self,
        gateway: Gateway,
        fleet: FleetState,
        recorder: EventRecorder,
        telemetry: Telemetry | None = None,
        grid: Engine | None = None,
    ) -> None:
        self._gateway = gateway
        self._fleet = fleet
        self._recorder = recorder
        self._telemetry = telemetry
        self._grid = grid

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        stats = self._gateway.stats
        conns = GaugeMetricFamily(
            "evflex_ocpp_connections", "Connected stations by protocol", labels=["protocol"]
        )
        for protocol, count in self._gateway.protocol_counts().items():
            conns.add_metric([protocol], count)
        yield conns
        msgs = CounterMetricFamily(
            "evflex_ocpp_messages",
            "OCPP messages by action and direction",
            labels=["protocol", "action", "direction"],
        )
        for (protocol, action, direction), count in list(stats.messages.items()):
            msgs.add_metric([protocol, action, direction], count)
        yield msgs
        errors = CounterMetricFamily(
            "evflex_ocpp_call_errors", "CALLERRORs sent and received", labels=["direction", "code"]
        )
        for (direction, code), count in list(stats.call_errors.items()):
            errors.add_metric([direction, code], count)
        yield errors
        yield _counter(
            "evflex_ocpp_command_timeouts",
            "CSMS→station calls that timed out",
            stats.command_timeouts,
        )
        yield _counter(
            "evflex_ocpp_unmatched_responses",
            "responses for unknown or expired message ids",
            stats.unmatched_responses,
        )
        rejections = CounterMetricFamily(
            "evflex_ocpp_handshake_rejections", "refused WebSocket handshakes", labels=["reason"]
        )
        for reason, count in list(stats.handshake_rejections.items()):
            rejections.add_metric([reason], count)
        yield rejections
        yield self._latency()
        yield from self._fleet_metrics()
        yield from self._store_metrics()
        yield from self._grid_metrics()

    def _grid_metrics(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        g = self._grid
        if g is None:
            return
        yield _counter("evflex_grid_evaluations", "grid engine evaluations", g.evaluations)
        yield _counter(
            "evflex_grid_evaluation_seconds", "time spent in grid evaluations", g.evaluation_s
        )
        yield _gauge(
            "evflex_grid_last_dispatch_seconds",
            "last evaluation that sent limits: targets until every idle station's frame"
            " was written",
            g.last_dispatch_s,
        )
        yield _gauge(
            "evflex_grid_last_dispatch_commands",
            "commands sent by that evaluation",
            g.last_dispatch_commands,
        )
        active = len(g.active_services())
        yield _gauge("evflex_grid_services_active", "active grid services", active)
        yield _gauge("evflex_grid_limits", "EVSE limits evflex holds in force", len(g.limits))
        yield _gauge("evflex_grid_delta_w", "portfolio change the services ask for (W)", g.delta_w)
        yield _gauge(
            "evflex_grid_feed_ok", "1 when the frequency feed is usable", float(g.health.ok)
        )
        if g.health.last is not None:
            hz = g.health.last.freq_hz
            yield _gauge("evflex_grid_frequency_hz", "latest grid frequency sample (Hz)", hz)
        yield _gauge(
            "evflex_grid_non_responding",
            "units not counted on (did not follow limits)",
            len(g.non_responding),
        )
        by_model = GaugeMetricFamily(
            "evflex_grid_model_responses",
            "what each hardware model did with evflex's limits",
            labels=["model", "outcome"],
        )
        for model, st in list(g.models.items()):
            for outcome, n in (
                ("accepted", st.accepted),
                ("rejected", st.rejected),
                ("failed", st.failed),
                ("moved", st.moved),
                ("non_responding", st.non_responding),
            ):
                by_model.add_metric([model, outcome], n)
        yield by_model

    def _latency(self) -> HistogramMetricFamily:
        stats = self._gateway.stats
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_S, stats.latency_counts, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        total = cumulative + stats.latency_counts[-1]
        buckets.append(("+Inf", total))
        return HistogramMetricFamily(
            "evflex_ocpp_handler_seconds",
            "time to handle one inbound frame",
            buckets=buckets,
            sum_value=stats.latency_sum_s,
        )

    def _fleet_metrics(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        summary = self._fleet.summary()
        yield _gauge("evflex_fleet_stations_known", "registered stations", summary.stations_known)
        yield _gauge("evflex_fleet_evses_charging", "EVSEs charging", summary.evses_charging)
        yield _gauge("evflex_fleet_power_watts", "total active power", summary.power_w)
        change = self._telemetry.change_reporting if self._telemetry is not None else None
        fresh = freshness(self._fleet, datetime.now(UTC), change)
        share = GaugeMetricFamily(
            "evflex_fleet_power_fresh_share",
            "share of charging EVSEs whose power value is at most this old",
            labels=["within"],
        )
        share.add_metric(["1s"], fresh.share_within_1s)
        share.add_metric(["5s"], fresh.share_within_5s)
        share.add_metric(["current"], fresh.share_current)  # see telemetry/freshness.py
        yield share
        ages = [a.power_age_s for a in fresh.ages if a.power_age_s is not None]
        yield _gauge(
            "evflex_fleet_power_age_max_seconds",
            "oldest power value among charging EVSEs",
            max(ages, default=0.0),
        )
        if self._telemetry is not None:
            verdicts = GaugeMetricFamily(
                "evflex_telemetry_readiness_stations",
                "stations by telemetry readiness verdict",
                labels=["verdict"],
            )
            for verdict, n in counts(self._telemetry.readiness()).items():
                verdicts.add_metric([verdict], n)
            yield verdicts
            yield _counter(
                "evflex_telemetry_provisioning_runs",
                "telemetry provisioning runs",
                self._telemetry.provisioner.runs,
            )

    def _store_metrics(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._recorder.stats
        yield _counter("evflex_store_rows_written", "rows written", s.rows_written)
        yield _counter("evflex_store_flush_failures", "failed batch writes", s.flush_failures)
        yield _counter("evflex_store_rows_dropped", "rows dropped (buffer full)", s.dropped_rows)
        yield _gauge("evflex_store_rows_buffered", "rows waiting to be written", s.buffered_rows)
        yield _gauge(
            "evflex_store_last_flush_seconds", "duration of the last flush", s.last_flush_s
        )
        yield _counter(
            "evflex_store_writer_cpu_seconds",
            "CPU time of the store's writer thread",
            s.writer_cpu_s,
        )
        yield _counter(
            "evflex_store_writer_boosts",
            "times the writer fell behind and was run at the server's priority",
            s.boosts,
        )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def build_registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


MetricsSource = Callable[[], bytes]
