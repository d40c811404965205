"""Gateway handshake helpers: subprotocol negotiation and Basic auth parsing."""

from __future__ import annotations

import base64

import pytest

from evflex.fleet.model import Protocol
from evflex.ocpp.gateway import _basic_password, _negotiate


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ocpp1.6", Protocol.OCPP16),
        ("ocpp2.0.1", Protocol.OCPP201),
        ("ocpp1.6, ocpp2.0.1", Protocol.OCPP201),
        ("ocpp2.0.1,ocpp1.6", Protocol.OCPP201),
        ("  ocpp1.6 ,  ocpp2.1 ", Protocol.OCPP16),
        ("ocpp2.0, ocpp1.5, ocpp2.1", None),
        ("", None),
        (",,", None),
        ("ocpp1.6j", None),
    ],
)
def test_negotiate(header: str, expected: Protocol | None) -> None:
    assert _negotiate(header) is expected


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("CP1:secret"), "secret"),
        (basic("CP1:pa:ss:word"), "pa:ss:word"),  # only the first ':' separates
        (basic("CP1:"), ""),
        ("basic " + base64.b64encode(b"CP1:x").decode(), "x"),  # scheme is case-insensitive
        ("BASIC  " + base64.b64encode(b"CP1:x").decode() + "  ", "x"),
        (basic("CP2:secret"), None),  # username must be the station identity
        (basic("cp1:secret"), None),
        (basic("CP1"), None),  # no separator
        ("Basic !!!notbase64", None),
        ("Basic " + base64.b64encode(b"CP1:\xff\xfe").decode(), None),  # not UTF-8
        ("Bearer abc", None),
        ("Basic", None),
        ("", None),
        (None, None),
    ],
)
def test_basic_password(header: str | None, expected: str | None) -> None:
    assert _basic_password(header, "CP1") == expected
