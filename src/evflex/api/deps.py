"""What the API needs from the rest of evflex, as small protocols, plus auth dependencies.

The API never imports the gateway or the store: the composition root hands it
objects that satisfy these protocols.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evflex.control.loop import Engine
from evflex.fleet.commands import Command, CommandError, CommandPort, CommandResult
from evflex.fleet.events import Event
from evflex.fleet.state import FleetState
from evflex.grid.push import PushSource
from evflex.telemetry.readiness import ModelReadiness, StationReadiness


class Broadcaster(CommandPort, Protocol):
    async def broadcast(
        self,
        station_ids: list[str],
        command: Command,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
    ) -> dict[str, CommandResult | CommandError]: ...

    def protocol_counts(self) -> dict[str, int]: ...


class Registry(Protocol):
    def known(self, station_id: str) -> bool: ...
    def ids(self) -> list[str]: ...
    async def register(self, station_id: str, password: str | None) -> None: ...
    async def register_many(self, items: list[tuple[str, str | None]]) -> int: ...
    async def remove(self, station_id: str) -> bool: ...


class History(Protocol):
    async def meter_values(
        self,
        station_id: str,
        start: datetime | None,
        end: datetime | None,
        limit: int = 10000,
        evse_id: int | None = None,
    ) -> list[dict[str, Any]]: ...
    async def transactions(self, station_id: str, limit: int = 100) -> list[dict[str, Any]]: ...
    async def command_log(
        self, station_id: str | None, limit: int = 100
    ) -> list[dict[str, Any]]: ...
    async def station_events(self, station_id: str, limit: int = 100) -> list[dict[str, Any]]: ...
    async def verify_token(self, token: str) -> str | None: ...


class ReadinessSource(Protocol):
    def readiness(self, now: datetime | None = None) -> list[StationReadiness]: ...
    def models(self, now: datetime | None = None) -> list[ModelReadiness]: ...
    async def withdraw(self, station_id: str) -> None: ...
    def change_reporting(self, station_id: str) -> float | None: ...


@dataclass
class Services:
    fleet: FleetState
    commands: Broadcaster
    registry: Registry
    history: History
    telemetry: ReadinessSource | None = None
    grid: Engine | None = None
    frequency: PushSource | None = None
    grid_records: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None  # stored rows
    # per-unit rows between two times (the end open while the service runs)
    grid_unit_records: (
        Callable[[datetime, datetime | None], Awaitable[list[dict[str, Any]]]] | None
    ) = None
    publish: Callable[[Event], None] | None = None  # into the domain (the event hub)
    token_cache_s: float = 30.0
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    async def role_for(self, token: str) -> str | None:
        """Token → role, cached briefly so a polling dashboard does not hit the DB per call."""
        cached = self._tokens.get(token)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        role = await self.history.verify_token(token)
        if role is not None:
            self._tokens[token] = (role, now + self.token_cache_s)
        return role


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]
_bearer = HTTPBearer(auto_error=False)


async def require_token(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    role = await svc.role_for(credentials.credentials)
    if role is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return role


RoleDep = Annotated[str, Depends(require_token)]
