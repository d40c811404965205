"""Remote commands: one endpoint per command, for a station or for the whole fleet.

No `from __future__ import annotations` here: the endpoints are generated in a loop
and FastAPI must see each body class as a real annotation.
"""

import time
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field, create_model

from evflex.api.commands import BODIES
from evflex.api.deps import RoleDep, ServicesDep
from evflex.api.schemas import BroadcastOut, CommandOut
from evflex.fleet.commands import (
    Command,
    CommandError,
    CommandNotSupported,
    CommandRejected,
    CommandTimeout,
    InvalidCommand,
    StationNotConnected,
)

router = APIRouter(prefix="/api/v1", tags=["commands"])
TimeoutQuery = Annotated[float | None, Query(gt=0, le=300, description="response timeout, s")]

_ERROR_STATUS = {
    StationNotConnected: status.HTTP_409_CONFLICT,
    CommandTimeout: status.HTTP_504_GATEWAY_TIMEOUT,
    CommandRejected: status.HTTP_502_BAD_GATEWAY,
    InvalidCommand: status.HTTP_422_UNPROCESSABLE_CONTENT,
    CommandNotSupported: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


def _http_error(exc: CommandError) -> HTTPException:
    code = _ERROR_STATUS.get(type(exc), status.HTTP_502_BAD_GATEWAY)
    return HTTPException(code, {"error": exc.reason, "detail": str(exc)})


def _station_endpoint(name: str, body_cls: type[BaseModel]) -> None:
    async def endpoint(
        station_id: str,
        body: body_cls,  # type: ignore[valid-type]
        svc: ServicesDep,
        _: RoleDep,
        timeout_s: TimeoutQuery = None,
    ) -> CommandOut:
        if station_id not in svc.fleet.stations:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown station {station_id}")
        command: Command = body.to_command()  # type: ignore[attr-defined]
        try:
            result = await svc.commands.send(station_id, command, timeout_s=timeout_s)
        except CommandError as exc:
            raise _http_error(exc) from None
        return CommandOut(
            status=result.status, response=result.response, duration_ms=result.duration_ms
        )

    endpoint.__name__ = f"command_{name}"
    router.post(
        f"/stations/{{station_id}}/commands/{name}",
        response_model=CommandOut,
        summary=f"{name} on one station",
    )(endpoint)


def _fleet_endpoint(name: str, body_cls: type[BaseModel]) -> None:
    # the command's own fields plus `stations`
    fleet_cls = create_model(
        f"Fleet{body_cls.__name__}",
        __base__=body_cls,
        stations=(
            list[str] | None,
            Field(None, description="station ids; omitted = every connected station"),
        ),
    )

    async def endpoint(
        body: fleet_cls,
        svc: ServicesDep,
        _: RoleDep,
        timeout_s: TimeoutQuery = None,
    ) -> BroadcastOut:
        command: Command = body.to_command()  # type: ignore[attr-defined]
        chosen: list[str] | None = body.stations  # type: ignore[attr-defined]
        ids = (
            chosen
            if chosen is not None
            else [s for s, st in svc.fleet.stations.items() if st.connected]
        )
        started = time.perf_counter()
        results = await svc.commands.broadcast(ids, command, timeout_s=timeout_s)
        duration_ms = (time.perf_counter() - started) * 1000.0
        by_status: Counter[str] = Counter()
        errors: dict[str, str] = {}
        for station_id, result in results.items():
            if isinstance(result, CommandError):
                by_status[result.reason] += 1
                if len(errors) < 100:
                    errors[station_id] = str(result)
            else:
                by_status[result.status or "ok"] += 1
        return BroadcastOut(
            stations=len(ids), by_status=dict(by_status), duration_ms=duration_ms, errors=errors
        )

    endpoint.__name__ = f"fleet_command_{name}"
    router.post(
        f"/fleet/commands/{name}",
        response_model=BroadcastOut,
        summary=f"{name} on many stations at once",
    )(endpoint)


for _name, _cls in BODIES.items():
    _station_endpoint(_name, _cls)
    _fleet_endpoint(_name, _cls)


@router.post("/stations/{station_id}/commands/{command}", include_in_schema=False)
async def unknown_command(station_id: str, command: str, _: RoleDep) -> None:
    raise HTTPException(
        status.HTTP_404_NOT_FOUND, f"unknown command {command!r}; known: {', '.join(BODIES)}"
    )
