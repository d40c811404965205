"""Station registry: who may connect, with which password, and id-token decisions.

It implements the gateway's `Directory` from an in-memory cache (the handshake is
synchronous and on the hot path of a reconnect storm) and persists changes through
the repository.
"""

from __future__ import annotations

import asyncio
import logging

from evflex.fleet.credentials import check_password_policy, hash_password, verify_password
from evflex.fleet.errors import DuplicateStation
from evflex.fleet.state import FleetState
from evflex.store.repository import Repository, StationExists

log = logging.getLogger(__name__)


class StationRegistry:
    def __init__(self, repository: Repository, fleet: FleetState) -> None:
        self._repo = repository
        self._fleet = fleet
        self._hashes: dict[str, str] = {}  # station id → password hash ("" = no password)
        self._pending: set[asyncio.Task[None]] = set()

    async def load(self) -> int:
        for record in await self._repo.load_stations():
            self._hashes[record.station_id] = record.password_hash or ""
        return len(self._hashes)

    # -- management (REST / CLI) ------------------------------------------------
    def known(self, station_id: str) -> bool:
        return station_id in self._hashes

    def ids(self) -> list[str]:
        return list(self._hashes)

    async def register(self, station_id: str, password: str | None) -> None:
        """Add a station. Raises DuplicateStation, WeakPasswordError."""
        if station_id in self._hashes:
            raise DuplicateStation(station_id)
        digest = _hash(password)
        try:
            await self._repo.add_station(station_id, digest)
        except StationExists:
            raise DuplicateStation(station_id) from None
        self._hashes[station_id] = digest or ""
        self._fleet.station(station_id)

    async def register_many(self, items: list[tuple[str, str | None]]) -> int:
        duplicates = [sid for sid, _ in items if sid in self._hashes]
        if duplicates:
            raise DuplicateStation(", ".join(duplicates[:10]))
        hashed = [(sid, _hash(pw)) for sid, pw in items]
        try:
            count = await self._repo.add_stations(hashed)
        except StationExists as exc:
            raise DuplicateStation(str(exc)) from None
        for sid, digest in hashed:
            self._hashes[sid] = digest or ""
            self._fleet.station(sid)
        return count

    async def remove(self, station_id: str) -> bool:
        removed = await self._repo.delete_station(station_id)
        self._hashes.pop(station_id, None)
        self._fleet.stations.pop(station_id, None)
        return removed

    # -- gateway Directory ------------------------------------------------------------
    def credential(self, station_id: str) -> str | None:
        return self._hashes.get(station_id)

    def verify(self, station_id: str, password: str) -> bool:
        stored = self._hashes.get(station_id)
        return bool(stored) and verify_password(password, stored or "")

    def register_unknown(self, station_id: str, password: str | None) -> None:
        digest = hash_password(password) if password else ""
        self._hashes[station_id] = digest
        task = asyncio.get_running_loop().create_task(self._persist_unknown(station_id, digest))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _persist_unknown(self, station_id: str, digest: str) -> None:
        try:
            await self._repo.add_station(station_id, digest or None)
        except StationExists:
            pass
        except Exception:
            log.exception("could not persist auto-registered station %s", station_id)

    def has_booted(self, station_id: str) -> bool:
        station = self._fleet.stations.get(station_id)
        return station is not None and station.booted_at is not None

    def authorize(self, station_id: str, id_token: str) -> str:
        # evflex is a grid-services CSMS, not a billing back office: every id token is
        # accepted. An allow-list would plug in here.
        return "Accepted"

    def allocate_transaction_id(self) -> int:
        return self._fleet.allocate_transaction_id()

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _hash(password: str | None) -> str | None:
    if password is None:
        return None
    check_password_policy(password)
    return hash_password(password)
