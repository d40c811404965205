"""Validation of OCPP payloads against the official JSON schemas, inline.

The schemas are the ones shipped in the `ocpp` package. Each is compiled once per
process with fastjsonschema into plain Python (~3 µs per check instead of ~50 µs
with jsonschema) and run on the event loop: a thread hop per check would cost more
than the check itself (../shared/research/performance-baseline.md).

In front of each fastjsonschema validator sits a *fast acceptor* generated from the
same schema (`_fast_acceptor`): straight-line code that answers "certainly valid"
or "not sure". Only "certainly valid" skips the full validator; everything else —
every invalid payload, and any valid one it cannot vouch for — goes through
fastjsonschema exactly as before, so CallErrors (codes, fields, messages) are
unchanged. It understands a deliberately small subset of JSON Schema and answers
"not sure" for anything outside it. It is ~5x cheaper on the common frames (a
two-value MeterValues: 11 µs → ~2 µs), where validation was up to a third of the
per-message budget. tests/ocpp/test_fast_validation.py checks it against the full
validator on generated and mutated payloads of every schema of both versions.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

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
        self._requests: dict[str, Checker] = {}
        self._responses: dict[str, Checker] = {}

    def validate_request(self, action: str, payload: Any) -> None:
        check = self._requests.get(action)
        if check is None:
            check = self._requests[action] = self._checker(action + self._request_suffix)
        if not check.fast(payload):
            _run(check.full, payload, action)

    def validate_response(self, action: str, payload: Any) -> None:
        check = self._responses.get(action)
        if check is None:
            check = self._responses[action] = self._checker(action + "Response")
        if not check.fast(payload):
            _run(check.full, payload, action)

    def warm(self, actions: frozenset[str] | set[str]) -> None:
        """Compile validators ahead of traffic (about 10 ms each)."""
        for action in actions & self.actions:
            self._requests[action] = self._checker(action + self._request_suffix)
            self._responses[action] = self._checker(action + "Response")

    def _checker(self, name: str) -> Checker:
        return _compile(self._dir / f"{name}.json")


class Checker(NamedTuple):
    fast: Callable[[Any], bool]  # True: certainly valid (and left unchanged); False: not sure
    full: Validator  # fastjsonschema: raises on invalid, fills defaults


@functools.cache
def _compile(path: pathlib.Path) -> Checker:
    schema = json.loads(path.read_text())
    schema.pop("$id", None)
    _strip_multiple_of(schema)
    full = fastjsonschema.compile(schema, formats={"date-time": _is_datetime})
    return Checker(_fast_acceptor(schema), full)


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


# -- the fast acceptor -----------------------------------------------------------------

# Keywords that never affect validity.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "id", "title", "description", "comment", "$comment", "javaType"}
    | {"default", "examples", "definitions"}
)
# What the acceptor understands; a schema node using anything else is "not sure".
_UNDERSTOOD = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "additionalItems"}
    | {"minItems", "maxItems", "enum", "maxLength", "minLength", "format"}
)
_MAX_DEPTH = 24  # $ref nesting (the OCPP schemas are not recursive; this bounds a loop)


def _fast_acceptor(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """Straight-line Python that returns True only for payloads `schema` accepts.

    The rules mirror fastjsonschema's (draft 4 and 6 agree on all of them):

    * types are checked with `type(x) is ...`, stricter than fastjsonschema's
      `isinstance` (no bool for integer/number, list only for array: what orjson
      produces);
    * an object checks `required`, each listed property, and with
      `additionalProperties: false` that it has no other key (counting the
      properties present); `additionalProperties` other than true/false → not sure;
    * `$ref` (local `#/definitions/...`) replaces its siblings, as in fastjsonschema;
    * string `enum`, `maxLength`/`minLength` (code points, like `len`), and
      `format: date-time` with the same function the full validator uses;
    * keywords that only apply to another type (1.6 puts `additionalProperties`
      on strings) are ignored, as fastjsonschema ignores them;
    * fastjsonschema *fills in* a missing property whose own definition has a
      `default`; the acceptor answers "not sure" then, so the full validator runs
      and the handler sees the same payload either way.
    Anything else — `minimum`, `pattern`, combinators, non-string enums, type
    lists, other formats, boolean schemas — makes that node "not sure".
    """
    gen = _FastGen(schema)
    gen.node(schema, "data", 1, 0)
    namespace: dict[str, Any] = {"_M": _MISSING, "_dt": _is_datetime, **gen.consts}
    # every name the body uses is bound as a default: a local lookup, not a global
    names = ["_M", "_dt", *gen.consts, "type", "str", "int", "float", "bool", "dict", "list", "len"]
    signature = "def accept(data, *, " + ", ".join(f"{n}={n}" for n in names) + "):"
    source = "\n".join([signature, *gen.lines, "    return True"])
    exec(compile(source, "<fast acceptor>", "exec"), namespace)
    accept: Callable[[Any], bool] = namespace["accept"]
    accept.__doc__ = source  # for inspection and tests
    return accept


_MISSING = object()


class _FastGen:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self._n = 0

    def _var(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def _const(self, value: Any) -> str:
        name = f"c{len(self.consts)}"
        self.consts[name] = value
        return name

    def _emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/definitions/"):
            return None
        return self.root.get("definitions", {}).get(ref[len("#/definitions/") :])

    def node(self, schema: Any, v: str, ind: int, depth: int) -> None:
        """Lines that `return False` unless `v` certainly satisfies `schema`."""
        if isinstance(schema, dict) and "$ref" in schema:
            target = self._resolve(schema["$ref"])
            if target is None or depth >= _MAX_DEPTH:
                self._emit(ind, "return False")
                return
            self.node(target, v, ind, depth + 1)
            return
        if not isinstance(schema, dict) or set(schema) - _ANNOTATIONS - _UNDERSTOOD:
            self._emit(ind, "return False")
            return
        kind = schema.get("type")
        if "enum" in schema and not (
            kind == "string" and all(type(e) is str for e in schema["enum"])
        ):
            self._emit(ind, "return False")
            return
        if kind == "object":
            self._object(schema, v, ind, depth)
        elif kind == "array":
            self._array(schema, v, ind, depth)
        elif kind == "string":
            self._string(schema, v, ind)
        elif kind == "integer":
            self._emit(ind, f"if type({v}) is not int: return False")
        elif kind == "number":
            self._emit(ind, f"if type({v}) is not int and type({v}) is not float: return False")
        elif kind == "boolean":
            self._emit(ind, f"if type({v}) is not bool: return False")
        else:
            self._emit(ind, "return False")

    def _object(self, schema: dict[str, Any], v: str, ind: int, depth: int) -> None:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties", True)
        if (
            not isinstance(props, dict)
            or not isinstance(required, list)
            or not all(isinstance(r, str) for r in required)
            or extra not in (True, False)
            or type(extra) is not bool
        ):
            self._emit(ind, "return False")
            return
        self._emit(ind, f"if type({v}) is not dict: return False")
        for name in required:
            if name not in props:
                self._emit(ind, f"if {name!r} not in {v}: return False")
        closed = extra is False
        counter = self._var() if closed else ""
        present = len({name for name in required if name in props})
        if closed:
            self._emit(ind, f"{counter} = {present}")
        for name, sub in props.items():
            x = self._var()
            self._emit(ind, f"{x} = {v}.get({name!r}, _M)")
            if name in required:
                self._emit(ind, f"if {x} is _M: return False")
                self.node(sub, x, ind, depth + 1)
                continue
            self._emit(ind, f"if {x} is not _M:")
            if closed:
                self._emit(ind + 1, f"{counter} += 1")
            self.node(sub, x, ind + 1, depth + 1)
            if isinstance(sub, dict) and "default" in sub:
                self._emit(ind, "else: return False  # the full validator fills the default")
        if closed:
            self._emit(ind, f"if len({v}) != {counter}: return False")

    def _array(self, schema: dict[str, Any], v: str, ind: int, depth: int) -> None:
        self._emit(ind, f"if type({v}) is not list: return False")
        for key, op in (("minItems", "<"), ("maxItems", ">")):
            if key in schema:
                bound = schema[key]
                if type(bound) is not int:
                    self._emit(ind, "return False")
                    return
                self._emit(ind, f"if len({v}) {op} {bound}: return False")
        if "items" in schema:
            items = schema["items"]
            if not isinstance(items, dict):  # tuple form or boolean: not understood
                self._emit(ind, "return False")
                return
            x = self._var()
            self._emit(ind, f"for {x} in {v}:")
            self.node(items, x, ind + 1, depth + 1)
        # additionalItems only applies to the tuple form of items: ignored here

    def _string(self, schema: dict[str, Any], v: str, ind: int) -> None:
        self._emit(ind, f"if type({v}) is not str: return False")
        for key, op in (("minLength", "<"), ("maxLength", ">")):
            if key in schema:
                bound = schema[key]
                if type(bound) is not int:
                    self._emit(ind, "return False")
                    return
                self._emit(ind, f"if len({v}) {op} {bound}: return False")
        if "enum" in schema:
            self._emit(ind, f"if {v} not in {self._const(frozenset(schema['enum']))}: return False")
        if "format" in schema:
            if schema["format"] != "date-time":
                self._emit(ind, "return False")
                return
            self._emit(ind, f"if not _dt({v}): return False")


def _run(validator: Validator, payload: Any, action: str) -> None:
    try:
        validator(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _RULE_TO_CODE.get(exc.rule or "", PROPERTY_CONSTRAINT)
        raise OcppError(code, f"{action}: {exc.message}", {"field": exc.name}) from None


V16 = SchemaSet("v16", "")
V201 = SchemaSet("v201", "Request")
