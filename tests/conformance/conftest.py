"""Conformance tests run against the same loopback harness as tests/ocpp."""

from __future__ import annotations

import sys
from pathlib import Path

_OCPP_TESTS = str(Path(__file__).resolve().parent.parent / "ocpp")
if _OCPP_TESTS not in sys.path:
    sys.path.insert(0, _OCPP_TESTS)
