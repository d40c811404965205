"""Validation of OCPP payloads against the official JSON schemas, inline.

The schemas are the ones shipped in the `ocpp` package. Each is compiled once per
process with fastjsonschema into plain Python (~3 µs per check instead of ~50 µs
with jsonschema) and run on the event loop: a thread hop per check would cost more
than the check itself (../shared/research/performance-baseline.md).
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import fastjsonschema

import ocpp as _ocpp_lib
from evflex.ocpp.errors import (
    FORMAT_VIOLATION,
    OCCURRENCE_CONSTRAINT,
    PROPERTY_CONSTRAINT,
    TYPE_CONSTRAINT,
    OcppError,
)

Validator = Callable[[Any], Any]
_SCHEMA_ROOT = pathlib.Path(_ocpp_lib.__file__).parent
_RULE_TO_CODE = {
    "type": TYPE_CONSTRAINT,
    "maxLength": TYPE_CONSTRAINT,  # CiStringNType: the length is part of the type
    "required": OCCURRENCE_CONSTRAINT,
    "minItems": OCCURRENCE_CONSTRAINT,
    "maxItems": OCCURRENCE_CONSTRAINT,
    "additionalProperties": FORMAT_VIOLATION,
}


class SchemaSet:
    """Request and response validators for one OCPP version, compiled on first use."""

    def __init__(self, version_dir: str, request_suffix: str) -> None:
        self._dir = _SCHEMA_ROOT / version_dir / "schemas"
        self._request_suffix = request_suffix
        self.actions: frozenset[str] = frozenset(
            p.stem.removesuffix(request_suffix)
            for p in self._dir.glob("*.json")
            if not p.stem.endswith("Response")
        )
        # plain dicts keyed by action: the lookup happens twice per frame
        self._requests: dict[str, Validator] = {}
        self._responses: dict[str, Validator] = {}

    def validate_request(self, action: str, payload: Any) -> None:
        validator = self._requests.get(action)
        if validator is None:
            validator = self._requests[action] = self._validator(action + self._request_suffix)
        _run(validator, payload, action)

    def validate_response(self, action: str, payload: Any) -> None:
        validator = self._responses.get(action)
        if validator is None:
            validator = self._responses[action] = self._validator(action + "Response")
        _run(validator, payload, action)

    def warm(self, actions: frozenset[str] | set[str]) -> None:
        """Compile validators ahead of traffic (about 10 ms each)."""
        for action in actions & self.actions:
            self._requests[action] = self._validator(action + self._request_suffix)
            self._responses[action] = self._validator(action + "Response")

    def _validator(self, name: str) -> Validator:
        return _compile(self._dir / f"{name}.json")


@functools.cache
def _compile(path: pathlib.Path) -> Validator:
    schema = json.loads(path.read_text())
    schema.pop("$id", None)
    _strip_multiple_of(schema)
    return fastjsonschema.compile(schema, formats={"date-time": _is_datetime})


def _is_datetime(value: str) -> bool:
    """RFC 3339 date-time, but without an offset taken as UTC (see timefmt.parse_ts):
    some 1.6 firmwares omit it, and refusing their every frame helps no one."""
    if "T" not in value and "t" not in value:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _strip_multiple_of(node: Any) -> None:
    """Drop `multipleOf: 0.1` (1.6 charging schedules).

    Binary floats make the check wrong: 21.4 / 0.1 == 213.99999999999997, so a
    correct payload fails (the `ocpp` library re-parses with Decimal to avoid this,
    which is too slow for the hot path). We round the limits we send to 0.1 instead.
    """
    if isinstance(node, dict):
        node.pop("multipleOf", None)
        for value in node.values():
            _strip_multiple_of(value)
    elif isinstance(node, list):
        for value in node:
            _strip_multiple_of(value)


def _run(validator: Validator, payload: Any, action: str) -> None:
    try:
        validator(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _RULE_TO_CODE.get(exc.rule or "", PROPERTY_CONSTRAINT)
        raise OcppError(code, f"{action}: {exc.message}", {"field": exc.name}) from None


V16 = SchemaSet("v16", "")
V201 = SchemaSet("v201", "Request")
