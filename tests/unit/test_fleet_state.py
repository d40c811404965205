"""FleetState: event application and the incrementally maintained aggregates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evflex.fleet.events import (
    Event,
    MeterSampled,
    SampledValue,
    StationBooted,
    StationConnected,
    StationDisconnected,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
    TransactionUpdated,
)
from evflex.fleet.model import EvseStatus, Protocol
from evflex.fleet.state import FleetState, FleetSummary

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def power(
    station: str,
    evse: int,
    watts: float,
    t: float = 0,
    tx: str | None = None,
    unit: str = "W",
    measurand: str = "Power.Active.Import",
) -> MeterSampled:
    return MeterSampled(station, evse, at(t), at(t), (SampledValue(measurand, watts, unit),), tx)


def status(station: str, evse: int, value: EvseStatus, t: float = 0) -> StatusChanged:
    return StatusChanged(station, evse, 1, value, at(t))


def apply_all(fleet: FleetState, *events: Event) -> FleetSummary:
    for event in events:
        fleet.apply(event)
        assert fleet.summary() == fleet.recompute(), event
    return fleet.summary()


def test_connect_and_disconnect_count_once() -> None:
    fleet = FleetState()
    summary = apply_all(
        fleet,
        StationConnected("A", Protocol.OCPP16, at(0)),
        StationConnected("A", Protocol.OCPP201, at(1)),  # a replacing connection
        StationConnected("B", Protocol.OCPP16, at(1)),
    )
    assert summary == FleetSummary(2, 2, 0, 0.0)
    assert fleet.stations["A"].protocol is Protocol.OCPP201
    summary = apply_all(
        fleet,
        StationDisconnected("A", at(2)),
        StationDisconnected("A", at(3)),
        StationDisconnected("GHOST", at(3)),
    )
    assert summary == FleetSummary(2, 1, 0, 0.0)
    assert "GHOST" not in fleet.stations


def test_boot_and_seen_update_station_fields() -> None:
    fleet = FleetState()
    apply_all(fleet, StationBooted("A", "V", "M", "1.0", "SN", "PowerUp", at(5)))
    station = fleet.stations["A"]
    assert (station.vendor, station.model, station.firmware, station.serial) == (
        "V",
        "M",
        "1.0",
        "SN",
    )
    assert station.booted_at == station.last_seen == at(5)
    apply_all(fleet, StationSeen("A", at(9)))
    assert station.last_seen == at(9)


def test_status_counts_charging_and_ignores_connector_zero() -> None:
    fleet = FleetState()
    apply_all(fleet, status("A", 0, EvseStatus.CHARGING))
    assert fleet.stations["A"].evses == {}
    assert apply_all(fleet, status("A", 1, EvseStatus.CHARGING)).evses_charging == 1
    assert apply_all(fleet, status("A", 1, EvseStatus.CHARGING)).evses_charging == 1
    assert apply_all(fleet, status("A", 2, EvseStatus.SUSPENDED_EV)).evses_charging == 1
    assert apply_all(fleet, status("A", 1, EvseStatus.FAULTED)).evses_charging == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([("Power.Active.Import", 7.5, "kW", None)], 7500.0),
        ([("Power.Active.Import", 7500, None, None)], 7500.0),  # no unit: W
        ([("Power.Active.Import", 2000, "W", p) for p in ("L1", "L2", "L3")], 6000.0),
        (
            [("Power.Active.Import", 2000, "W", "L1"), ("Power.Active.Import", 5000, "W", None)],
            5000.0,
        ),
        ([("Power.Active.Import", 1000, "W", "N")], 1000.0),  # N counts as the total
        ([("Power.Active.Export", 3, "kW", None)], -3000.0),
        (
            [("Power.Active.Import", 1000, "W", None), ("Power.Active.Export", 4000, "W", None)],
            -3000.0,
        ),
    ],
)
def test_net_power(
    values: list[tuple[str, float, str | None, str | None]], expected: float
) -> None:
    fleet = FleetState()
    samples = tuple(SampledValue(m, v, u, p) for m, v, u, p in values)
    summary = apply_all(fleet, MeterSampled("A", 1, at(0), at(0), samples))
    assert fleet.stations["A"].evses[1].power_w == expected
    assert summary.power_w == expected


def test_meter_without_power_keeps_power_and_sets_energy_and_soc() -> None:
    fleet = FleetState()
    apply_all(fleet, power("A", 1, 4000))
    samples = (
        SampledValue("Energy.Active.Import.Register", 12.5, "kWh"),
        SampledValue("Energy.Active.Import.Register", 999, "Wh", "L1"),  # per phase: ignored
        SampledValue("SoC", 55, "Percent"),
    )
    apply_all(fleet, MeterSampled("A", 1, at(1), at(1), samples))
    evse = fleet.stations["A"].evses[1]
    assert (evse.power_w, evse.energy_wh, evse.soc_pct) == (4000.0, 12500.0, 55.0)


def test_older_sample_does_not_overwrite_newer() -> None:
    fleet = FleetState()
    apply_all(fleet, power("A", 1, 7000, t=10), power("A", 1, 1000, t=5))
    assert fleet.stations["A"].evses[1].power_w == 7000.0
    assert fleet.stations["A"].evses[1].power_measured_at == at(10)
    assert apply_all(fleet, power("A", 1, 1000, t=11)).power_w == 1000.0


def test_connector_zero_meter_only_counts_for_a_transaction() -> None:
    fleet = FleetState()
    apply_all(fleet, power("A", 0, 50000))
    assert fleet.stations["A"].evses == {}
    apply_all(fleet, TransactionStarted("A", 2, "7", at(0)))
    summary = apply_all(fleet, power("A", 0, 3000, t=1, tx="7"))
    assert fleet.stations["A"].evses[2].power_w == 3000.0
    assert summary.power_w == 3000.0
    assert apply_all(fleet, power("A", 0, 9000, t=2, tx="unknown")).power_w == 3000.0


def test_transaction_lifecycle() -> None:
    fleet = FleetState()
    apply_all(
        fleet,
        TransactionStarted("A", 1, "T", at(0), "TAG", 100.0, False, 0),
        TransactionUpdated("A", 1, "T", at(1), "Charging", False, 1),
        power("A", 1, 11000, t=2, tx="T"),
    )
    evse = fleet.stations["A"].evses[1]
    tx = evse.transaction
    assert tx is not None and (tx.id_token, tx.meter_start_wh, tx.last_seq_no) == ("TAG", 100.0, 1)
    assert fleet.summary() == FleetSummary(1, 0, 1, 11000.0)
    summary = apply_all(fleet, TransactionStopped("A", "T", at(3), 900.0, "Local", False, 2))
    assert summary == FleetSummary(1, 0, 0, 0.0)
    assert evse.transaction is None and evse.status is EvseStatus.FINISHING
    assert (tx.stopped_at, tx.meter_stop_wh, tx.stop_reason, tx.last_seq_no) == (
        at(3),
        900.0,
        "Local",
        2,
    )
    assert (evse.power_w, evse.power_measured_at) == (0.0, at(3))
    # stopping an unknown transaction changes nothing
    assert apply_all(fleet, TransactionStopped("A", "NOPE", at(4))) == summary


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("Charging", EvseStatus.CHARGING),
        ("SuspendedEV", EvseStatus.SUSPENDED_EV),
        ("SuspendedEVSE", EvseStatus.SUSPENDED_EVSE),
        ("EVConnected", EvseStatus.OCCUPIED),
        ("Idle", EvseStatus.OCCUPIED),
    ],
)
def test_charging_state_maps_to_status(state: str, expected: EvseStatus) -> None:
    fleet = FleetState()
    apply_all(fleet, TransactionUpdated("A", 1, "T", at(0), state))
    assert fleet.stations["A"].evses[1].status is expected


def test_seq_gaps_and_offline_events() -> None:
    fleet = FleetState()
    apply_all(
        fleet,
        TransactionStarted("A", 1, "T", at(0), seq_no=0),
        TransactionUpdated("A", 1, "T", at(1), "Charging", seq_no=1),
        TransactionUpdated("A", 1, "T", at(2), "SuspendedEV", offline=True, seq_no=5),
        TransactionUpdated("A", 1, "T", at(3), seq_no=2),
    )
    tx = fleet.stations["A"].evses[1].transaction
    assert tx is not None
    assert (tx.seq_gaps, tx.last_seq_no, tx.offline_events) == (3, 5, 1)
    assert fleet.stations["A"].evses[1].status is EvseStatus.CHARGING  # offline: not applied


def test_occupied_notification_keeps_the_more_specific_charging_status() -> None:
    fleet = FleetState()
    apply_all(
        fleet,
        TransactionStarted("A", 1, "T", at(0)),
        TransactionUpdated("A", 1, "T", at(1), "Charging"),
        status("A", 1, EvseStatus.OCCUPIED, t=2),
    )
    assert fleet.stations["A"].evses[1].status is EvseStatus.CHARGING
    assert fleet.summary().evses_charging == 1


def test_transaction_ids_and_seed() -> None:
    fleet = FleetState()
    assert [fleet.allocate_transaction_id() for _ in range(3)] == [1, 2, 3]
    fleet.seed_transaction_ids(100)
    assert fleet.allocate_transaction_id() == 101
    fleet.seed_transaction_ids(5)  # never goes back
    assert fleet.allocate_transaction_id() == 102


def test_reset_aggregates_after_bulk_load() -> None:
    fleet = FleetState()
    station = fleet.station("A")
    station.connected = True
    station.evse(1).status = EvseStatus.CHARGING
    station.evse(1).power_w = 2500.0
    assert fleet.summary() != fleet.recompute()
    fleet.reset_aggregates()
    assert fleet.summary() == fleet.recompute() == FleetSummary(1, 1, 1, 2500.0)


STATIONS = st.sampled_from(["A", "B"])
EVSES = st.integers(min_value=0, max_value=2)
TXS = st.sampled_from(["1", "2", "3"])
TIMES = st.integers(min_value=0, max_value=50).map(at)
WATTS = st.integers(min_value=-22000, max_value=22000).map(float)
EVENTS = st.one_of(
    st.builds(StationConnected, STATIONS, st.sampled_from(list(Protocol)), TIMES),
    st.builds(StationDisconnected, STATIONS, TIMES),
    st.builds(StatusChanged, STATIONS, EVSES, st.just(1), st.sampled_from(list(EvseStatus)), TIMES),
    st.builds(
        MeterSampled,
        STATIONS,
        EVSES,
        TIMES,
        TIMES,
        st.lists(
            st.builds(
                SampledValue,
                st.sampled_from(["Power.Active.Import", "Power.Active.Export", "SoC"]),
                WATTS,
                st.sampled_from(["W", "kW", None]),
                st.sampled_from([None, "L1", "L2", "N"]),
            ),
            max_size=3,
        ).map(tuple),
        st.one_of(st.none(), TXS),
    ),
    st.builds(TransactionStarted, STATIONS, EVSES, TXS, TIMES),
    st.builds(
        TransactionUpdated,
        STATIONS,
        EVSES,
        TXS,
        TIMES,
        st.sampled_from([None, "Charging", "SuspendedEV", "EVConnected", "Idle"]),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 10)),
    ),
    st.builds(TransactionStopped, STATIONS, TXS, TIMES),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=40))
def test_running_aggregates_always_equal_a_full_recompute(events: list[Event]) -> None:
    fleet = FleetState()
    apply_all(fleet, *events)
