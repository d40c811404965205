"""An electric vehicle plugged into a simulated station, and its charging curve.

The curve is the usual constant-power-then-taper shape: full power up to a knee
SoC, then linearly down to zero at 100 %. The EV takes the lower of that and what
the station offers; the station's meter sees the result.
"""

from __future__ import annotations

from dataclasses import dataclass


def acceptance_w(soc: float, max_w: float, knee: float) -> float:
    """Power (W) the EV's battery accepts at `soc` (0–1): flat to `knee`, then tapering."""
    if soc >= 1.0 or max_w <= 0.0:
        return 0.0
    if soc <= knee:
        return max_w
    return max_w * (1.0 - soc) / (1.0 - knee)


@dataclass(slots=True)
class Ev:
    """One vehicle's session: battery, needs and the driver's choices."""

    id_tag: str
    capacity_wh: float
    soc: float  # 0–1
    target_soc: float  # the car stops charging here (driver's charge limit)
    max_charge_w: float  # AC: on-board charger; DC: the car's DC limit
    phases: int  # AC on-board charger phases (1 or 3)
    max_discharge_w: float  # 0 unless the car does V2G
    knee: float
    arrival: float  # driver time (s)
    departure: float  # driver time (s)
    energy_needed_wh: float  # what the driver wants by departure
    opt_out: bool  # driver declined grid balancing for this session
    min_soc: float = 0.3  # V2G: the driver's reserve, never discharged below

    def accept_w(self) -> float:
        """Charging power the car accepts now (W)."""
        if self.soc >= self.target_soc:
            return 0.0
        return acceptance_w(self.soc, self.max_charge_w, self.knee)

    def discharge_w(self) -> float:
        """Discharging power the car can give now (W, ≥ 0)."""
        return self.max_discharge_w if self.soc > self.min_soc else 0.0

    def absorb(self, watts: float, seconds: float) -> None:
        """Move energy in (positive) or out (negative) of the battery."""
        soc = self.soc + watts * seconds / 3600.0 / self.capacity_wh
        self.soc = 0.0 if soc < 0.0 else 1.0 if soc > 1.0 else soc
