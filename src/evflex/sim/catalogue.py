"""The simulated hardware catalogue: vendor/model/firmware → what the station can do.

Vendors and models are fictional; their differences are not. They reproduce what
field fleets show (../shared/research/grid-requirements.md, "charger reality"):
many OCPP 1.6 firmwares lack the PowerBank `MeterValuePowerActiveImportDeltaTrigger`
key or refuse short sample intervals, some 2.0.1 firmwares implement no monitoring
or only periodic monitors, some accept limits only in amperes. A CSMS readiness
report over a simulated fleet therefore shows a realistic mix, not a uniform pass.

A *class* (the `--mix` vocabulary: ac16, ac201, dc201, v2g201, bess16) groups the
models a station of that class is drawn from, with weights.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    AC = "ac"
    DC = "dc"
    V2G = "v2g"
    BESS = "bess"


class Ocpp(enum.StrEnum):
    """The WebSocket subprotocol names (OCPP-J), offered one at a time."""

    V16 = "ocpp1.6"
    V201 = "ocpp2.0.1"


class Monitoring(enum.Enum):
    """How much of OCPP 2.0.1 Device Management Monitoring (N02/N04/N06-N08) exists."""

    NONE = "none"  # SetVariableMonitoring → CALLERROR NotSupported
    PERIODIC = "periodic"  # Delta monitors → UnsupportedMonitorType
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Model:
    vendor: str
    model: str
    firmware: str
    kind: Kind
    ocpp: Ocpp
    max_power_w: float
    # AC: supply phases and per-phase current; DC/V2G/BESS: DC bus voltage for A → W
    phases: int = 3
    max_current_a: float = 32.0
    dc_voltage_v: float = 400.0
    max_discharge_w: float = 0.0
    rate_units: tuple[str, ...] = ("A", "W")
    # OCPP 1.6 configuration quirks
    delta_trigger: bool = True
    min_sample_interval_s: int = 1
    sample_interval_reboot: bool = False  # ChangeConfiguration answers RebootRequired
    # OCPP 2.0.1 monitoring
    monitoring: Monitoring = Monitoring.FULL
    min_delta_w: float = 100.0
    min_periodic_s: int = 1
    # smart charging limits reported in configuration / device model
    max_stack_level: int = 8
    max_periods: int = 24
    max_profiles: int = 16
    # BESS only
    capacity_wh: float = 0.0

    @property
    def connectors(self) -> int:
        """Virtual connectors: a BESS has 1 = discharge and 2 = charge (datasheet)."""
        return 2 if self.kind is Kind.BESS else 1


_AC16 = (
    (4, Model("Voltaro", "Home 7", "2.4.1", Kind.AC, Ocpp.V16, 7_360.0, phases=1)),
    (
        3,
        Model(
            "Nordwatt",
            "Wallbox 11",
            "1.9.3",
            Kind.AC,
            Ocpp.V16,
            11_040.0,
            max_current_a=16.0,
            rate_units=("A",),
            delta_trigger=False,
            min_sample_interval_s=10,
        ),
    ),
    (
        2,
        Model(
            "Ampera",
            "Pole 22",
            "5.0.2",
            Kind.AC,
            Ocpp.V16,
            22_080.0,
            sample_interval_reboot=True,
        ),
    ),
    (
        1,
        Model(
            "Kestrel",
            "AC22 Gen1",
            "0.9.8",
            Kind.AC,
            Ocpp.V16,
            22_080.0,
            rate_units=("A",),
            delta_trigger=False,
            min_sample_interval_s=60,
            max_stack_level=3,
            max_periods=5,
        ),
    ),
)
_AC201 = (
    (4, Model("Voltaro", "Home 11 Pro", "3.1.0", Kind.AC, Ocpp.V201, 11_040.0, max_current_a=16)),
    (
        3,
        Model(
            "Nordwatt",
            "Wallbox 22 NG",
            "2.0.5",
            Kind.AC,
            Ocpp.V201,
            22_080.0,
            monitoring=Monitoring.PERIODIC,
            min_periodic_s=60,
        ),
    ),
    (
        2,
        Model(
            "Kestrel",
            "AC Duo",
            "1.2.0",
            Kind.AC,
            Ocpp.V201,
            7_360.0,
            phases=1,
            monitoring=Monitoring.NONE,
        ),
    ),
)
_DC201 = (
    (3, Model("Hyperion", "DC50", "4.2.0", Kind.DC, Ocpp.V201, 50_000.0, max_current_a=125)),
    (2, Model("Hyperion", "DC150", "4.2.0", Kind.DC, Ocpp.V201, 150_000.0, max_current_a=375)),
    (
        2,
        Model(
            "Tessera",
            "Flex 100",
            "7.11",
            Kind.DC,
            Ocpp.V201,
            100_000.0,
            max_current_a=250,
            min_delta_w=500.0,
        ),
    ),
)
_V2G201 = (
    (
        3,
        Model(
            "Hyperion",
            "BiDi 11",
            "1.0.3",
            Kind.V2G,
            Ocpp.V201,
            11_000.0,
            max_current_a=30,
            max_discharge_w=11_000.0,
        ),
    ),
    (
        1,
        Model(
            "Nuvola",
            "V2G 20",
            "0.8.2",
            Kind.V2G,
            Ocpp.V201,
            20_000.0,
            max_current_a=50,
            max_discharge_w=15_000.0,
            min_periodic_s=10,
        ),
    ),
)
_BESS16 = (
    (
        2,
        Model(
            "Stora",
            "Cube 100",
            "6.3.1",
            Kind.BESS,
            Ocpp.V16,
            100_000.0,
            dc_voltage_v=760.0,
            max_current_a=132,
            max_discharge_w=100_000.0,
            capacity_wh=215_000.0,
        ),
    ),
    (
        1,
        Model(
            "Stora",
            "Cube 150",
            "6.3.1",
            Kind.BESS,
            Ocpp.V16,
            150_000.0,
            dc_voltage_v=800.0,
            max_current_a=188,
            max_discharge_w=150_000.0,
            capacity_wh=400_000.0,
        ),
    ),
)

CLASSES: dict[str, tuple[tuple[int, Model], ...]] = {
    "ac16": _AC16,
    "ac201": _AC201,
    "dc201": _DC201,
    "v2g201": _V2G201,
    "bess16": _BESS16,
}
DEFAULT_MIX = "ac16:60,ac201:30,v2g201:5,bess16:5"


def models() -> list[Model]:
    """Every model in the catalogue, in class order."""
    return [model for entries in CLASSES.values() for _, model in entries]
