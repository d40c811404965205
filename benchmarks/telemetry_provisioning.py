"""Telemetry provisioning of a whole fleet that connects at once, and what it does to
telemetry handling meanwhile (issue #4: < 30 s for 5,000 stations, p99 ack < 20 ms).

Three processes on loopback:
  * the evflex server (App, SQLite), which reports when every station is provisioned;
  * a probe: 4 OCPP 1.6 stations sending MeterValues back to back, timing each
    CALL → CALLRESULT round trip (the "ack latency" a station sees);
  * this process: the simulated fleet (`evflex.sim`, default mix), started at once.

Run: `.venv/bin/python benchmarks/telemetry_provisioning.py --stations 5000`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PASSWORD = "bench-telemetry-password-1"
PROBES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- server process ---------------------------------------------------------------------
def _pin(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def server_main(
    db: str,
    ocpp: int,
    http: int,
    ids: list[str],
    q: Any,
    stop: Any,
    settings: dict[str, Any],
    cpus: set[int] | None = None,
) -> None:
    import uvloop

    _pin(cpus)

    uvloop.run(_server(db, ocpp, http, ids, q, stop, settings))


async def _server(
    db: str, ocpp: int, http: int, ids: list[str], q: Any, stop: Any, settings: dict[str, Any]
) -> None:
    from evflex.app import App
    from evflex.config import Settings

    app = App(Settings(db=db, ocpp_port=ocpp, http_port=http, log_level="WARNING", **settings))
    await app.start()
    await app.registry.register_many([(sid, PASSWORD) for sid in ids])
    q.put(("ready", time.time()))
    fleet_ids = {sid for sid in ids if sid.startswith("SIM-")}
    results = app.telemetry.provisioner.results
    provisioning = settings.get("telemetry_provisioning", True)

    def finished(sid: str) -> bool:  # baseline without provisioning: "done" = booted
        if provisioning:
            return sid in results
        st = app.fleet.stations.get(sid)
        return st is not None and st.booted_at is not None

    first = done = None
    while not stop.is_set():
        await asyncio.sleep(0.05)  # benchmark bookkeeping, not synchronisation
        n = sum(1 for sid in fleet_ids if finished(sid))
        if n and first is None:
            first = time.time()
        if n == len(fleet_ids) and done is None:
            done = time.time()
            r = [app.telemetry.provisioner.results.get(sid) for sid in fleet_ids]
            r = [x for x in r if x is not None]
            verdicts: dict[str, int] = {}
            for x in app.telemetry.readiness():
                if x.station_id in fleet_ids:
                    verdicts[x.verdict] = verdicts.get(x.verdict, 0) + 1
            stats = app.gateway.stats
            q.put(
                (
                    "done",
                    {
                        "first_result": first,
                        "all_done": done,
                        "errors": sum(1 for x in r if x.error),
                        "writes": sum(x.writes for x in r),
                        "runs": app.telemetry.provisioner.runs,
                        "verdicts": verdicts,
                        "latency_counts": list(stats.latency_counts),
                    },
                )
            )
    await app.stop()


# -- probe process ------------------------------------------------------------------------
def probe_main(url: str, q: Any, stop: Any, cpus: set[int] | None = None) -> None:
    _pin(cpus)
    asyncio.run(_probe(url, q, stop))


async def _probe(url: str, q: Any, stop: Any) -> None:
    import websockets

    samples: list[tuple[float, float]] = []

    async def one(i: int) -> None:
        sid = f"PROBE-{i}"
        auth = base64.b64encode(f"{sid}:{PASSWORD}".encode()).decode()
        async with websockets.connect(
            f"{url}/{sid}",
            subprotocols=[websockets.Subprotocol("ocpp1.6")],
            additional_headers={"Authorization": f"Basic {auth}"},
        ) as ws:
            n = 0

            async def call(action: str, payload: dict[str, Any]) -> None:
                nonlocal n
                n += 1
                mid = f"p{n}"
                await ws.send(json.dumps([2, mid, action, payload]))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg[0] == 2:  # provisioning asks us something: not implemented
                        await ws.send(json.dumps([4, msg[1], "NotImplemented", "", {}]))
                    elif msg[1] == mid:
                        return

            await call("BootNotification", {"chargePointVendor": "Probe", "chargePointModel": "P"})
            q.put(("probe_ready", i))
            while not stop.is_set():
                ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                payload = {
                    "connectorId": 1,
                    "meterValue": [
                        {
                            "timestamp": ts,
                            "sampledValue": [
                                {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"}
                            ],
                        }
                    ],
                }
                t = time.perf_counter()
                await call("MeterValues", payload)
                samples.append((time.time(), (time.perf_counter() - t) * 1000.0))
                await asyncio.sleep(0.02)

    await asyncio.gather(*(one(i) for i in range(PROBES)))
    q.put(("probe", samples))


# -- this process: the fleet -----------------------------------------------------------------
async def _fleet(url: str, n: int, q: Any, timeout_s: float, concurrency: int) -> dict[str, Any]:
    from evflex.sim import Fleet, FleetConfig

    config = FleetConfig(csms=url, stations=n, password=PASSWORD, connect_concurrency=concurrency)
    t0 = time.time()
    async with Fleet(config) as fleet:
        booted = await fleet.wait_booted(timeout_s=timeout_s)
        t_booted = time.time()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                kind, value = await asyncio.to_thread(q.get, True, 1.0)
            except Exception:
                continue
            if kind == "done":
                return {"t0": t0, "booted": booted, "t_booted": t_booted, **value}
    raise SystemExit("provisioning did not complete in time")


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--concurrency", type=int, default=200, help="telemetry_concurrency")
    ap.add_argument("--rate", type=float, default=400.0, help="telemetry_rate_per_s")
    ap.add_argument("--no-provisioning", action="store_true", help="baseline: storm only")
    ap.add_argument(
        "--connect-concurrency", type=int, default=500, help="fleet handshakes in flight"
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="server alone on CPU 0; probe and fleet on CPU 1, the fleet at nice 10 so the "
        "probe is scheduled when its answer arrives (measure the server, not the loader)",
    )
    args = ap.parse_args()
    server_cpus, load_cpus = ({0}, {1}) if args.pin else (None, None)
    from evflex.sim import FleetConfig, station_ids

    ids = station_ids(FleetConfig(stations=args.stations)) + [f"PROBE-{i}" for i in range(PROBES)]
    ocpp, http = _free_port(), _free_port()
    url = f"ws://127.0.0.1:{ocpp}/ocpp"
    settings = {
        "telemetry_provisioning": not args.no_provisioning,
        "telemetry_concurrency": args.concurrency,
        "telemetry_rate_per_s": args.rate,
    }
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        server = ctx.Process(
            target=server_main, args=(db, ocpp, http, ids, q, stop, settings, server_cpus)
        )
        server.start()
        assert q.get(timeout=60)[0] == "ready"
        probe = ctx.Process(target=probe_main, args=(url, q, stop, load_cpus))
        probe.start()
        for _ in range(PROBES):
            assert q.get(timeout=30)[0] == "probe_ready"
        time.sleep(2.0)  # baseline: probe alone
        import uvloop

        if args.pin:
            _pin(load_cpus)
            os.nice(10)
        result = uvloop.run(_fleet(url, args.stations, q, args.timeout, args.connect_concurrency))
        time.sleep(1.0)
        stop.set()
        kind, samples = q.get(timeout=30)
        assert kind == "probe"
        probe.join(10)
        server.join(30)
    t0, done = result["t0"], result["all_done"]
    before = [ms for t, ms in samples if t < t0]
    during = [ms for t, ms in samples if t0 <= t <= done]
    storm = [ms for t, ms in samples if t0 <= t <= result["t_booted"]]
    after_storm = [ms for t, ms in samples if result["t_booted"] < t <= done]
    report = {
        "stations": args.stations,
        "pinned": args.pin,
        "connect_concurrency": args.connect_concurrency,
        "all_booted_s": round(result["t_booted"] - t0, 2),
        "provisioned_all_s": round(done - t0, 2),
        "provisioning_errors": result["errors"],
        "writes": result["writes"],
        "runs": result["runs"],
        "verdicts": result["verdicts"],
        "probe_acks_during": len(during),
        "ack_ms_p50_during": round(statistics.median(during), 2) if during else None,
        "ack_ms_p99_during": round(_pct(during, 0.99), 2),
        "ack_ms_max_during": round(max(during), 2) if during else None,
        "ack_ms_p99_before": round(_pct(before, 0.99), 2),
        "ack_ms_p99_connect_storm": round(_pct(storm, 0.99), 2),
        "ack_ms_p99_after_storm": round(_pct(after_storm, 0.99), 2),
        "probe_acks_after_storm": len(after_storm),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
