"""Readiness verdicts, policy groups and the 2.0.1 monitoring adapters, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evflex.fleet import commands as c
from evflex.fleet.model import EvseStatus, Protocol, Station
from evflex.ocpp import commands_v16, commands_v201
from evflex.telemetry.observer import EvseObservation
from evflex.telemetry.policy import Group, Policy, Targets
from evflex.telemetry.provisioner import Outcome, Provisioning
from evflex.telemetry.readiness import StationReadiness, assess, by_model, with_control

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DELTA = "MeterValuePowerActiveImportDeltaTrigger"


def _station(charging: bool = True, model: str = "M") -> Station:
    st = Station("S1", Protocol.OCPP16, True, "V", model, "1.0")
    evse = st.evse(1)
    evse.status = EvseStatus.CHARGING if charging else EvseStatus.AVAILABLE
    evse.status_at = T0
    return st


def _prov(*outcomes: tuple[str, str, str], periodic_s: int = 300) -> Provisioning:
    p = Provisioning("S1", "ocpp1.6", Targets(100, periodic_s), T0, T0)
    p.outcomes = [Outcome(req, item, status) for req, item, status in outcomes]  # type: ignore[arg-type]
    return p


OK16 = (
    ("sampled", "MeterValuesSampledData", "InPlace"),
    ("periodic", "MeterValueSampleInterval", "Accepted"),
    ("delta", DELTA, "Accepted"),
)


def _seen(reports: int = 3, **kw: float) -> dict[int, EvseObservation]:
    return {1: EvseObservation(T0, reports=reports, **kw)}  # type: ignore[arg-type]


def test_verdicts_from_provisioning_and_observation() -> None:
    now = T0 + timedelta(seconds=30)
    assert assess(_station(), None, {}, now).verdict == "unknown"
    ready = assess(_station(), _prov(*OK16), _seen(), now)
    assert (ready.verdict, ready.reasons) == ("ready", ())
    # accepted but nothing observed yet: not enough to say
    assert assess(_station(), _prov(*OK16), {}, now).verdict == "unknown"
    reboot = _prov(OK16[0], ("periodic", "MeterValueSampleInterval", "RebootRequired"), OK16[2])
    r = assess(_station(), reboot, _seen(), now)
    assert r.verdict == "partial"
    assert r.reasons == ("periodic:RebootRequired:MeterValueSampleInterval",)
    missing = _prov(OK16[0], OK16[1], ("delta", DELTA, "NotSupported"))
    r = assess(_station(), missing, _seen(), now)
    assert r.verdict == "not_ready" and r.reasons == (f"delta:NotSupported:{DELTA}",)


def test_observation_downgrades_what_was_accepted() -> None:
    p = _prov(*OK16, periodic_s=300)
    silent_for = T0 + timedelta(seconds=300 + 31)
    r = assess(_station(), p, {}, silent_for)
    assert r.verdict == "not_ready" and "observed:no_reports_while_charging" in r.reasons
    # not charging: silence is expected
    assert assess(_station(charging=False), p, {}, silent_for).verdict == "unknown"
    r = assess(_station(), p, _seen(missed_changes=2), T0)
    assert r.verdict == "not_ready" and "delta:observed_changes_not_forwarded" in r.reasons
    r = assess(_station(), p, _seen(reports=10, late=5), T0)
    assert r.verdict == "partial" and "delta:observed_late" in r.reasons
    r = assess(_station(), p, _seen(max_gap_s=900.0), T0)
    assert r.verdict == "partial" and "periodic:observed_interval_too_long" in r.reasons


def test_v201_periodic_fallback_and_evse_neutral_reasons() -> None:
    p = _prov(
        ("delta", "EVSE.1.Power.Delta", "Accepted"),
        ("periodic", "EVSE.1.Power.Periodic", "UnsupportedMonitorType"),
        ("sampled", "SampledDataCtrlr.TxUpdatedMeasurands", "InPlace"),
        ("periodic", "SampledDataCtrlr.TxUpdatedInterval", "Accepted"),
    )
    r = assess(_station(), p, _seen(), T0)
    assert r.verdict == "ready"
    assert r.reasons == ("periodic:UnsupportedMonitorType:EVSE.Power.Periodic",)


def test_per_model_share_and_reasons() -> None:
    now = T0
    items = [
        assess(_station(model="A"), _prov(*OK16), _seen(), now),
        assess(_station(model="A"), _prov(OK16[0], OK16[1], ("delta", DELTA, "Rejected")), {}, now),
        assess(_station(model="B"), _prov(OK16[0], OK16[1], ("delta", DELTA, "Rejected")), {}, now),
    ]
    models = by_model(items)
    a = next(m for m in models if m.model == "A")
    assert (a.stations, a.share_ready, a.verdicts["not_ready"]) == (2, 0.5, 1)
    assert a.top_reasons() == [(f"delta:Rejected:{DELTA}", 1)]


def test_policy_groups() -> None:
    policy = Policy(100, 300, (Group("dc", ("DC-*", "HPC-?"), 500, 60),))
    assert policy.for_station("DC-1") == Targets(500, 60, "dc")
    assert policy.for_station("HPC-7").group == "dc"
    assert policy.for_station("AC-1") == Targets(100, 300, None)
    with pytest.raises(ValueError):
        Policy(0, 300)


def test_monitoring_commands_on_201_and_not_on_16() -> None:
    monitor = c.Monitor("EVSE", "Power", "Delta", 100.0, 8, True, evse_id=2)
    [(action, payload)] = commands_v201.plan(c.SetVariableMonitoring((monitor,)))
    assert action == "SetVariableMonitoring"
    assert payload["setMonitoringData"] == [
        {
            "value": 100.0,
            "type": "Delta",
            "severity": 8,
            "transaction": True,
            "component": {"name": "EVSE", "evse": {"id": 2}},
            "variable": {"name": "Power"},
        }
    ]
    answer = {
        "setMonitoringResult": [
            {
                "id": 7,
                "status": "UnsupportedMonitorType",
                "type": "Delta",
                "severity": 8,
                "component": {"name": "EVSE", "evse": {"id": 2}},
                "variable": {"name": "Power"},
            }
        ]
    }
    result = commands_v201.interpret(c.SetVariableMonitoring((monitor,)), [answer])
    assert result.status == "UnsupportedMonitorType"
    assert result.response["results"][0]["evse_id"] == 2
    [(action, payload)] = commands_v201.plan(c.ClearVariableMonitoring((3, 4)))
    assert (action, payload) == ("ClearVariableMonitoring", {"id": [3, 4]})
    [(action, payload)] = commands_v201.plan(
        c.GetMonitoringReport(5, ("Delta", "Periodic"), (c.VariableRef("Power", "EVSE"),))
    )
    assert payload == {
        "requestId": 5,
        "monitoringCriteria": ["DeltaMonitoring", "PeriodicMonitoring"],
        "componentVariable": [{"component": {"name": "EVSE"}, "variable": {"name": "Power"}}],
    }
    for command in (c.SetVariableMonitoring((monitor,)), c.ClearVariableMonitoring((1,))):
        with pytest.raises(c.CommandNotSupported):
            commands_v16.plan(command)


def test_grid_control_findings_join_the_readiness_verdict() -> None:
    """Issue 5: non-responding units and fallbacks are reported with readiness."""
    ready = StationReadiness("CP-1", "ready", ("periodic:ok",), "V", "M", "1.0")
    assert with_control(ready, []) is ready
    fallback = with_control(ready, ["control:fallback:A/natural"])
    assert fallback.verdict == "ready" and fallback.reasons[-1] == "control:fallback:A/natural"
    ignoring = with_control(ready, ["control:non_responding:EVSE.1"])
    assert ignoring.verdict == "not_ready"
    assert ignoring.reasons == ("periodic:ok", "control:non_responding:EVSE.1")
    models = by_model([ignoring, ready])
    assert models[0].reasons["control:non_responding:EVSE.1"] == 1
