"""What one small `send()` on a loopback TCP socket costs the sender, with no evflex at all.

The floor under every fleet-wide command (broadcast, grid limits): the gateway writes one
frame per station. Opens `--sockets` loopback connections in this process, then times a
pass that sends one WebSocket-sized frame on each (the receiving ends are drained between
passes, never during one). Prints the median pass.

    .venv/bin/python benchmarks/loopback_send.py --sockets 5000 --cpu 0

On loopback the kernel runs the receiver's TCP input inside the sender's system call, so
this is more than a network interface would charge: with loopback receive processing
steered to another core (RPS: `echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus`, as root,
`echo 0` to undo) the same pass costs ~30 % of it on the project's machine
(docs/benchmarks.md, session 4). This script never changes system settings.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import time


def _pairs(count: int) -> tuple[list[socket.socket], list[socket.socket], socket.socket]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(min(count, 4096))
    port = listener.getsockname()[1]
    senders, receivers = [], []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        senders.append(server)  # the CSMS side writes
        receivers.append(client)
    return senders, receivers, listener


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--frame-bytes", type=int, default=260)
    parser.add_argument("--cpu", type=int, default=0, help="pin to this core (-1: no pinning)")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.sockets + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    senders, receivers, listener = _pairs(args.sockets)
    frame = b"\x81\x7e" + (args.frame_bytes - 4).to_bytes(2, "big") + b"x" * (args.frame_bytes - 4)
    passes_s = []
    try:
        for _ in range(args.passes):
            started = time.perf_counter()
            for sock in senders:
                sock.send(frame)
            passes_s.append(time.perf_counter() - started)
            for sock in receivers:
                sock.recv(65536)
    finally:
        for sock in (*senders, *receivers, listener):
            sock.close()
    median_s = statistics.median(passes_s)
    print(
        f"send() of {args.frame_bytes} B to {args.sockets} loopback sockets: pass "
        f"{median_s * 1e3:.1f} ms (median of {args.passes}), "
        f"{median_s / args.sockets * 1e6:.2f} µs per send"
    )


if __name__ == "__main__":
    main()
