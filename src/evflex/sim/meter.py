"""Readings of a station's meter, by OCPP measurand name (1.6 §7.31, 2.0.1 MeasurandEnumType).

Power is signed inside the simulator (+ import, − export); on the wire each
direction has its own non-negative measurand.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from evflex.sim import physics
from evflex.sim.catalogue import Kind

if TYPE_CHECKING:
    from evflex.sim.evse import Evse
    from evflex.sim.station import Station

UNITS = {
    "Energy.Active.Import.Register": "Wh",
    "Energy.Active.Export.Register": "Wh",
    "Power.Active.Import": "W",
    "Power.Active.Export": "W",
    "Power.Offered": "W",
    "Current.Import": "A",
    "Current.Export": "A",
    "Current.Offered": "A",
    "Voltage": "V",
    "SoC": "Percent",
    "Temperature": "Celsius",
}
# Where each quantity is measured (1.6 Location; omitted = Outlet)
LOCATIONS = {"SoC": "EV", "Temperature": "Body"}


def voltage(station: Station) -> float:
    if station.battery is not None:
        return station.battery.voltage
    return physics.VOLTS_AC if station.model.kind is Kind.AC else station.model.dc_voltage_v


def _amps(station: Station, watts: float) -> float:
    if station.model.kind is Kind.AC:
        return watts / (physics.VOLTS_AC * station.model.phases)
    return watts / voltage(station)


def reading(station: Station, evse: Evse, measurand: str) -> float | None:
    """The current value of `measurand`, or None if this EVSE has no such quantity now."""
    power = evse.power_w
    if measurand == "Power.Active.Import":
        return power if power > 0.0 else 0.0
    if measurand == "Energy.Active.Import.Register":
        return evse.import_wh
    if measurand == "Power.Active.Export":
        return -power if power < 0.0 else 0.0
    if measurand == "Energy.Active.Export.Register":
        return evse.export_wh
    if measurand == "SoC":
        if station.battery is not None:
            return station.battery.soc * 100.0
        return None if evse.ev is None else evse.ev.soc * 100.0
    return _electrical(station, evse, measurand)


def _electrical(station: Station, evse: Evse, measurand: str) -> float | None:
    power = evse.power_w
    if measurand == "Current.Import":
        return _amps(station, power) if power > 0.0 else 0.0
    if measurand == "Current.Export":
        return _amps(station, -power) if power < 0.0 else 0.0
    if measurand in ("Power.Offered", "Current.Offered"):
        offered = evse.limit.watts if evse.limit.watts is not None else station.model.max_power_w
        offered = max(0.0, min(offered, station.model.max_power_w))
        return offered if measurand == "Power.Offered" else _amps(station, offered)
    if measurand == "Voltage":
        return voltage(station)
    if measurand == "Temperature":
        return station.battery.temp_c if station.battery is not None else None
    return None


@functools.cache
def sampled_template(ocpp16: bool, measurands: tuple[str, ...], context: str, body: bool) -> str:
    """A JSON array of sampled values with a `%.1f` hole per measurand.

    Built once per (version, measurands, context): the per-second path then formats
    floats into a string, far cheaper than building and serialising dicts.
    """
    items = []
    for m in measurands:
        value = '"%.1f"' if ocpp16 else "%.1f"
        unit = f'"unit":"{UNITS[m]}"' if ocpp16 else f'"unitOfMeasure":{{"unit":"{UNITS[m]}"}}'
        location = "Body" if body else LOCATIONS.get(m)
        where = f',"location":"{location}"' if m in LOCATIONS and location else ""
        items.append(f'{{"value":{value},"context":"{context}","measurand":"{m}",{unit}{where}}}')
    return "[" + ",".join(items) + "]"


def readings(station: Station, evse: Evse, measurands: tuple[str, ...]) -> tuple[float, ...] | None:
    """All values for the template, or None if one is unavailable now."""
    values = []
    for m in measurands:
        value = reading(station, evse, m)
        if value is None:
            return None
        values.append(value)
    return tuple(values)
