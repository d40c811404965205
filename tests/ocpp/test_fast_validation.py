"""The fast acceptor in front of each schema validator (evflex.ocpp.validation).

It may only ever say "certainly valid" for payloads the full fastjsonschema
validator accepts *without changing them* (fastjsonschema fills in defaults).
Checked on generated payloads of every OCPP 1.6 and 2.0.1 schema, valid ones and
random mutations of them, plus hand-picked edge cases.
"""

from __future__ import annotations

import copy
import json
import pathlib
import random
from typing import Any

import fastjsonschema
import pytest

from evflex.ocpp.validation import V16, V201, Checker, _compile

_SCHEMA_FILES = sorted(V16._dir.glob("*.json")) + sorted(V201._dir.glob("*.json"))
_TIMESTAMPS = [
    "2026-11-22T10:00:00.000Z",
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00+01:00",
    "2026-11-22T10:00:00",  # no offset: accepted (taken as UTC)
    "2026-11-22 10:00:00",
    "2026-02-30T10:00:00Z",
    "yesterday",
    "",
]
_ODD_VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.5, 2**40, "", "x", "Accepted", [], {}]


def _resolve(root: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _instance(root: dict[str, Any], node: Any, rng: random.Random, depth: int = 0) -> Any:
    """A payload that is valid most of the time (strings may exceed maxLength etc.)."""
    node = _resolve(root, node)
    if not isinstance(node, dict) or depth > 8:
        return None
    kind = node.get("type")
    if "enum" in node:
        return rng.choice(node["enum"]) if rng.random() > 0.03 else "NotInTheEnum"
    if kind == "object":
        out: dict[str, Any] = {}
        required = set(node.get("required", []))
        for name, sub in node.get("properties", {}).items():
            if name in required or rng.random() < 0.5:
                out[name] = _instance(root, sub, rng, depth + 1)
        if rng.random() < 0.05:
            out["unexpectedKey"] = 1
        return out
    if kind == "array":
        low = node.get("minItems", 0)
        high = min(node.get("maxItems", low + 3), low + 3)
        items = node.get("items", {})
        return [_instance(root, items, rng, depth + 1) for _ in range(rng.randint(low, high))]
    if kind == "string":
        if node.get("format") == "date-time":
            return rng.choice(_TIMESTAMPS)
        limit = node.get("maxLength", 30)
        size = rng.choice([0, 1, limit, limit + 1, rng.randint(0, limit)])
        return "".join(rng.choice("abcé€😀") for _ in range(size))
    if kind == "integer":
        return rng.choice([0, 1, -5, 42, 2**31])
    if kind == "number":
        return rng.choice([0, 1.5, -2.25, 7400, 1e9])
    if kind == "boolean":
        return rng.choice([True, False])
    return rng.choice(_ODD_VALUES)


def _mutate(payload: Any, rng: random.Random) -> Any:
    """One random change somewhere in the payload (type, key set, length, value)."""
    if isinstance(payload, dict) and payload and rng.random() < 0.7:
        key = rng.choice(list(payload))
        choice = rng.random()
        if choice < 0.25:
            del payload[key]
        elif choice < 0.35:
            payload["extra" + key] = payload[key]
        else:
            payload[key] = _mutate(payload[key], rng)
        return payload
    if isinstance(payload, list) and payload and rng.random() < 0.7:
        i = rng.randrange(len(payload))
        choice = rng.random()
        if choice < 0.2:
            payload.pop(i)
        elif choice < 0.3:
            payload.append(copy.deepcopy(payload[i]))
        else:
            payload[i] = _mutate(payload[i], rng)
        return payload
    return rng.choice([*_ODD_VALUES, *_TIMESTAMPS, "x" * 2600, 1.0, [payload], {"k": payload}])


def _full_accepts_unchanged(check: Checker, payload: Any) -> bool:
    probe = copy.deepcopy(payload)
    try:
        check.full(probe)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return bool(probe == payload)


@pytest.mark.parametrize("path", _SCHEMA_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_fast_accepts_only_what_the_full_validator_accepts(path: pathlib.Path) -> None:
    root = json.loads(path.read_text())
    check = _compile(path)
    rng = random.Random(path.name)
    for _ in range(60):
        valid = _instance(root, root, rng)
        for candidate in (valid, *(_mutate(copy.deepcopy(valid), rng) for _ in range(4))):
            if check.fast(candidate):
                assert _full_accepts_unchanged(check, candidate), (
                    f"{path.name}: fast acceptor accepted {candidate!r}"
                )


def _mv16(**sampled: Any) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [
            {
                "timestamp": "2026-11-22T10:00:00.000Z",
                "sampledValue": [
                    {"value": "7400", "measurand": "Power.Active.Import", "unit": "W", **sampled},
                    {"value": "1000", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                ],
            }
        ],
    }


def _mv201(**unit: Any) -> dict[str, Any]:
    return {
        "evseId": 1,
        "meterValue": [
            {
                "timestamp": "2026-11-22T10:00:00.000Z",
                "sampledValue": [{"value": 7400, "measurand": "Power.Active.Import", **unit}],
            }
        ],
    }


def _fast(schemas: Any, name: str) -> Checker:
    return _compile(schemas._dir / f"{name}.json")


def test_common_frames_take_the_fast_path() -> None:
    assert _fast(V16, "MeterValues").fast(_mv16())
    assert _fast(V16, "MeterValuesResponse").fast({})
    assert _fast(V201, "MeterValuesRequest").fast(_mv201())
    assert _fast(V16, "SetChargingProfileResponse").fast({"status": "Accepted"})
    assert _fast(V201, "SetChargingProfileResponse").fast({"status": "Accepted"})


@pytest.mark.parametrize(
    "payload",
    [
        _mv16(phase="L9"),  # enum
        _mv16(value=7400),  # 1.6 values are strings
        _mv16(extra="x"),  # additionalProperties: false
        {**_mv16(), "connectorId": True},  # bool is not an integer
        {**_mv16(), "connectorId": 1.0},
        {**_mv16(), "connectorId": None},
        {**_mv16(), "meterValue": []},  # minItems
        {"connectorId": 1},  # required
        {**_mv16(), "meterValue": [{"timestamp": "yesterday", "sampledValue": [{"value": "1"}]}]},
        {**_mv16(), "meterValue": ({"timestamp": "2026-11-22T10:00:00Z", "sampledValue": []},)},
        [],
        None,
    ],
)
def test_invalid_or_unusual_frames_go_to_the_full_validator(payload: Any) -> None:
    assert not _fast(V16, "MeterValues").fast(payload)


def test_a_default_the_full_validator_would_fill_is_left_to_it() -> None:
    # UnitOfMeasureType.unit and .multiplier have defaults: fastjsonschema adds them
    payload = _mv201(unitOfMeasure={})
    check = _fast(V201, "MeterValuesRequest")
    assert not check.fast(payload)
    V201.validate_request("MeterValues", payload)
    assert payload["meterValue"][0]["sampledValue"][0]["unitOfMeasure"] == {
        "unit": "Wh",
        "multiplier": 0,
    }
    complete = _mv201(unitOfMeasure={"unit": "W", "multiplier": 0})
    assert check.fast(complete)
