"""The meter_values.sampled document: what the writer encodes, queries decode unchanged."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from evflex.fleet.events import SampledValue
from evflex.store import sampled

text = st.none() | st.text(max_size=12)
values = st.builds(
    SampledValue,
    st.text(min_size=1, max_size=30),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    text,
    text,
    text,
)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@given(st.lists(values, max_size=8))
def test_round_trip_keeps_every_field_and_non_finite_values(vs: list[SampledValue]) -> None:
    document = sampled.encode(vs)
    decoded = sampled.decode(document)
    assert decoded == sampled.decode(orjson.loads(document))  # parsed or text, the same
    assert len(decoded) == len(vs)
    for got, sent in zip(decoded, vs, strict=True):
        assert set(got) == set(sampled.FIELDS)
        assert _same(got["value"], sent.value)
        assert (got["measurand"], got["unit"], got["phase"]) == (
            sent.measurand,
            sent.unit,
            sent.phase,
        )
        assert (got["context"], got["location"]) == (sent.context, sent.location)


def test_common_values_are_compact_arrays() -> None:
    """Trailing nulls are left out: a power + energy pair is two short arrays."""
    document = sampled.encode(
        [
            SampledValue("Power.Active.Import", 7200.0, "W"),
            SampledValue("Current.Import", 16.0, "A", "L1"),
            SampledValue("Voltage", math.inf),
        ]
    )
    assert orjson.loads(document) == [
        ["Power.Active.Import", 7200.0, "W"],
        ["Current.Import", 16.0, "A", "L1"],
        ["Voltage", "Infinity"],
    ]
