"""Composition root: the one place that wires every layer together.

Settings → store → fleet state → station registry → OCPP gateway → REST API, all on
one event loop. Events flow one way: gateway → hub → (fleet state, recorder, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson
import uvicorn
from prometheus_client import generate_latest

from evflex.api.app import create_api, warm_up
from evflex.api.deps import Services
from evflex.api.routes.grid import service_from_request, service_request
from evflex.config import Settings
from evflex.control.loop import ActiveService, AuditEntry, Engine, EngineConfig, RecordRow, UnitRow
from evflex.control.response import ResponseParams
from evflex.control.units import EvseSpec, Key
from evflex.fleet.events import Event, EventSink, MeterSampled, StationConnected
from evflex.fleet.model import EvseStatus, Transaction
from evflex.fleet.state import FleetState
from evflex.gcpolicy import GcPolicy
from evflex.grid.health import HealthParams
from evflex.grid.mqtt import MqttSource
from evflex.grid.push import PushSource
from evflex.grid.samples import FrequencySource
from evflex.metrics import EvflexCollector, build_registry
from evflex.ocpp.gateway import Gateway
from evflex.registry import StationRegistry
from evflex.store import db
from evflex.store.grid import GridStore
from evflex.store.repository import Repository
from evflex.store.writer import EventRecorder
from evflex.telemetry.policy import Group, Policy
from evflex.telemetry.service import Telemetry

log = logging.getLogger(__name__)


class EventHub:
    """Fans each event out to every subscriber, in subscription order.

    Fleet state subscribes first so that later subscribers (storage, grid services)
    see the state the event produced.
    """

    def __init__(self) -> None:
        self._sinks: list[EventSink] = []

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        self._sinks.remove(sink)

    def __call__(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                # one faulty consumer must not take the station's session down
                log.exception("event consumer %r failed on %s", sink, type(event).__name__)


@dataclass
class Ports:
    ocpp: int
    http: int


class App:
    """The evflex server. `async with App(settings) as app:` runs it until the block ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = db.create_engine(settings.db)
        self.repository = Repository(self.engine)
        self.fleet = FleetState()
        self.hub = EventHub()
        self.recorder = EventRecorder(
            self.engine,
            flush_interval_s=settings.flush_interval_s,
            live_values_interval_s=settings.live_values_interval_s,
            # PostgreSQL: written from the recorder's thread, on a loop and pool of its own
            writer_engine=functools.partial(db.create_engine, settings.db),
        )
        self.registry = StationRegistry(self.repository, self.fleet)
        self.gateway = Gateway(
            self.registry,
            self.hub,
            allow_unknown_stations=settings.allow_unknown_stations,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            call_timeout_s=settings.call_timeout_s,
            max_message_bytes=settings.max_message_bytes,
        )
        self.hub.subscribe(self.fleet.apply)
        self.hub.subscribe(self.recorder)
        self.telemetry = Telemetry(
            self.gateway,
            self.fleet,
            self.hub,
            telemetry_policy(settings),
            concurrency=settings.telemetry_concurrency,
            rate_per_s=settings.telemetry_rate_per_s,
        )
        if settings.telemetry_provisioning:
            self.hub.subscribe(self.telemetry)
        self.frequency = PushSource()
        self.grid = Engine(
            self.gateway, self.fleet, grid_config(settings), model_specs=model_specs(settings)
        )
        self.telemetry.control = self.grid.control_reasons  # readiness shows grid response
        self.grid_store = GridStore(self.engine)
        self.grid.on_record = self._store_record
        self.grid.on_audit = self._store_audit
        self.hub.subscribe(self.grid.on_event)  # who can be controlled changed → re-plan
        self.grid.on_unit_rows = self._store_unit_rows
        self.grid.on_service = self._store_service
        self.grid_store.state_source = self.grid.snapshot_if_dirty
        self._resume_task: asyncio.Task[None] | None = None
        self.metrics_registry = build_registry(
            EvflexCollector(self.gateway, self.fleet, self.recorder, self.telemetry, self.grid)
        )
        self.api = create_api(
            Services(
                self.fleet,
                self.gateway,
                self.registry,
                self.repository,
                telemetry=self.telemetry,
                grid=self.grid,
                frequency=self.frequency,
                grid_records=self.grid_store.records,
                grid_unit_records=self.grid_store.unit_rows,
                publish=self.hub,
            ),
            metrics=self.metrics_text,
        )
        self.ports = Ports(0, 0)
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.gc_policy = GcPolicy(settings.gc_freeze_interval_s, self._startup_frames)
        self._switch_interval: float | None = None  # the process's, restored by stop()

    def _startup_frames(self) -> int:
        pacer = self.gateway.pacer
        return pacer.frames_paced if pacer is not None else 0

    def _store_record(self, service_id: str, row: RecordRow) -> None:
        self.grid_store.record({"service_id": service_id, **asdict(row)})

    def _store_service(self, service: ActiveService) -> None:
        request = orjson.dumps(service_request(service.kind, service.params)).decode()
        self.grid_store.service(
            {
                "id": service.id,
                "kind": service.kind,
                "request": request,
                "started_at": service.started_at,
                "stopped_at": service.stopped_at,
            }
        )

    async def _resume_grid(self) -> None:
        """Resume the services that were active when evflex stopped (same ids), once the
        stations under evflex's limits are back (or `grid_resume_grace_s` has passed)."""
        rows, snapshot = await self.grid_store.load()
        if not rows and not snapshot:
            return
        want = {(str(u[0]), int(u[1])) for u in (snapshot or {}).get("units", [])}
        await self._reconnected(want, datetime.now(UTC), self.settings.grid_resume_grace_s)
        services = []
        for row in rows:
            try:
                kind, params = service_from_request(orjson.loads(row["request"]))
            except ValueError as exc:
                log.warning("grid: service %s not resumed: %s", row["id"], exc)
                self.grid_store.service({**row, "stopped_at": datetime.now(UTC)})
                continue
            services.append((str(row["id"]), kind, params, row["started_at"]))
        resumed = self.grid.resume(services, snapshot)
        log.warning("grid: resumed %d service(s) after a restart", len(resumed))

    async def _reconnected(self, keys: set[Key], since: datetime, timeout_s: float) -> None:
        """Until every one of these EVSEs is connected again and has reported its power
        since `since` (allocation must not act on stale values), at most `timeout_s`."""
        changed = asyncio.Event()

        def on_event(event: Event) -> None:
            if type(event) is MeterSampled or type(event) is StationConnected:
                changed.set()

        self.hub.subscribe(on_event)
        try:
            deadline = time.monotonic() + timeout_s
            while not self._back(keys, since) and (left := deadline - time.monotonic()) > 0:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            self.hub.unsubscribe(on_event)

    def _back(self, keys: set[Key], since: datetime) -> bool:
        stations = self.fleet.stations
        for sid, eid in keys:
            st = stations.get(sid)
            evse = st.evses.get(eid) if st is not None and st.connected else None
            at = evse.power_measured_at if evse is not None else None
            if at is None or at < since:
                return False
        return True

    def _store_unit_rows(self, rows: list[UnitRow]) -> None:
        self.grid_store.unit_records(rows)  # as they are: tuples in UNIT_COLUMNS order

    def _store_audit(self, entry: AuditEntry) -> None:
        # one per command: a fleet-wide step makes 10,000 of them, and asdict's
        # recursive copy cost ~70 µs each on the loop (measured), this ~1 µs
        e = entry
        self.grid_store.audit(
            {
                "at": e.at,
                "services": ",".join(e.services)[:200],
                "station_id": e.station_id,
                "evse_id": e.evse_id,
                "action": e.action,
                "reason": e.reason,
                "limit_w": e.limit_w,
                "outcome": e.outcome,
                "detail": e.detail,
            }
        )

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics_registry)

    async def start(self) -> Ports:
        s = self.settings
        await asyncio.to_thread(db.upgrade, s.db)
        known = await self.registry.load()
        await self._restore_fleet()
        await self.recorder.start()
        await self.grid_store.start()
        if s.allow_unknown_stations:
            log.warning(
                "!!! --allow-unknown-stations is ON: any station that connects is "
                "registered. Never use this in production. !!!"
            )
        await warm_up(self.api)  # before any station is connected: see warm_up
        ocpp_port = await self.gateway.start(s.host, s.ocpp_port)
        http_port = await self._start_http(s.host, s.http_port)
        self.ports = Ports(ocpp_port, http_port)
        self.grid.start(*frequency_sources(s, self.frequency))
        self._resume_task = asyncio.get_running_loop().create_task(self._resume_grid())
        self.gc_policy.start()
        # The store's writer thread runs Python (row building) while the loop serves
        # stations. uvloop lets go of the GIL around every poll and socket call, and
        # each time the writer may take it; taking it back waited up to the switch
        # interval, 5 ms by default, and a loop pass that needed 10 ms of CPU took
        # 20-40 ms during a 5,000-station connect storm (measured: the slowest acks
        # all fell in the writer's chunks). At 0.2 ms the wait is short; the writer
        # gets its share in smaller slices.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
        log.info(
            "evflex started: %d stations known, OCPP ws://%s:%d/ocpp/{id}, API http://%s:%d/docs",
            known,
            s.host,
            ocpp_port,
            s.host,
            http_port,
        )
        return self.ports

    async def stop(self) -> None:
        await self.gc_policy.stop()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self._resume_task is not None:
            self._resume_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resume_task
        await self.grid.stop()  # releases evflex's limits while stations are still connected
        await self.gateway.stop()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                await self._http_task
        await self.registry.drain()
        await self.recorder.stop()
        await self.grid_store.stop()
        await self.engine.dispose()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start_http(self, host: str, port: int) -> int:
        config = uvicorn.Config(
            self.api,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="none",
        )
        self._http = uvicorn.Server(config)
        # Server.serve() swaps in its own SIGINT/SIGTERM handlers (and re-raises the signal
        # on exit), which fights our loop's handlers and delayed shutdown; _serve() is the
        # same server without that wrapper: the process signals are ours.
        self._http_task = asyncio.get_running_loop().create_task(self._http._serve())
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        servers = self._http.servers
        return int(servers[0].sockets[0].getsockname()[1]) if servers else port

    async def _restore_fleet(self) -> None:
        """Reload what is durable so a restart keeps station and session state."""
        for record in await self.repository.load_stations():
            station = self.fleet.station(record.station_id)
            station.vendor, station.model = record.vendor, record.model
            station.firmware, station.serial = record.firmware, record.serial
            station.booted_at, station.last_seen = record.booted_at, record.last_seen
        for evse_rec in await self.repository.load_evses():
            evse = self.fleet.station(evse_rec.station_id).evse(evse_rec.evse_id)
            evse.status = _status(evse_rec.status)
            evse.status_at, evse.energy_wh, evse.soc_pct = (
                evse_rec.status_at,
                evse_rec.energy_wh,
                evse_rec.soc_pct,
            )
        for tx in await self.repository.open_transactions():
            evse = self.fleet.station(tx.station_id).evse(tx.evse_id)
            evse.transaction = Transaction(
                tx.transaction_id,
                tx.evse_id,
                tx.started_at,
                tx.id_token,
                tx.meter_start_wh,
                last_seq_no=tx.last_seq_no,
            )
        # Power is live data: after a restart it is unknown until stations report again.
        self.fleet.seed_transaction_ids(await self.repository.max_numeric_transaction_id())
        self.fleet.reset_aggregates()


def telemetry_policy(settings: Settings) -> Policy:
    return Policy(
        settings.telemetry_delta_w,
        settings.telemetry_periodic_s,
        tuple(
            Group(name, tuple(g.stations), g.delta_w, g.periodic_s)
            for name, g in settings.telemetry_groups.items()
        ),
    )


_GIL_SWITCH_INTERVAL_S = 0.0002


def model_specs(settings: Settings) -> dict[tuple[str, str], EvseSpec]:
    """`grid_model_specs` ("Vendor/Model" → spec) as the allocator's lookup."""
    out: dict[tuple[str, str], EvseSpec] = {}
    for name, hardware in settings.grid_model_specs.items():
        vendor, _, model = name.partition("/")
        out[(vendor, model)] = hardware.to_spec()
    return out


def grid_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        profile_id_base=settings.grid_profile_id_base,
        stack_level=settings.grid_stack_level,
        valid_for_s=settings.grid_valid_for_s,
        renew_before_s=settings.grid_valid_for_s / 3.0,
        threshold_w=settings.grid_threshold_w,
        tick_s=settings.grid_tick_s,
        health=HealthParams(stale_after_s=settings.grid_stale_after_s),
        response=ResponseParams(
            default_delay_s=settings.grid_response_delay_s,
            min_delay_s=min(3.0, settings.grid_response_delay_s),
            hold_s=settings.grid_response_hold_s,
        ),
    )


def frequency_sources(settings: Settings, push: PushSource) -> list[FrequencySource]:
    """The HTTP push source always; MQTT too when a broker is configured."""
    sources: list[FrequencySource] = [push]
    if settings.grid_mqtt_host:
        sources.append(
            MqttSource(settings.grid_mqtt_host, settings.grid_mqtt_port, settings.grid_mqtt_topic)
        )
    return sources


def _status(value: str | None) -> EvseStatus:
    try:
        return EvseStatus(value) if value else EvseStatus.UNKNOWN
    except ValueError:
        return EvseStatus.UNKNOWN


async def serve(settings: Settings, ready: Callable[[Ports], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ports = await app.start()
    if ready is not None:
        ready(ports)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await app.stop()
