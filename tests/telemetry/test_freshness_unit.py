"""Freshness figures: age of each charging EVSE's power, and whether it is current."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evflex.fleet.events import (
    MeterSampled,
    SampledValue,
    StationConnected,
    StationDisconnected,
    StatusChanged,
)
from evflex.fleet.model import EvseStatus, Protocol
from evflex.fleet.state import FleetState
from evflex.telemetry.freshness import PERIODIC_GRACE_S, freshness

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PERIODIC_S = 300.0


def _charging(fleet: FleetState, sid: str, reported_at: datetime) -> None:
    fleet.apply(StationConnected(sid, Protocol.OCPP16, T0))
    fleet.apply(StatusChanged(sid, 1, 1, EvseStatus.CHARGING, T0))
    power = SampledValue("Power.Active.Import", 7400.0, "W")
    fleet.apply(MeterSampled(sid, 1, reported_at, reported_at, (power,)))


def _reports_changes(station_id: str) -> float | None:
    # "D-" stations were provisioned to forward changes (delta accepted), "P-" were not
    return PERIODIC_S if station_id.startswith("D-") else None


def test_a_steady_value_of_a_change_reporting_station_is_current() -> None:
    """A station that forwards every change > delta within 1 s and has not missed its
    periodic report holds a current value however old; one reporting only periodically
    does not (FR: 'share of charging EVSEs whose power is known within 1 s')."""
    fleet = FleetState()
    _charging(fleet, "D-1", T0)
    _charging(fleet, "P-1", T0)
    f = freshness(fleet, T0 + timedelta(seconds=60), _reports_changes)
    assert (f.evses_charging, f.known_within_1s, f.known_within_5s) == (2, 0, 0)
    assert f.current == 1 and f.share_current == 0.5


def test_a_fresh_report_is_current_for_every_station() -> None:
    fleet = FleetState()
    _charging(fleet, "D-1", T0)
    _charging(fleet, "P-1", T0)
    f = freshness(fleet, T0 + timedelta(seconds=0.5), _reports_changes)
    assert (f.known_within_1s, f.known_within_5s, f.current) == (2, 2, 2)


def test_an_overdue_periodic_report_or_a_lost_connection_ends_currency() -> None:
    fleet = FleetState()
    _charging(fleet, "D-1", T0)
    _charging(fleet, "D-2", T0)
    overdue = T0 + timedelta(seconds=PERIODIC_S + PERIODIC_GRACE_S + 1)
    assert freshness(fleet, overdue, _reports_changes).current == 0
    on_time = T0 + timedelta(seconds=PERIODIC_S)
    fleet.apply(StationDisconnected("D-2", on_time))
    f = freshness(fleet, on_time, _reports_changes)
    assert f.current == 1  # D-2's changes can no longer reach us


def test_without_provisioning_knowledge_only_age_counts() -> None:
    fleet = FleetState()
    _charging(fleet, "D-1", T0)
    assert freshness(fleet, T0 + timedelta(seconds=60)).current == 0
