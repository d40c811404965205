"""OCPP-J CallError codes and the exception that carries one.

The two versions spell some codes differently: 1.6 says "FormationViolation" and
"OccurenceConstraintViolation" (sic); 2.0.1 says "FormatViolation" and
"OccurrenceConstraintViolation". We raise with the 2.0.1 spelling and translate
for 1.6 sessions when the frame is written.
"""

from __future__ import annotations

from typing import Any

FORMAT_VIOLATION = "FormatViolation"
PROTOCOL_ERROR = "ProtocolError"
TYPE_CONSTRAINT = "TypeConstraintViolation"
PROPERTY_CONSTRAINT = "PropertyConstraintViolation"
OCCURRENCE_CONSTRAINT = "OccurrenceConstraintViolation"
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
SECURITY_ERROR = "SecurityError"
GENERIC_ERROR = "GenericError"
MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"  # 2.0.1 only

_V16_SPELLING = {
    FORMAT_VIOLATION: "FormationViolation",
    OCCURRENCE_CONSTRAINT: "OccurenceConstraintViolation",
    # 1.6 has no MessageTypeNotSupported; the nearest code is NotSupported
    MESSAGE_TYPE_NOT_SUPPORTED: "NotSupported",
}


class OcppError(Exception):
    """Raised while handling a frame; becomes a CALLERROR to the station."""

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description[:255]
        self.details = details or {}

    def code_for(self, v16: bool) -> str:
        return _V16_SPELLING.get(self.code, self.code) if v16 else self.code
