"""End-to-end message throughput and latency through a running stack
(gateway -> Kafka -> dispatcher -> Cassandra/Redis -> gateway):

    IMGW_BENCH_WS_URLS=ws://127.0.0.1:19110/ws,ws://127.0.0.1:19111/ws \\
    IMGW_BENCH_SECRET_FILE=.state/local/secrets/jwt-hs256.key \\
    .venv/bin/python benchmarks/gateway_throughput.py --rate 5000 --seconds 20

Senders connect to the first URL, receivers to the last; each pair is one 1:1 conversation.
Prints messages/s acknowledged and delivered, end-to-end latency percentiles (send call to
receipt on the recipient's socket, same host clock) and gateway CPU, from which msg/s per
gateway core follows. Each sender stays under the per-connection rate limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import jwt
import psutil
from websockets.asyncio.client import ClientConnection, connect

PER_SENDER_RATE = 40.0  # msg/s, below the gateway's default 50/s limit


def token(secret: str, user: str, issuer: str, audience: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "iss": issuer, "aud": audience, "iat": now, "exp": now + 7200}
    return jwt.encode(claims, secret, algorithm="HS256")


async def session(url: str, secret: str, user: str, args: argparse.Namespace) -> ClientConnection:
    ws = await connect(
        url,
        additional_headers={"Authorization": "Bearer " + token(secret, user, args.issuer,
                                                                args.audience)},
        compression=None, open_timeout=60, ping_interval=None, max_queue=None,
    )  # fmt: skip
    await ws.send(json.dumps({"op": "hello", "device_id": "bench"}))
    await ws.recv()
    return ws


async def run_worker(args: argparse.Namespace, worker: int, pairs: int, out: object) -> None:
    secret = Path(args.secret_file).read_text().strip()
    run_id = uuid.uuid4().hex[:6]
    send_url, recv_url = args.urls[0], args.urls[-1]
    senders, receivers = [], []
    for i in range(pairs):
        a, b = f"tx-{run_id}-{worker}-{i}", f"rx-{run_id}-{worker}-{i}"
        senders.append((await session(send_url, secret, a, args), b))
        receivers.append(await session(recv_url, secret, b, args))
    latencies: list[float] = []
    counts = {"sent": 0, "acked": 0, "delivered": 0, "errors": 0}
    deadline = time.monotonic() + args.seconds

    async def read(ws: ClientConnection, is_sender: bool) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                op = frame["op"]
                if op == "ack":
                    counts["acked"] += 1
                elif op == "error":
                    counts["errors"] += 1
                elif op == "message" and not is_sender:
                    counts["delivered"] += 1
                    latencies.append(time.time() - float(frame["body"]))
        except Exception:
            pass

    readers = [asyncio.create_task(read(ws, True)) for ws, _ in senders]
    readers += [asyncio.create_task(read(ws, False)) for ws in receivers]
    interval = 1.0 / (args.rate / args.workers / pairs)
    next_tick = time.monotonic()
    n = 0
    while time.monotonic() < deadline:
        for ws, peer in senders:
            frame = {"op": "send", "client_msg_id": f"{run_id}-{n}", "to": peer,
                     "body": repr(time.time())}  # fmt: skip
            await ws.send(json.dumps(frame))
            counts["sent"] += 1
        n += 1
        next_tick += interval
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    await asyncio.sleep(3)  # let the tail arrive
    for ws, _ in senders:
        await ws.close()
    for ws in receivers:
        await ws.close()
    for task in readers:
        task.cancel()
    out.put((counts, latencies))  # type: ignore[attr-defined]


def worker_main(args: argparse.Namespace, worker: int, pairs: int, out: object) -> None:
    asyncio.run(run_worker(args, worker, pairs, out))


def processes_on(urls: list[str]) -> list[psutil.Process]:
    ports = {urlparse(u).port for u in urls}
    found = {}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports and conn.pid:
            found[conn.pid] = psutil.Process(conn.pid)
    return list(found.values())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", default=env.get("IMGW_BENCH_WS_URLS", "ws://127.0.0.1:19110/ws"))
    parser.add_argument("--secret-file", default=env.get("IMGW_BENCH_SECRET_FILE", ""))
    parser.add_argument("--issuer", default=env.get("IMGW_BENCH_ISSUER", "im-local"))
    parser.add_argument("--audience", default=env.get("IMGW_BENCH_AUDIENCE", "im-gateway"))
    parser.add_argument("--rate", type=float, default=2000, help="target messages/s in total")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.urls = args.urls.split(",")
    pairs = max(1, int(args.rate / PER_SENDER_RATE / args.workers))
    gateways = processes_on(args.urls)
    if not gateways:
        sys.exit(f"no gateway listens on {args.urls}")
    cpu_before = {p.pid: sum(p.cpu_times()[:2]) for p in gateways}
    out: multiprocessing.Queue[tuple[dict[str, int], list[float]]] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=worker_main, args=(args, w, pairs, out))
        for w in range(args.workers)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.seconds + 300) for _ in procs]
    for proc in procs:
        proc.join(30)
    elapsed = time.monotonic() - started
    cpu = sum(sum(p.cpu_times()[:2]) - cpu_before[p.pid] for p in gateways)
    totals = {k: sum(r[0][k] for r in results) for k in results[0][0]}
    latencies = [x for r in results for x in r[1]]
    seconds = args.seconds
    print(f"senders/receivers: {pairs * args.workers} pairs over {args.urls}")
    print(f"sent {totals['sent']}  acked {totals['acked']}  delivered {totals['delivered']}  "
          f"errors {totals['errors']}")  # fmt: skip
    print(f"delivered/s: {totals['delivered'] / seconds:,.0f}")
    p50, p90, p99, worst = (1000 * percentile(latencies, q) for q in (0.5, 0.9, 0.99, 1.0))
    print(f"latency ms: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {worst:.1f}")
    print(f"gateway CPU: {cpu:.1f} s over {elapsed:.0f} s wall ({len(gateways)} processes)")
    if cpu > 0:
        print(f"delivered msg/s per gateway core: {totals['delivered'] / cpu:,.0f}")


if __name__ == "__main__":
    main()
