"""Hardware catalogue, 1.6 configuration keys, 2.0.1 device model and monitors."""

from __future__ import annotations

import random

import pytest

from evflex.sim.catalogue import CLASSES, Kind, Monitoring, Ocpp, models
from evflex.sim.config16 import DELTA_KEY, Configuration
from evflex.sim.devicemodel import DeviceModel
from evflex.sim.faults import DelayModel, Fault, FaultConfig, parse_faults
from evflex.sim.mix import allocate, parse_mix
from evflex.sim.monitors import Monitors, evaluate


def model(vendor_model: str):  # type: ignore[no-untyped-def]
    return next(m for m in models() if m.model == vendor_model)


def test_catalogue_has_a_realistic_mix() -> None:
    ms = models()
    assert {m.kind for m in ms} == set(Kind)
    assert any(m.ocpp is Ocpp.V16 and not m.delta_trigger for m in ms)
    assert any(m.ocpp is Ocpp.V201 and m.monitoring is Monitoring.NONE for m in ms)
    assert any(m.monitoring is Monitoring.PERIODIC for m in ms)
    assert all(7_000 <= m.max_power_w <= 22_080 for m in ms if m.kind is Kind.AC)
    assert all(50_000 <= m.max_power_w <= 150_000 for m in ms if m.kind is Kind.DC)
    assert all(m.max_discharge_w > 0 for m in ms if m.kind in (Kind.V2G, Kind.BESS))
    assert all(len(m.vendor) <= 20 and len(m.model) <= 20 for m in ms)  # 1.6 CiString20


def test_change_configuration_answers_per_model() -> None:
    """1.6 §5.3: Accepted, Rejected, RebootRequired or NotSupported."""
    home = Configuration(model("Home 7"), sample_interval_s=60, delta_w=0)
    assert home.change("MeterValueSampleInterval", "300") == "Accepted"
    assert home.change(DELTA_KEY, "100") == "Accepted"
    assert home.change("NumberOfConnectors", "2") == "Rejected"  # read-only
    assert home.change("MeterValueSampleInterval", "abc") == "Rejected"
    assert home.change("MeterValuesSampledData", "Power.Active.Import,Bogus") == "Rejected"
    assert home.change("NoSuchKey", "1") == "NotSupported"
    legacy = Configuration(model("Wallbox 11"), sample_interval_s=60, delta_w=0)
    assert legacy.change(DELTA_KEY, "100") == "NotSupported"
    assert legacy.change("MeterValueSampleInterval", "5") == "Rejected"  # below its minimum
    pole = Configuration(model("Pole 22"), sample_interval_s=60, delta_w=0)
    assert pole.change("MeterValueSampleInterval", "300") == "RebootRequired"
    assert pole.int("MeterValueSampleInterval") == 60
    pole.apply_reboot()
    assert pole.int("MeterValueSampleInterval") == 300


def test_get_configuration_reports_unknown_keys() -> None:
    config = Configuration(model("Home 7"), sample_interval_s=1, delta_w=0)
    known, unknown = config.get(["HeartbeatInterval", "Nope"])
    assert [k["key"] for k in known] == ["HeartbeatInterval"] and unknown == ["Nope"]
    everything, _ = config.get(None)
    assert len(everything) == len(config.keys)


def test_configurations_share_definitions_not_values() -> None:
    a = Configuration(model("Home 7"), sample_interval_s=60, delta_w=0)
    b = Configuration(model("Home 7"), sample_interval_s=60, delta_w=0)
    a.change("HeartbeatInterval", "30")
    assert a.int("HeartbeatInterval") == 30 and b.int("HeartbeatInterval") == 300


def dm(name: str = "Home 11 Pro", power: float = 0.0) -> DeviceModel:
    return DeviceModel(model(name), "CS1", interval_s=60, live=lambda v: f"{power:.1f}")


def comp(name: str, evse: int | None = None) -> dict[str, object]:
    return {"name": name, **({"evse": {"id": evse}} if evse else {})}


def test_get_and_set_variables() -> None:
    """B05/B06 attribute statuses."""
    d = dm(power=7400.0)
    got = d.get({"component": comp("EVSE", 1), "variable": {"name": "Power"}})
    assert got["attributeStatus"] == "Accepted" and got["attributeValue"] == "7400.0"
    assert d.get({"component": comp("Nope"), "variable": {"name": "X"}})["attributeStatus"] == (
        "UnknownComponent"
    )
    var = {"component": comp("SampledDataCtrlr"), "variable": {"name": "Nope"}}
    assert d.get(var)["attributeStatus"] == "UnknownVariable"
    secret = {"component": comp("SecurityCtrlr"), "variable": {"name": "BasicAuthPassword"}}
    assert d.get(secret)["attributeStatus"] == "Rejected"  # write-only
    interval = {"component": comp("SampledDataCtrlr"), "variable": {"name": "TxUpdatedInterval"}}
    assert d.set({**interval, "attributeValue": "15"})["attributeStatus"] == "Accepted"
    assert d.int("SampledDataCtrlr", "TxUpdatedInterval") == 15
    assert d.set({**interval, "attributeValue": "x"})["attributeStatus"] == "Rejected"
    model_var = {"component": comp("ChargingStation"), "variable": {"name": "Model"}}
    assert d.set({**model_var, "attributeValue": "x"})["attributeStatus"] == "Rejected"
    assert d.get({**model_var, "attributeType": "Target"})["attributeStatus"] == (
        "NotSupportedAttributeType"
    )


def test_base_reports() -> None:
    full = dm().report("FullInventory")
    config = dm().report("ConfigurationInventory")
    assert len(config) < len(full)
    power = next(r for r in full if r["variable"]["name"] == "Power")
    assert power["variableCharacteristics"]["supportsMonitoring"] is True
    assert all(
        "value" not in r["variableAttribute"][0]
        for r in full
        if r["variable"]["name"] == "BasicAuthPassword"
    )


def monitor_item(kind: str, value: float, **kw: object) -> dict[str, object]:
    return {
        "value": value,
        "type": kind,
        "severity": 5,
        "component": comp("EVSE", 1),
        "variable": {"name": "Power"},
        **kw,
    }


def test_set_monitoring_statuses() -> None:
    """N04: Accepted, UnknownComponent, UnsupportedMonitorType, Rejected, Duplicate."""
    full = Monitors(model("Home 11 Pro"))
    d = dm()
    assert full.set(monitor_item("Delta", 100), d, 0.0, 0.0)["status"] == "Accepted"
    assert full.set(monitor_item("Delta", 100), d, 0.0, 0.0)["status"] == "Duplicate"
    assert full.set(monitor_item("Periodic", 300, id=99), d, 0.0, 0.0)["status"] == "Rejected"
    bad = {**monitor_item("Delta", 100), "component": comp("Nope")}
    assert full.set(bad, d, 0.0, 0.0)["status"] == "UnknownComponent"
    periodic_only = Monitors(model("Wallbox 22 NG"))
    d22 = dm("Wallbox 22 NG")
    assert periodic_only.set(monitor_item("Delta", 100), d22, 0, 0)["status"] == (
        "UnsupportedMonitorType"
    )
    assert periodic_only.set(monitor_item("Periodic", 30), d22, 0, 0)["status"] == "Rejected"
    assert periodic_only.set(monitor_item("Periodic", 300), d22, 0, 0)["status"] == "Accepted"
    coarse = Monitors(model("Flex 100"))
    assert coarse.set(monitor_item("Delta", 100), dm("Flex 100"), 0, 0)["status"] == "Rejected"


def test_delta_monitor_semantics() -> None:
    """MonitorEnumType Delta: "Triggers an event notice when the actual value has changed
    more than plus or minus Value since the time that this monitor was set or since the last
    time this event notice was sent, whichever was last"."""
    ms = Monitors(model("Home 11 Pro"))
    mid = ms.set(monitor_item("Delta", 100), dm(), 0.0, 1000.0)["id"]
    m = ms.monitors[mid]
    assert evaluate(m, 1099.0, 1.0, True) is None
    assert evaluate(m, 1100.0, 2.0, True) == "Delta"
    assert evaluate(m, 1050.0, 3.0, True) is None  # reference moved to 1100
    assert evaluate(m, 999.0, 4.0, True) == "Delta"


def test_periodic_monitor_semantics() -> None:
    """Periodic: "Triggers an event notice every Value seconds interval, starting from the
    time that this monitor was set"."""
    ms = Monitors(model("Home 11 Pro"))
    mid = ms.set(monitor_item("Periodic", 10), dm(), 100.0, 0.0)["id"]
    m = ms.monitors[mid]
    fired = [t for t in range(100, 131) if evaluate(m, 0.0, float(t), True)]
    assert fired == [110, 120, 130]


def test_transaction_only_monitors_wait_for_a_transaction() -> None:
    ms = Monitors(model("Home 11 Pro"))
    mid = ms.set(monitor_item("Delta", 100, transaction=True), dm(), 0.0, 0.0)["id"]
    assert evaluate(ms.monitors[mid], 5000.0, 1.0, False) is None
    assert evaluate(ms.monitors[mid], 5000.0, 1.0, True) == "Delta"


def test_clear_and_report_monitors() -> None:
    ms = Monitors(model("Home 11 Pro"))
    mid = ms.set(monitor_item("Delta", 100), dm(), 0.0, 0.0)["id"]
    ms.set(monitor_item("Periodic", 300), dm(), 0.0, 0.0)
    assert len(ms.report(["DeltaMonitoring"], None)[0]["variableMonitoring"]) == 1
    assert len(ms.report(None, None)[0]["variableMonitoring"]) == 2
    assert ms.clear([mid, 12345]) == [
        {"id": mid, "status": "Accepted"},
        {"id": 12345, "status": "NotFound"},
    ]


def test_mix_allocation_is_exact_and_seeded() -> None:
    weights = parse_mix("ac16:60,ac201:30,v2g201:5,bess16:5")
    classes = allocate(weights, 1000, random.Random(3))
    assert classes.count("ac16") == 600 and classes.count("bess16") == 50
    assert classes == allocate(weights, 1000, random.Random(3))
    with pytest.raises(ValueError):
        parse_mix("ac99:1")


def test_faults_and_delays() -> None:
    shares = parse_faults("ignore:2,reject:1,slow:1,drop:1")
    assert shares[Fault.IGNORE] == 0.02
    config = FaultConfig(shares)
    drawn = [config.assign(random.Random(i)) for i in range(2000)]
    assert 0.02 < sum(f is not Fault.NONE for f in drawn) / 2000 < 0.08
    with pytest.raises(ValueError):
        parse_faults("ignore:90,drop:20")
    delays = [DelayModel().draw(random.Random(i)) for i in range(2000)]
    assert all(1.0 <= d <= 30.0 for d in delays)
    assert 0.01 < sum(d > 5.0 for d in delays) / 2000 < 0.1
    assert set(CLASSES) >= {"ac16", "ac201", "dc201", "v2g201", "bess16"}
