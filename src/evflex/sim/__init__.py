"""Charge point fleet simulator: thousands of OCPP 1.6J / 2.0.1 stations in one process.

Talks to a CSMS over the wire only. Python API:

    from evflex.sim import Fleet, FleetConfig, run_fleet
    async with Fleet(FleetConfig(csms="ws://127.0.0.1:8180/ocpp", stations=100)) as fleet:
        await fleet.wait_booted()
        fleet.station("SIM-00001").power_w

CLI: `evflex sim ...` (evflex.sim.cli.sim_app).
"""

from evflex.sim.catalogue import CLASSES, DEFAULT_MIX, Kind, Model, Monitoring, Ocpp
from evflex.sim.faults import DelayModel, Fault, FaultConfig
from evflex.sim.fleet import Fleet, FleetConfig, password_for, run_fleet, station_ids
from evflex.sim.link import SimEvent
from evflex.sim.passwords import derive_password
from evflex.sim.sessions import SessionConfig, SessionMode
from evflex.sim.station import Station

__all__ = [
    "CLASSES",
    "DEFAULT_MIX",
    "DelayModel",
    "Fault",
    "FaultConfig",
    "Fleet",
    "FleetConfig",
    "Kind",
    "Model",
    "Monitoring",
    "Ocpp",
    "SessionConfig",
    "SessionMode",
    "SimEvent",
    "Station",
    "derive_password",
    "password_for",
    "run_fleet",
    "station_ids",
]
