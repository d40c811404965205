"""OCPP-J framing: [2, id, action, payload] / [3, id, payload] / [4, id, code, text, details].

Frames are built as bytes directly: the payload is serialised once (orjson, or
already bytes for the pre-formatted hot-path messages) and spliced in.
"""

from __future__ import annotations

from typing import Any

import orjson

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# OCPP-J error codes (1.6 "FormationViolation" is 2.0.1 "FormatViolation")
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
PROPERTY_CONSTRAINT = "PropertyConstraintViolation"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"


class CallError(Exception):
    """Raised by a handler: answered as a CALLERROR."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def dumps(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else orjson.dumps(payload)


def call(message_id: str, action: str, payload: dict[str, Any] | bytes) -> bytes:
    return b'[2,"%s","%s",%s]' % (message_id.encode(), action.encode(), dumps(payload))


def result(message_id: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALLRESULT, message_id, payload])


def error(message_id: str, code: str, description: str) -> bytes:
    return orjson.dumps([CALLERROR, message_id, code, description[:255], {}])
