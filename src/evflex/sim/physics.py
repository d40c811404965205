"""What a station actually draws, given its composite limit, its hardware and the EV.

AC follows IEC 61851-1: the charger signals a current limit by PWM and cannot
signal less than 6 A, so below 6 A per phase it pauses the charge (0 W) rather
than modulate. DC and V2G modulate continuously; V2G discharges when the limit
(a setpoint, in effect) is negative. A battery storage system protects itself:
it clips or refuses power outside its SoC, voltage and temperature envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

from evflex.sim.catalogue import Model
from evflex.sim.ev import Ev

VOLTS_AC = 230.0
MIN_AC_CURRENT_A = 6.0


def ac_power(model: Model, ev: Ev, limit_w: float | None, limit_phases: int | None) -> float:
    """AC charging power (W, ≥ 0): the lower of the signalled current and the car's need."""
    phases = min(model.phases, ev.phases, limit_phases or 3)
    current = model.max_current_a
    if limit_w is not None:
        current = min(current, limit_w / (VOLTS_AC * phases))
    if current < MIN_AC_CURRENT_A:
        return 0.0  # IEC 61851-1: under 6 A the EVSE suspends the charge
    offered = current * VOLTS_AC * phases
    accept = ev.accept_w()
    return offered if offered < accept else accept


def dc_power(model: Model, ev: Ev, limit_w: float | None) -> float:
    """DC / V2G power (W): positive charges the car, negative discharges it (V2G only)."""
    offered = model.max_power_w if limit_w is None else min(model.max_power_w, limit_w)
    if offered >= 0.0:
        accept = ev.accept_w()
        return offered if offered < accept else accept
    give = min(-offered, model.max_discharge_w, ev.discharge_w())
    return -give if give > 0.0 else 0.0


@dataclass(slots=True)
class Battery:
    """A stationary battery: state of charge and health, temperature, protection limits."""

    capacity_wh: float
    rated_w: float
    soc: float = 0.5
    soh: float = 0.97
    temp_c: float = 25.0
    ambient_c: float = 25.0
    min_soc: float = 0.05
    max_soc: float = 0.95
    derate_c: float = 40.0
    max_temp_c: float = 45.0
    nominal_v: float = 760.0

    @property
    def voltage(self) -> float:
        """Pack voltage: about ±10 % of nominal across the SoC range."""
        return self.nominal_v * (0.9 + 0.2 * self.soc)

    def refusal(self, charging: bool) -> str | None:
        """Why the battery refuses to start in this direction now, or None."""
        if self.temp_c >= self.max_temp_c:
            return "temperature"
        if charging and self.soc >= self.max_soc:
            return "over-voltage / SoC high"
        if not charging and self.soc <= self.min_soc:
            return "under-voltage / SoC low"
        return None

    def clip(self, watts: float, charging: bool) -> float:
        """The power (W, ≥ 0) the protection allows in this direction."""
        if self.refusal(charging) is not None:
            return 0.0
        allowed = min(watts, self.rated_w)
        if self.temp_c > self.derate_c:
            share = (self.max_temp_c - self.temp_c) / (self.max_temp_c - self.derate_c)
            allowed = min(allowed, self.rated_w * share)
        return max(0.0, allowed)

    def step(self, net_w: float, seconds: float) -> None:
        """Advance: `net_w` > 0 charges; losses warm the pack, which cools towards ambient."""
        energy = net_w * seconds / 3600.0
        soc = self.soc + energy / (self.capacity_wh * self.soh)
        self.soc = 0.0 if soc < 0.0 else 1.0 if soc > 1.0 else soc
        load = abs(net_w) / self.rated_w
        # ~15 K above ambient at sustained full power, time constant ~15 min
        self.temp_c += (self.ambient_c + 15.0 * load - self.temp_c) * min(1.0, seconds / 900.0)
