"""Station passwords for HTTP Basic auth (OCPP security profile 1).

Either one shared password, or one per station derived from a secret so that
the simulator and whoever registers the stations agree without a list:
HMAC-SHA256(secret, station id), URL-safe base64, 32 characters (OCPP 2.0.1
BasicAuthPassword allows 16–40).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MIN_LENGTH = 16
MAX_LENGTH = 40


def derive_password(secret: str, station_id: str) -> str:
    digest = hmac.new(secret.encode(), station_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def basic_auth(station_id: str, password: str) -> str:
    """The Authorization header value; the username is the station's identity."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValueError(f"station passwords must be {MIN_LENGTH}-{MAX_LENGTH} characters")
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
    return f"Basic {token}"
