"""OCPP 1.6 configuration keys (§9) of a simulated station: GetConfiguration / ChangeConfiguration.

Which keys exist and how a change is answered depend on the model: a key the
firmware does not know is NotSupported (e.g. PowerBank's
`MeterValuePowerActiveImportDeltaTrigger` on older firmware), a read-only key or
an invalid value is Rejected, and some firmwares answer RebootRequired for
telemetry settings, keeping the old value until the next reset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from evflex.sim.catalogue import Kind, Model

DELTA_KEY = "MeterValuePowerActiveImportDeltaTrigger"
_AC_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Power.Offered",
    "Voltage",
)
_DC_MEASURANDS = (*_AC_MEASURANDS, "SoC", "Energy.Active.Export.Register", "Power.Active.Export")
_BESS_MEASURANDS = (*_DC_MEASURANDS, "Current.Export", "Temperature")
_PROFILES = (
    "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"
)


@dataclass(frozen=True, slots=True)
class Key:
    """A key's definition and factory value, shared by every station of a model."""

    value: str
    readonly: bool = False
    kind: str = "int"  # int | bool | csl | str
    reboot: bool = False  # a change answers RebootRequired
    minimum: int = 0


def supported_measurands(model: Model) -> tuple[str, ...]:
    if model.kind is Kind.BESS:
        return _BESS_MEASURANDS
    return _AC_MEASURANDS if model.kind is Kind.AC else _DC_MEASURANDS


def default_sampled(model: Model) -> str:
    if model.kind is Kind.AC:
        return "Energy.Active.Import.Register,Power.Active.Import"
    if model.kind is Kind.BESS:
        return (
            "Energy.Active.Import.Register,Energy.Active.Export.Register,Power.Active.Import,"
            "Power.Active.Export,SoC,Temperature,Voltage"
        )
    return "Energy.Active.Import.Register,Power.Active.Import,SoC"


@functools.cache
def _keys(model: Model, sample_interval_s: int, delta_w: int) -> dict[str, Key]:
    measurands = supported_measurands(model)
    interval = max(sample_interval_s, model.min_sample_interval_s) if sample_interval_s else 0
    keys = {
        "AuthorizeRemoteTxRequests": Key("false", kind="bool"),
        "ClockAlignedDataInterval": Key("0"),
        "ConnectionTimeOut": Key("60"),
        "GetConfigurationMaxKeys": Key("50", readonly=True),
        "HeartbeatInterval": Key("300"),
        "LocalAuthorizeOffline": Key("true", kind="bool"),
        "LocalPreAuthorize": Key("false", kind="bool"),
        "MeterValuesAlignedData": Key("", kind="csl"),
        "MeterValuesSampledData": Key(default_sampled(model), kind="csl"),
        "MeterValuesSampledDataMaxLength": Key(str(len(measurands)), readonly=True),
        "MeterValueSampleInterval": Key(
            str(interval), reboot=model.sample_interval_reboot, minimum=model.min_sample_interval_s
        ),
        "NumberOfConnectors": Key(str(model.connectors), readonly=True),
        "ResetRetries": Key("3"),
        "StopTransactionOnEVSideDisconnect": Key("true", kind="bool"),
        "StopTransactionOnInvalidId": Key("true", kind="bool"),
        "StopTxnAlignedData": Key("", kind="csl"),
        "StopTxnSampledData": Key("Energy.Active.Import.Register", kind="csl"),
        "SupportedFeatureProfiles": Key(_PROFILES, readonly=True, kind="csl"),
        "TransactionMessageAttempts": Key("3"),
        "TransactionMessageRetryInterval": Key("30"),
        "UnlockConnectorOnEVSideDisconnect": Key("true", kind="bool"),
        "WebSocketPingInterval": Key("0", reboot=True),
        "ChargeProfileMaxStackLevel": Key(str(model.max_stack_level), readonly=True),
        "ChargingScheduleAllowedChargingRateUnit": Key(
            ",".join("Current" if u == "A" else "Power" for u in model.rate_units),
            readonly=True,
            kind="csl",
        ),
        "ChargingScheduleMaxPeriods": Key(str(model.max_periods), readonly=True),
        "MaxChargingProfilesInstalled": Key(str(model.max_profiles), readonly=True),
    }
    if model.delta_trigger:
        keys[DELTA_KEY] = Key(str(delta_w))
    return keys


class Configuration:
    """One station's keys: the model's shared definitions plus what the CSMS changed."""

    __slots__ = ("_pending", "_values", "keys", "measurands")

    def __init__(self, model: Model, *, sample_interval_s: int, delta_w: int) -> None:
        self.measurands = frozenset(supported_measurands(model))
        self.keys = _keys(model, sample_interval_s, delta_w)
        self._values: dict[str, str] = {}
        self._pending: dict[str, str] = {}

    def value(self, name: str) -> str | None:
        key = self.keys.get(name)
        return None if key is None else self._values.get(name, key.value)

    def set_value(self, name: str, value: str) -> None:
        self._values[name] = value

    def get(self, names: list[str] | None) -> tuple[list[dict[str, object]], list[str]]:
        """GetConfiguration: (configurationKey entries, unknownKey names)."""
        wanted = names if names else list(self.keys)
        known: list[dict[str, object]] = [
            {"key": n, "readonly": self.keys[n].readonly, "value": self.value(n)}
            for n in wanted
            if n in self.keys
        ]
        return known, [n for n in wanted if n not in self.keys]

    def change(self, name: str, value: str) -> str:
        """ChangeConfiguration: Accepted | Rejected | RebootRequired | NotSupported."""
        key = self.keys.get(name)
        if key is None:
            return "NotSupported"
        if key.readonly or not self._valid(key, value):
            return "Rejected"
        if key.reboot:
            self._pending[name] = value
            return "RebootRequired"
        self._values[name] = value
        return "Accepted"

    def _valid(self, key: Key, value: str) -> bool:
        if key.kind == "int":
            return value.strip().isdigit() and (int(value) == 0 or int(value) >= key.minimum)
        if key.kind == "bool":
            return value.lower() in ("true", "false")
        if key.kind == "csl":
            items = [v.strip() for v in value.split(",") if v.strip()]
            return all(v in self.measurands for v in items)
        return True

    def apply_reboot(self) -> None:
        self._values.update(self._pending)
        self._pending.clear()

    def int(self, name: str) -> int:
        value = self.value(name)
        return int(value) if value else 0

    def csl(self, name: str) -> tuple[str, ...]:
        value = self.value(name) or ""
        return tuple(v.strip() for v in value.split(",") if v.strip())
