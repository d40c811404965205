"""A simulated charging station's behaviour, independent of the OCPP version.

Each second (one call of `tick` from the fleet's shared timer) a station: applies
profiles whose response delay has elapsed, lets EVs arrive and leave, measures
its power under the composite limit, integrates its meter, announces state
changes and reports telemetry. `V16Station` / `V201Station` say all of it in
their version's messages.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from evflex.sim import physics
from evflex.sim.catalogue import Kind, Model
from evflex.sim.control import ProfileStore
from evflex.sim.ev import Ev
from evflex.sim.evse import Evse, State, Transaction
from evflex.sim.faults import Fault
from evflex.sim.link import Context, Link
from evflex.sim.schedule import Limit, Profile, composite
from evflex.sim.sessions import SessionGenerator, SessionMode

_METER_NOISE_W = 40.0  # peak-to-peak jitter of a real meter, below any 100 W delta
_INF = float("inf")
EARLY_S = 0.5  # half a tick
_BUSY = (State.CHARGING, State.SUSPENDED_EV, State.SUSPENDED_EVSE, State.FINISHING)


def sample_due(evse: Evse, now: float, interval_s: int) -> bool:
    """Whether a periodic sample is due now, and if so schedule the next one.

    Half a tick early counts as on time: the shared tick comes round every second
    give or take timer jitter, and a 1 s interval must not skip a beat.
    """
    if interval_s <= 0 or now + EARLY_S < evse.next_sample_at:
        return False
    evse.next_sample_at += interval_s
    if evse.next_sample_at <= now:  # far behind (e.g. after a pause): start afresh
        evse.next_sample_at = now + interval_s
    return True


class Station(Link):
    __slots__ = (
        "_last_tick",
        "_to_watts",
        "battery",
        "evses",
        "model",
        "next_arrival",
        "operational",
        "profiles",
        "profiles_received",
        "reset_when_idle",
        "sessions",
        "tx_counter",
    )

    def __init__(
        self,
        station_id: str,
        model: Model,
        ctx: Context,
        *,
        rng: random.Random,
        sessions: SessionGenerator | None,
        auth_header: str | None = None,
        fault: Fault = Fault.NONE,
    ) -> None:
        super().__init__(station_id, ctx, rng, auth_header, fault)
        self.model = model
        self.sessions = sessions
        self.evses = [Evse(i + 1) for i in range(model.connectors)]
        self.battery = (
            physics.Battery(model.capacity_wh, model.max_power_w, nominal_v=model.dc_voltage_v)
            if model.kind is Kind.BESS
            else None
        )
        self.profiles = ProfileStore(ctx.delays, rng, ignore=fault is Fault.IGNORE)
        self.operational = False  # booted at least once since power-on or reset
        self.next_arrival = _INF
        self.reset_when_idle = False
        self.profiles_received = 0
        self.tx_counter = 0
        self._last_tick = 0.0
        self._to_watts = self._ac_to_watts if model.kind is Kind.AC else self._dc_to_watts

    # -- observation ------------------------------------------------------------------
    @property
    def power_w(self) -> float:
        """Net power now (W): positive draws from the grid, negative feeds it."""
        return sum(e.power_w for e in self.evses)

    def snapshot(self) -> dict[str, Any]:
        """What an observer (demo, test, benchmark) may want to know, as plain data."""
        m = self.model
        return {
            "station_id": self.station_id,
            "vendor": m.vendor,
            "model": m.model,
            "firmware": m.firmware,
            "ocpp": m.ocpp.value,
            "kind": m.kind.value,
            "fault": self.fault.value,
            "connected": self.connected,
            "booted": self.boot == "accepted",
            "power_w": round(self.power_w, 1),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "profiles_received": self.profiles_received,
            "evses": [self._evse_snapshot(e) for e in self.evses],
        }

    def _evse_snapshot(self, evse: Evse) -> dict[str, Any]:
        ev = evse.ev
        return {
            "id": evse.id,
            "state": evse.state.value,
            "power_w": round(evse.power_w, 1),
            "limit_w": evse.limit.watts,
            "import_wh": round(evse.import_wh, 1),
            "export_wh": round(evse.export_wh, 1),
            "transaction": evse.tx.local_id if evse.tx is not None else None,
            "soc": round(ev.soc, 4) if ev is not None else None,
            "energy_needed_wh": ev.energy_needed_wh if ev is not None else None,
            "opt_out": ev.opt_out if ev is not None else None,
        }

    # -- the shared tick ----------------------------------------------------------------
    def tick(self, now: float, mono: float) -> None:
        """Once a second: profile application, sessions, meter, telemetry, protocol."""
        if self.operational:
            dt = now - self._last_tick if self._last_tick else 0.0
            self._last_tick = now
            if self.profiles.due(now):
                self._apply_due(now)
            for evse in self.evses:
                self._step(evse, now, dt)
            if self.battery is not None:
                self.battery.step(self.power_w, dt)
            if self.reset_when_idle and all(e.tx is None for e in self.evses):
                self.reset_when_idle = False
                self.reset("Soft")
        self.link_tick(now, mono)

    def _step(self, evse: Evse, now: float, dt: float) -> None:
        power = self._bess_power(evse, now) if self.battery else self._ev_power(evse, now, dt)
        if power != 0.0:
            power += (self.rng.random() - 0.5) * _METER_NOISE_W
            if power > 0.0:
                evse.import_wh += power * dt / 3600.0
            else:
                evse.export_wh -= power * dt / 3600.0
        evse.power_w = power
        self.refresh_state(evse, now)
        if evse.tx is not None:
            self.on_measured(evse, now)

    def _ev_power(self, evse: Evse, now: float, dt: float) -> float:
        ev = evse.ev
        driver_now = self.ctx.clock.driver(now)
        if ev is None:
            if driver_now >= self.next_arrival and evse.operative and self.sessions:
                self.arrive(evse, now, self.sessions.new_ev(driver_now))
            return 0.0
        if driver_now >= ev.departure:
            self.depart(evse, now)
            return 0.0
        if evse.tx is None:
            return 0.0
        limit = self.limit_for(evse, now)
        if self.model.kind is Kind.AC:
            power = physics.ac_power(self.model, ev, limit.watts, limit.phases)
        else:
            power = physics.dc_power(self.model, ev, limit.watts)
        ev.absorb(power, dt * self.ctx.clock.speed)
        return power

    def _bess_power(self, evse: Evse, now: float) -> float:
        """Connector 1 discharges, connector 2 charges; protection clips both."""
        battery = self.battery
        if battery is None or evse.tx is None:
            return 0.0
        limit = self.limit_for(evse, now).watts
        wanted = self.model.max_power_w if limit is None else max(0.0, limit)
        charging = evse.id == 2
        power = battery.clip(wanted, charging)
        return power if charging else -power

    def refresh_state(self, evse: Evse, now: float) -> None:
        """Announce a change of state (StatusNotification, TransactionEvent) at once."""
        state = self._state_of(evse, evse.power_w)
        if state is not evse.state:
            old, evse.state = evse.state, state
            self.on_state_change(evse, old, now)

    def _state_of(self, evse: Evse, power: float) -> State:
        if evse.tx is None:
            if not evse.operative:
                return State.UNAVAILABLE
            if evse.ev is None:
                return State.AVAILABLE
            return State.FINISHING if evse.state in _BUSY else State.PLUGGED
        if power != 0.0:
            return State.CHARGING
        return State.SUSPENDED_EVSE if self._limited(evse) else State.SUSPENDED_EV

    def _limited(self, evse: Evse) -> bool:
        """Whether the station (its limit or its protection), not the car, holds power at 0."""
        watts = evse.limit.watts
        if self.battery is not None:
            blocked = self.battery.clip(1.0, evse.id == 2) == 0.0
            return blocked or (watts is not None and watts <= 0.0)
        if watts is None:
            return False
        if self.model.kind is Kind.AC:
            phases = min(self.model.phases, evse.limit.phases or 3)
            return watts / (physics.VOLTS_AC * phases) < physics.MIN_AC_CURRENT_A
        return watts == 0.0 or (watts < 0.0 and self.model.kind is not Kind.V2G)

    # -- sessions --------------------------------------------------------------------
    def on_booted(self, now: float) -> None:
        self.send_all_status()
        if self.operational:
            return
        self.operational = True
        self._last_tick = now
        if self.tx_counter == 0:
            self._first_sessions(now)
            return
        for evse in self.evses:  # rebooted: a car still plugged in starts again
            if evse.ev is not None and evse.tx is None:
                self.authorize(evse, now, evse.ev.id_tag)

    def on_reconnected(self) -> None:
        self.send_all_status()

    def _first_sessions(self, now: float) -> None:
        """At first boot, plug in the EVs that the session mode says are there."""
        gen = self.sessions
        if gen is None:
            return
        mode = gen.config.mode
        if self.battery is not None:
            if mode is SessionMode.ALL:
                self.start_transaction(self.evses[1], now, "BESS-CHARGE")
            return
        driver_now = self.ctx.clock.driver(now)
        if mode is SessionMode.ALL:
            self.arrive(self.evses[0], now, gen.charging_now(driver_now))
        elif mode is SessionMode.PROFILE:
            ev, self.next_arrival = gen.present_at(driver_now)
            if ev is not None:
                self.arrive(self.evses[0], now, ev)

    def arrive(self, evse: Evse, now: float, ev: Ev) -> None:
        evse.ev = ev
        self.next_arrival = _INF
        self.refresh_state(evse, now)  # 1.6 Preparing / 2.0.1 Occupied before authorizing
        self.authorize(evse, now, ev.id_tag)

    def authorize(self, evse: Evse, now: float, id_tag: str) -> None:
        """Authorize, then start; offline the station trusts the tag (LocalAuthorizeOffline)."""
        if self.transport is None or self.boot != "accepted":
            self.start_transaction(evse, now, id_tag)
            return

        def answered(response: dict[str, Any]) -> None:
            still_there = evse.ev is not None and evse.ev.id_tag == id_tag
            if self.authorized(response) and evse.tx is None and still_there:
                self.start_transaction(evse, time.time(), id_tag)

        self.call("Authorize", self.authorize_payload(id_tag), answered)

    def depart(self, evse: Evse, now: float) -> None:
        if evse.tx is not None:
            self.stop_transaction(evse, now, "EVDisconnected")
        evse.ev = None
        evse.power_w = 0.0
        self.refresh_state(evse, now)
        if self.sessions is not None and self.sessions.config.mode is SessionMode.PROFILE:
            self.next_arrival = self.sessions.next_arrival(self.ctx.clock.driver(now))

    def ev_for_remote_start(self, evse: Evse, now: float, id_tag: str) -> None:
        """A remote start with no car plugged in: the driver is there and plugs in now."""
        if evse.ev is None and self.sessions is not None:
            evse.ev = self.sessions.new_ev(self.ctx.clock.driver(now))
            evse.ev.id_tag = id_tag
            self.next_arrival = _INF

    def new_transaction(self, evse: Evse, now: float, id_tag: str) -> Transaction:
        self.tx_counter += 1
        tx = Transaction(f"{self.station_id}-{self.tx_counter}", id_tag, now, evse.import_wh)
        evse.tx = tx
        evse.limit_dirty = True
        evse.last_reported_w = 0.0
        evse.next_sample_at = now + self.sample_interval()
        self.emit("tx_started", evse=evse.id, transaction=tx.local_id, id_tag=id_tag)
        return tx

    def end_transaction(self, evse: Evse) -> Transaction | None:
        tx, evse.tx = evse.tx, None
        if tx is not None:
            self.profiles.end_transaction(evse.id)
            evse.limit_dirty = True
            self.emit("tx_ended", evse=evse.id, transaction=tx.local_id)
        return tx

    # -- charging profiles -------------------------------------------------------------
    def install(self, profile: Profile) -> None:
        """Accept a profile now; the power follows after the response delay."""
        self.profiles.install(profile, time.time())
        self._count_profile()

    def remove_profiles(self, doomed: Callable[[Profile], bool]) -> int:
        removed = self.profiles.remove(doomed, time.time())
        if removed:
            self._count_profile()
        return removed

    def _count_profile(self) -> None:
        self.profiles_received += 1
        self.ctx.stats.profiles_received += 1

    def _apply_due(self, now: float) -> None:
        self.profiles.apply_due(now)
        for evse in self.evses:
            evse.limit_dirty = True
        self.emit("applied", profiles=len(self.profiles.applied))

    def limit_for(self, evse: Evse, now: float) -> Limit:
        """The composite limit the station follows now, re-evaluated only when it can change."""
        limit = evse.limit
        if evse.limit_dirty or now >= limit.until:
            tx = evse.tx
            limit = composite(
                self.profiles.applied,
                now,
                evse=evse.id,
                tx_id=self.tx_key(tx) if tx is not None else None,
                tx_start=tx.started if tx is not None else None,
                to_watts=self._to_watts,
            )
            evse.limit = limit
            evse.limit_dirty = False
        return limit

    def _ac_to_watts(self, limit: float, amps: bool, phases: int | None) -> float:
        if not amps:
            return limit
        # An amp limit is per phase (OCPP): in watts it depends on the phases actually in
        # use, which a single-phase car on a three-phase charger reduces to one.
        return limit * physics.VOLTS_AC * self._phases_in_use(phases)

    def _phases_in_use(self, limit_phases: int | None) -> int:
        phases = min(self.model.phases, limit_phases or self.model.phases)
        for evse in self.evses:  # the simulated stations have one EVSE
            if evse.ev is not None:
                return min(phases, evse.ev.phases)
        return phases

    def _dc_to_watts(self, limit: float, amps: bool, phases: int | None) -> float:
        return limit * self.model.dc_voltage_v if amps else limit

    def to_unit(self, watts: float, phases: int | None, amps: bool) -> float:
        """Watts → the requested charging rate unit (for composite schedule reports)."""
        if not amps:
            return watts
        if self.model.kind is Kind.AC:
            return watts / (physics.VOLTS_AC * self._phases_in_use(phases))
        return watts / self.model.dc_voltage_v

    # -- resets -------------------------------------------------------------------------
    def reset(self, kind: str) -> None:
        """Reboot: end transactions, forget the boot, reconnect and boot again."""
        now = time.time()
        for evse in self.evses:
            if evse.tx is not None:
                self.stop_transaction(evse, now, "SoftReset" if kind == "Soft" else "HardReset")
        self.operational = False
        self.boot = "none"
        self.apply_reboot_settings()
        self.disconnect()

    # -- what each OCPP version says -----------------------------------------------------
    def send_all_status(self) -> None:
        raise NotImplementedError

    def on_state_change(self, evse: Evse, old: State, now: float) -> None:
        raise NotImplementedError

    def on_measured(self, evse: Evse, now: float) -> None:
        raise NotImplementedError

    def authorize_payload(self, id_tag: str) -> dict[str, Any]:
        raise NotImplementedError

    def authorized(self, response: dict[str, Any]) -> bool:
        raise NotImplementedError

    def start_transaction(self, evse: Evse, now: float, id_tag: str) -> None:
        raise NotImplementedError

    def stop_transaction(self, evse: Evse, now: float, reason: str) -> None:
        raise NotImplementedError

    def sample_interval(self) -> float:
        raise NotImplementedError

    def tx_key(self, tx: Transaction) -> str | None:
        """The transaction id a TxProfile names, as a string."""
        raise NotImplementedError

    def apply_reboot_settings(self) -> None:
        """Settings accepted with RebootRequired take effect now."""
