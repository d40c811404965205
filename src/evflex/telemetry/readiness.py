"""Readiness: does a station meet the PowerBank rules? Pure functions, no I/O.

Requirements (during a charging transaction, per EVSE): (1) power measured locally
once a second — not visible in OCPP, so it is inferred: a station that forwards
changes within a second measures at least that often; (2) changes ≥ delta W
forwarded within 1 s; (3) a report at least every periodic s.

The verdict combines what provisioning achieved with what the station was seen to do:

* `not_ready` — change forwarding (2) cannot be configured, or the station was seen
  not to honour what it accepted (silent while charging, changes not forwarded);
* `partial`  — (2) in place but periodic reporting (3) is not (rejected, reboot
  pending, or observed intervals too long), or change reports arrive late;
* `ready`    — both in place and power reports observed since;
* `unknown`  — not provisioned yet, or nothing observed yet to confirm it.

Reasons are machine-readable `requirement:cause[:item]` strings, e.g.
`delta:NotSupported:MeterValuePowerActiveImportDeltaTrigger`,
`periodic:RebootRequired:MeterValueSampleInterval`, `observed:no_reports_while_charging`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from evflex.fleet.model import Station
from evflex.telemetry.observer import EvseObservation
from evflex.telemetry.provisioner import Outcome, Provisioning

Verdict = Literal["ready", "partial", "not_ready", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("ready", "partial", "not_ready", "unknown")
_EVSE_ITEM = re.compile(r"^EVSE\.\d+\.")
MISSED_CHANGES = 2  # tolerated races between a change and a periodic report
_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class StationReadiness:
    station_id: str
    verdict: Verdict
    reasons: tuple[str, ...]
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    protocol: str | None = None


@dataclass(slots=True)
class ModelReadiness:
    vendor: str | None
    model: str | None
    firmware: str | None
    stations: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def share_ready(self) -> float:
        return self.verdicts["ready"] / self.stations if self.stations else 0.0

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        return self.reasons.most_common(n)


def assess(
    station: Station,
    provisioning: Provisioning | None,
    observed: dict[int, EvseObservation],
    now: datetime,
) -> StationReadiness:
    verdict, reasons = _judge(station, provisioning, observed, now)
    return StationReadiness(
        station.station_id,
        verdict,
        tuple(dict.fromkeys(reasons)),  # de-duplicated, order kept
        station.vendor,
        station.model,
        station.firmware,
        str(station.protocol) if station.protocol else None,
    )


def _judge(
    station: Station,
    p: Provisioning | None,
    observed: dict[int, EvseObservation],
    now: datetime,
) -> tuple[Verdict, list[str]]:
    if p is None:
        return "unknown", ["provisioning:pending"]
    if p.error is not None:
        return "unknown", [f"provisioning:{p.error}"]
    reasons = [
        f"{o.requirement}:{o.status}:{_EVSE_ITEM.sub('EVSE.', o.item)}"
        for o in p.outcomes
        if not o.ok and o.requirement != "cleanup"
    ]
    delta = [o for o in p.outcomes if o.requirement == "delta"]
    periodic = [o for o in p.outcomes if o.requirement in ("periodic", "sampled")]
    delta_ok = bool(delta) and all(o.ok for o in delta)
    # 2.0.1: a rejected Periodic monitor may be made good by the sampled-data fallback
    periodic_ok = bool(periodic) and _periodic_ok(periodic)
    if not delta_ok:
        return "not_ready", reasons
    verdict: Verdict = "ready" if periodic_ok else "partial"
    # -- observation: does the station do what it accepted? ---------------------------
    silent_after = p.targets.periodic_s + max(_GRACE_S, 0.1 * p.targets.periodic_s)
    since = p.finished_at or p.started_at
    reports = 0
    for evse_id, evse in station.evses.items():
        obs = observed.get(evse_id)
        reports += obs.reports if obs else 0
        if obs is None or obs.reports == 0:
            if (
                evse.charging
                and station.connected
                and (now - max(since, evse.status_at or since)).total_seconds() > silent_after
            ):
                reasons.append("observed:no_reports_while_charging")
                verdict = "not_ready"
            continue
        if obs.missed_changes >= MISSED_CHANGES:
            reasons.append("delta:observed_changes_not_forwarded")
            verdict = "not_ready"
        if obs.late and obs.late * 10 > obs.reports:
            reasons.append("delta:observed_late")
            verdict = "partial" if verdict == "ready" else verdict
        if obs.max_gap_s > silent_after:
            reasons.append("periodic:observed_interval_too_long")
            verdict = "partial" if verdict == "ready" else verdict
    if verdict == "ready" and reports == 0:
        return "unknown", [*reasons, "observed:not_enough"]
    return verdict, reasons


def with_control(r: StationReadiness, reasons: list[str]) -> StationReadiness:
    """Add what the grid engine saw the station do with its limits (issue 5).

    A station that accepts limits but does not follow them, or refuses every form of
    limit, cannot deliver a grid service whatever its telemetry: `not_ready`. One that
    takes limits only in another form (amps, another purpose) still delivers: the
    reason is kept, the verdict is not changed.
    """
    if not reasons:
        return r
    verdict = r.verdict
    if any(x.startswith("control:non_responding") for x in reasons):
        verdict = "not_ready"
    merged = tuple(dict.fromkeys((*r.reasons, *reasons)))
    return replace(r, verdict=verdict, reasons=merged)


def _periodic_ok(outcomes: list[Outcome]) -> bool:
    fallback = [o for o in outcomes if o.item.startswith("SampledDataCtrlr.")]
    return all(o.ok for o in (fallback or outcomes))


def by_model(stations: list[StationReadiness]) -> list[ModelReadiness]:
    groups: dict[tuple[str | None, str | None, str | None], ModelReadiness] = {}
    for s in stations:
        key = (s.vendor, s.model, s.firmware)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ModelReadiness(*key)
        group.stations += 1
        group.verdicts[s.verdict] += 1
        group.reasons.update(s.reasons)
    return sorted(
        groups.values(),
        key=lambda g: (-g.stations, g.vendor or "", g.model or "", g.firmware or ""),
    )


def counts(stations: list[StationReadiness]) -> dict[str, int]:
    out: dict[str, int] = dict.fromkeys(VERDICTS, 0)
    for s in stations:
        out[s.verdict] += 1
    return out
