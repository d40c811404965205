"""evflex in a process of its own, for tests that kill it: `python -m tests.grid.evflex_process`.

Arguments: DB_URL VALID_FOR_S. Prints one JSON line `{"ocpp": port, "http": port,
"token": "..."}` once it serves on loopback, then runs until it is killed.

`Settings.grid_valid_for_s` keeps a production floor of 60 s; a test that waits for
limits to expire shortens the engine's validity here instead (renewal at a third
of it, as `app.grid_config` does), so the whole engine path is unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from evflex import logs
from evflex.app import App
from evflex.config import Settings
from tests.grid.rig import PROFILE_BASE


async def main(db_url: str, valid_for_s: float) -> None:
    logs.configure("WARNING")
    app = App(
        Settings(
            db=db_url,
            ocpp_port=0,
            http_port=0,
            allow_unknown_stations=True,
            telemetry_provisioning=False,
            grid_tick_s=0.2,
            grid_profile_id_base=PROFILE_BASE,
        )
    )
    app.grid.config = dataclasses.replace(
        app.grid.config, valid_for_s=valid_for_s, renew_before_s=valid_for_s / 3.0
    )
    ports = await app.start()
    token = await app.repository.create_token("admin", "tests")
    print(json.dumps({"ocpp": ports.ocpp, "http": ports.http, "token": token}), flush=True)
    await asyncio.Event().wait()  # until killed: no graceful path is ever taken


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
