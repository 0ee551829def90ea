"""Idle WebSocket sessions held per GB of gateway RSS.

Opens N authenticated, idle sessions against one running gateway and reads the gateway's RSS
before and after (from /proc of the process listening on the gateway port):

    IMGW_BENCH_WS_URL=ws://127.0.0.1:19110/ws \\
    IMGW_BENCH_SECRET_FILE=.state/local/secrets/jwt-hs256.key \\
    IMGW_BENCH_ISSUER=im-local IMGW_BENCH_AUDIENCE=im-gateway \\
    .venv/bin/python benchmarks/gateway_idle.py --connections 20000

Clients run in several processes (one event loop each) so the client side is not the limit.
Needs `ulimit -n` above the connection count on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
import psutil
from websockets.asyncio.client import connect

# No compression and no WebSocket pings, like the gateway.
CONNECT_OPTIONS: dict[str, Any] = {"compression": None, "open_timeout": 60, "ping_interval": None}


def token(secret: str, user: str, issuer: str, audience: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "iss": issuer, "aud": audience, "iat": now, "exp": now + 7200}
    return jwt.encode(claims, secret, algorithm="HS256")


async def hold(
    args: argparse.Namespace, worker: int, count: int, ready: object, done: object
) -> None:
    secret = Path(args.secret_file).read_text().strip()
    sockets = []
    sem = asyncio.Semaphore(200)

    async def open_one(i: int) -> None:
        user = f"idle-{worker}-{i}"
        auth = {"Authorization": "Bearer " + token(secret, user, args.issuer, args.audience)}
        for attempt in range(10):  # 503 / 1013 mean "try again later" (docs/protocol.md)
            try:
                async with sem:
                    ws = await connect(args.url, additional_headers=auth, **CONNECT_OPTIONS)
                    await ws.send(json.dumps({"op": "hello", "device_id": "d"}))
                    await ws.recv()
                sockets.append(ws)
                return
            except Exception:
                await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{user}: could not open a session")

    await asyncio.gather(*(open_one(i) for i in range(count)))
    ready.set()  # type: ignore[attr-defined]
    while not done.is_set():  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
    for ws in sockets:
        await ws.close()


def worker_main(
    args: argparse.Namespace, worker: int, count: int, ready: object, done: object
) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 1000, count + 1000))
    asyncio.run(hold(args, worker, count, ready, done))


def gateway_process(url: str) -> psutil.Process:
    port = urlparse(url).port
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    sys.exit(f"no process listens on port {port} (is the gateway running?)")


def main() -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=env.get("IMGW_BENCH_WS_URL", "ws://127.0.0.1:19110/ws"))
    parser.add_argument("--secret-file", default=env.get("IMGW_BENCH_SECRET_FILE", ""))
    parser.add_argument("--issuer", default=env.get("IMGW_BENCH_ISSUER", "im-local"))
    parser.add_argument("--audience", default=env.get("IMGW_BENCH_AUDIENCE", "im-gateway"))
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    gateway = gateway_process(args.url)
    rss_before = gateway.memory_info().rss
    per_worker = args.connections // args.workers
    ready = [multiprocessing.Event() for _ in range(args.workers)]
    done = multiprocessing.Event()
    started = time.monotonic()
    procs = [
        multiprocessing.Process(target=worker_main, args=(args, w, per_worker, ready[w], done))
        for w in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    for event in ready:
        while not event.wait(1):
            if not all(p.is_alive() for p in procs):
                done.set()
                sys.exit("a client worker died (see above)")
    opened = time.monotonic() - started
    time.sleep(3)  # let allocations settle
    rss_after = gateway.memory_info().rss
    total = per_worker * args.workers
    per_conn = (rss_after - rss_before) / total
    print(f"sessions: {total} (opened in {opened:.1f}s, {total / opened:.0f}/s)")
    print(f"gateway RSS: {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB")
    print(f"per idle session: {per_conn / 1024:.1f} KiB")
    print(f"idle sessions per GB of RSS (incremental): {2**30 / per_conn:,.0f}")
    print(f"idle sessions per GB of RSS (total): {total * 2**30 / rss_after:,.0f}")
    done.set()
    for proc in procs:
        proc.join(60)


if __name__ == "__main__":
    main()
