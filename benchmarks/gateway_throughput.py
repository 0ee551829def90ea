"""End-to-end message throughput and latency through a running stack
(gateway -> Kafka -> dispatcher -> Cassandra/Redis -> gateway):

    IMGW_BENCH_WS_URLS=ws://127.0.0.1:19110/ws,ws://127.0.0.1:19111/ws \\
    IMGW_BENCH_DISPATCHER_URL=http://127.0.0.1:19108 \\
    IMGW_BENCH_SECRET_FILE=.state/local/secrets/jwt-hs256.key \\
    .venv/bin/python benchmarks/gateway_throughput.py --rates 500,1000,2000,4000 --seconds 15

Senders connect to the first URL, receivers to the last; each pair is one 1:1 conversation.
For each offered rate it prints messages/s acknowledged and delivered, end-to-end latency
percentiles (send call to receipt on the recipient's socket, same host clock) and the CPU
seconds the gateway and dispatcher processes used during the send window (connection setup
excluded). Messages per CPU-second is the "per core" figure: it holds on a loaded machine,
where wall-clock throughput does not. Each sender stays under the per-connection rate limit.
For throughput figures start the stack with LocalConfig(jvm_quick_start=False): the default
C1-only JIT makes Kafka and Cassandra much slower under load.
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
from typing import Any
from urllib.parse import urlparse

import jwt
import psutil
from websockets.asyncio.client import ClientConnection, connect

PER_SENDER_RATE = 40.0  # msg/s, below the gateway's default 50/s limit
TAIL_IDLE_S = 5.0  # after the send window, wait until nothing arrived for this long
TAIL_MAX_S = 90.0
# No compression and no WebSocket pings, like the gateway; max_queue=None: the client buffers
# every incoming frame instead of pausing reads.
CONNECT_OPTIONS: dict[str, Any] = {
    "compression": None,
    "open_timeout": 60,
    "ping_interval": None,
    "max_queue": None,
}


def token(secret: str, user: str, issuer: str, audience: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "iss": issuer, "aud": audience, "iat": now, "exp": now + 7200}
    return jwt.encode(claims, secret, algorithm="HS256")


async def session(url: str, secret: str, user: str, args: argparse.Namespace) -> ClientConnection:
    auth = {"Authorization": "Bearer " + token(secret, user, args.issuer, args.audience)}
    ws = await connect(url, additional_headers=auth, **CONNECT_OPTIONS)
    await ws.send(json.dumps({"op": "hello", "device_id": "bench"}))
    await ws.recv()
    return ws


async def run_worker(args: argparse.Namespace, worker: int, pairs: int, out: Any, go: Any) -> None:
    rate = args.rate
    secret = Path(args.secret_file).read_text().strip()
    run_id = uuid.uuid4().hex[:6]
    send_url, recv_url = args.urls[0], args.urls[-1]
    senders, receivers = [], []
    for i in range(pairs):
        a, b = f"tx-{run_id}-{worker}-{i}", f"rx-{run_id}-{worker}-{i}"
        senders.append((await session(send_url, secret, a, args), b))
        receivers.append(await session(recv_url, secret, b, args))
    latencies: list[float] = []
    counts = {"sent": 0, "acked": 0, "delivered": 0, "errors": 0, "delivered_in_window": 0}

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
    out.put(("ready", worker))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    deadline = time.monotonic() + args.seconds
    interval = 1.0 / (rate / args.workers / pairs)
    next_tick = time.monotonic()
    n = 0
    while time.monotonic() < deadline:
        for ws, peer in senders:
            body = repr(time.time())  # the receiver's latency is measured from this
            frame = {"op": "send", "client_msg_id": f"{run_id}-{n}", "to": peer, "body": body}
            await ws.send(json.dumps(frame))
            counts["sent"] += 1
        n += 1
        next_tick += interval
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    counts["delivered_in_window"] = counts["delivered"]
    await drain(counts)
    out.put(("done", (counts, latencies)))
    for ws, _ in senders:
        await ws.close()
    for ws in receivers:
        await ws.close()
    for task in readers:
        task.cancel()


async def drain(counts: dict[str, int]) -> None:
    """Wait for the backlog, so the CPU measured covers every message counted."""
    give_up = time.monotonic() + TAIL_MAX_S
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < give_up and counts["delivered"] < counts["sent"]:
        if counts["delivered"] != last:
            last, quiet_since = counts["delivered"], time.monotonic()
        elif time.monotonic() - quiet_since > TAIL_IDLE_S:
            break
        await asyncio.sleep(0.1)


def worker_main(args: argparse.Namespace, worker: int, pairs: int, out: Any, go: Any) -> None:
    asyncio.run(run_worker(args, worker, pairs, out, go))


def processes_on(urls: list[str]) -> list[psutil.Process]:
    ports = {urlparse(u).port for u in urls if u}
    found = {}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports and conn.pid:
            found[conn.pid] = psutil.Process(conn.pid)
    return list(found.values())


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(
    args: argparse.Namespace,
    rate: float,
    gateways: list[psutil.Process],
    dispatchers: list[psutil.Process],
) -> dict[str, float]:
    pairs = max(1, int(rate / PER_SENDER_RATE / args.workers))
    out: Any = multiprocessing.Queue()
    go: Any = multiprocessing.Event()
    args = argparse.Namespace(**{**vars(args), "rate": rate})
    procs = [
        multiprocessing.Process(target=worker_main, args=(args, w, pairs, out, go))
        for w in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        kind, _worker = out.get(timeout=300)
        assert kind == "ready"
    gw_before, disp_before = cpu_seconds(gateways), cpu_seconds(dispatchers)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    go.set()
    results = []
    for _ in procs:
        kind, result = out.get(timeout=args.seconds + 300)
        results.append(result)
    window = time.monotonic() - started
    gw_cpu = cpu_seconds(gateways) - gw_before
    disp_cpu = cpu_seconds(dispatchers) - disp_before
    load_after = os.getloadavg()[0]
    for proc in procs:
        proc.join(30)
    totals = {k: sum(r[0][k] for r in results) for k in results[0][0]}
    latencies = [x for r in results for x in r[1]]
    p50, p90, p99, worst = (1000 * percentile(latencies, q) for q in (0.5, 0.9, 0.99, 1.0))
    delivered = totals["delivered"]
    figures = {
        "offered_per_s": rate,
        "sent": totals["sent"],
        "acked": totals["acked"],
        "delivered": delivered,
        "errors": totals["errors"],
        "delivered_per_s": totals["delivered_in_window"] / args.seconds,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": worst,
        "gateway_cpu_s": gw_cpu,
        "dispatcher_cpu_s": disp_cpu,
        "measured_s": window,
        "msgs_per_gateway_cpu_s": delivered / gw_cpu if gw_cpu else float("nan"),
        "gateway_cpu_us_per_msg": 1e6 * gw_cpu / delivered if delivered else float("nan"),
        "dispatcher_cpu_us_per_msg": 1e6 * disp_cpu / delivered if delivered else float("nan"),
        "loadavg_1m": (load_before + load_after) / 2,
    }
    print(
        f"offered {rate:,.0f}/s ({pairs * args.workers} pairs): sent {totals['sent']} "
        f"acked {totals['acked']} delivered {delivered} errors {totals['errors']}\n"
        f"  delivered/s within the send window {figures['delivered_per_s']:,.0f}\n"
        f"  latency ms p50 {p50:.1f} "
        f"p90 {p90:.1f} p99 {p99:.1f} max {worst:.1f}\n"
        f"  gateway CPU {gw_cpu:.1f} s ({len(gateways)} procs) -> "
        f"{figures['msgs_per_gateway_cpu_s']:,.0f} msg per gateway CPU-second "
        f"({figures['gateway_cpu_us_per_msg']:.0f} us/msg)\n"
        f"  dispatcher CPU {disp_cpu:.1f} s -> {figures['dispatcher_cpu_us_per_msg']:.0f} us/msg"
        f"   measured {window:.1f} s (send window + drain)   load avg {figures['loadavg_1m']:.2f}",
        flush=True,
    )
    return figures


def main() -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", default=env.get("IMGW_BENCH_WS_URLS", "ws://127.0.0.1:19110/ws"))
    parser.add_argument(
        "--dispatcher-url",
        default=env.get("IMGW_BENCH_DISPATCHER_URL", ""),
        help="the dispatcher's http URL, to measure its CPU too",
    )
    parser.add_argument("--secret-file", default=env.get("IMGW_BENCH_SECRET_FILE", ""))
    parser.add_argument("--issuer", default=env.get("IMGW_BENCH_ISSUER", "im-local"))
    parser.add_argument("--audience", default=env.get("IMGW_BENCH_AUDIENCE", "im-gateway"))
    parser.add_argument(
        "--rates", default="2000", help="comma-separated offered rates (messages/s in total)"
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args()
    args.urls = args.urls.split(",")
    gateways = processes_on(args.urls)
    if not gateways:
        sys.exit(f"no gateway listens on {args.urls}")
    dispatchers = processes_on([args.dispatcher_url]) if args.dispatcher_url else []
    measured = f"dispatcher measured: {bool(dispatchers)}; {os.cpu_count()} CPUs"
    print(f"gateways: {len(gateways)} processes on {args.urls}; {measured}", flush=True)
    runs = [measure(args, float(rate), gateways, dispatchers) for rate in args.rates.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
