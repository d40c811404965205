"""EV arrivals and departures from daily profiles, deterministic per seed and station.

Time here is *driver time*: the fleet's clock compressed by the `--speed` factor,
so a day of arrivals can pass in minutes while the stations' protocol clock
(timestamps, profiles, timeouts) stays real (see evflex.sim.clock).

Arrivals are a non-homogeneous Poisson process: a profile gives 24 relative
hourly weights and a mean number of sessions per day; a dwell time is drawn
from a log-normal distribution around the profile's median.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

from evflex.sim.catalogue import Kind, Model
from evflex.sim.ev import Ev

DAY_S = 86_400.0


class SessionMode(enum.StrEnum):
    PROFILE = "profile"  # arrivals and departures from the daily profile
    ALL = "all"  # every station starts with an EV plugged in and charging
    NONE = "none"  # no EVs: idle stations (remote starts still work)


@dataclass(frozen=True, slots=True)
class DailyProfile:
    hourly: tuple[float, ...]  # 24 relative arrival weights, hour 0 = 00:00 UTC
    sessions_per_day: float
    dwell_median_h: float
    dwell_sigma: float = 0.5


PROFILES: dict[str, DailyProfile] = {
    # residential: home in the evening, gone in the morning
    "home": DailyProfile(
        (1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 6, 9, 10, 8, 6, 4, 2, 1), 0.9, 11.0
    ),
    "work": DailyProfile(
        (0, 0, 0, 0, 0, 1, 4, 10, 12, 8, 4, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), 1.0, 7.5
    ),
    "public": DailyProfile(
        (0, 0, 0, 0, 0, 1, 2, 4, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8, 7, 6, 4, 2, 1, 0), 4.0, 1.5, 0.7
    ),
    "fast": DailyProfile(
        (1, 0, 0, 0, 0, 1, 3, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8, 7, 6, 4, 3, 2, 1), 10.0, 0.5, 0.4
    ),
}
DEFAULT_PROFILE = {Kind.AC: "home", Kind.DC: "fast", Kind.V2G: "home", Kind.BESS: "home"}
_CAPACITIES_WH = ((40_000.0, 25), (60_000.0, 35), (77_000.0, 25), (100_000.0, 15))


@dataclass(frozen=True, slots=True)
class SessionConfig:
    mode: SessionMode = SessionMode.PROFILE
    profile: str | None = None  # None = the default for the station's kind
    opt_out_share: float = 0.1
    speed: float = 1.0  # driver time per real second


class SessionGenerator:
    """Draws one station's EVs; owns that station's random stream."""

    __slots__ = ("_serial", "config", "model", "profile", "rng", "tag_prefix")

    def __init__(self, model: Model, config: SessionConfig, rng: random.Random, tag: str) -> None:
        self.model = model
        self.config = config
        self.rng = rng
        self.profile = PROFILES[config.profile or DEFAULT_PROFILE[model.kind]]
        self.tag_prefix = tag
        self._serial = 0

    def next_arrival(self, after: float) -> float:
        """The next arrival strictly after `after` (driver time), inf if none."""
        weights = self.profile.hourly
        total = sum(weights)
        if total <= 0 or self.profile.sessions_per_day <= 0:
            return math.inf
        per_hour = [self.profile.sessions_per_day * w / total for w in weights]
        hazard = self.rng.expovariate(1.0)
        t = after
        for _ in range(24 * 30):  # bounded: a month of hours
            hour_end = (math.floor(t / 3600.0) + 1) * 3600.0
            rate = per_hour[int(t % DAY_S // 3600)] / 3600.0
            if rate > 0 and hazard <= rate * (hour_end - t):
                return t + hazard / rate
            hazard -= rate * (hour_end - t)
            t = hour_end
        return math.inf

    def new_ev(self, arrival: float) -> Ev:
        """A vehicle arriving at `arrival`, with its needs and its departure."""
        rng = self.rng
        dwell_h = rng.lognormvariate(
            math.log(self.profile.dwell_median_h), self.profile.dwell_sigma
        )
        return self._ev(arrival, arrival + dwell_h * 3600.0, rng.uniform(0.1, 0.6))

    def charging_now(self, t: float) -> Ev:
        """`--sessions all`: an EV that is already plugged in and charging at `t`."""
        return self._ev(t, t + 24 * 3600.0, self.rng.uniform(0.1, 0.4))

    def _ev(self, arrival: float, departure: float, soc: float) -> Ev:
        rng = self.rng
        capacity = rng.choices([c for c, _ in _CAPACITIES_WH], [w for _, w in _CAPACITIES_WH])[0]
        target = rng.choice((0.8, 0.9, 1.0))
        dc = self.model.kind in (Kind.DC, Kind.V2G)
        three_phase = rng.random() < 0.7
        max_w = capacity * 1.6 if dc else (11_000.0 if three_phase else 7_400.0)
        self._serial += 1
        opt_out = rng.random() < self.config.opt_out_share
        # The idTag shows the opt-out: OCPP has no field for it (CiString20 in 1.6)
        tag = f"{'OPTOUT' if opt_out else 'EV'}{self.tag_prefix}{self._serial:04d}"[:20]
        return Ev(
            id_tag=tag,
            capacity_wh=capacity,
            soc=soc,
            target_soc=target,
            max_charge_w=max_w,
            phases=1 if dc else (3 if three_phase else 1),
            max_discharge_w=self.model.max_discharge_w if self.model.kind is Kind.V2G else 0.0,
            knee=0.8 if dc else 0.95,
            arrival=arrival,
            departure=departure,
            energy_needed_wh=max(0.0, (target - soc) * capacity),
            opt_out=opt_out,
        )

    def present_at(self, t0: float) -> tuple[Ev | None, float]:
        """Warm start: the EV plugged in at `t0` (if any) and the next arrival after it.

        Replays the previous day so a fleet starts in its steady state, not empty.
        """
        t = t0 - DAY_S
        for _ in range(1000):
            arrival = self.next_arrival(t)
            if arrival >= t0:
                return None, arrival
            ev = self.new_ev(arrival)
            if ev.departure > t0:
                ev.soc = min(
                    ev.target_soc,
                    ev.soc + (t0 - arrival) * ev.max_charge_w / 3600.0 / ev.capacity_wh,
                )
                return ev, math.inf
            t = ev.departure
        return None, math.inf
