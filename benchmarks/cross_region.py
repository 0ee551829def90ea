"""Cross-region delivery latency and replication lag on the local multi-region stack (staging:
two regions, a Kafka, Redis and Cassandra DC each, MirrorMaker 2 between them), on loopback.

Latency is the send call to the message frame on the recipient's socket (same host clock), in
four placements of a DM, ``--pairs`` conversations each, one message per conversation every
``--interval`` s for ``--seconds``:

* ``same-region``: sender and recipient in region A, conversation homed in A (the baseline);
* ``cross, home=sender``: recipient in B; A sequences, the message reaches B through
  A's deliveries topic, MirrorMaker 2 and B's relay (one mirror hop);
* ``cross, home=recipient``: recipient in B, homed in B; the record reaches B's dispatcher
  through the mirrored messages topic (one hop), which delivers in B;
* ``same-region, home elsewhere``: both in A, homed in B: to B and back (two hops).

Replication lag: each relay's ``im_relay_replication_lag_seconds`` sampled every 0.5 s during
the run. The gauge is the age of the newest beacon when read, and beacons leave once a second,
so it carries a 0-1 s sawtooth on top of the lag; its minimum is closest to the mirror's own
delay. Placements run one after the other, each after one untimed warm-up message per
conversation (its first message reserves the seq fence); a run prints one JSON object.

Run: .venv/bin/python -m benchmarks.cross_region [--state-dir DIR] [--seconds 30]
(without --state-dir it starts a staging stack in a temporary dir and removes it after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect

from gateway.homes import shard_of
from gateway.protocol import dm_conversation
from gateway.shardmap import ShardMap
from opsctl.local import LocalStack
from opsctl.local._config import PORT_BLOCK_SIZE, SpecValues, resolve_config
from opsctl.local._procs import find_free_port_block
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

STACK = "staging"
CONNECT: dict[str, Any] = {
    "compression": None,
    "open_timeout": 60,
    "ping_interval": None,
    "max_queue": None,
}
LAG_SAMPLE_S = 0.5
TAIL_S = 20.0  # after the send window, wait at most this long for the last deliveries


def start_stack(state_dir: Path) -> LocalStack:
    spec = SpecValues.from_spec(load_stack(DEFAULT_INFRA_DIR, STACK), STACK)
    config = resolve_config(
        state_dir=state_dir,
        base_port=find_free_port_block(PORT_BLOCK_SIZE * len(spec.region_names)),
        gateways=1,
        spec_stack=STACK,
        regions=len(spec.region_names),
        env={},
    )
    stack = LocalStack(config, spec=spec)
    stack.up()
    return stack


def convs(regions: tuple[str, ...], home: str, count: int, tag: str) -> list[str]:
    fresh, i = ShardMap(0, regions), 0
    out: list[str] = []
    while len(out) < count:
        conv = dm_conversation(f"s{i}-{tag}", f"r{i}-{tag}")
        if fresh.entry(shard_of(conv)).home == home:
            out.append(conv)
        i += 1
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(quantile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
    }


class Bench:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.info = stack.info
        self.regions = tuple(r.name for r in self.info.regions)
        self.secret = Path(self.info.jwt_secret_file).read_text().strip()

    def ws(self, region: str) -> str:
        return self.info.region(region).gateway_ws_urls[0]

    def token(self, user: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "iss": self.info.jwt_issuer,
            "aud": self.info.jwt_audience,
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    async def session(self, region: str, user: str) -> ClientConnection:
        auth = {"Authorization": "Bearer " + self.token(user)}
        ws = await connect(self.ws(region), additional_headers=auth, **CONNECT)
        await ws.send(json.dumps({"op": "hello", "device_id": "bench"}))
        while json.loads(await ws.recv())["op"] != "welcome":
            pass
        return ws

    async def placement(
        self, sender_region: str, recipient_region: str, home: str, args: argparse.Namespace
    ) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:6]
        pairs = convs(self.regions, home, args.pairs, tag)
        senders, receivers = [], []
        for conv in pairs:
            sender, recipient = conv.split(":")[1:]
            senders.append((await self.session(sender_region, sender), recipient))
            receivers.append(await self.session(recipient_region, recipient))
        latencies: list[float] = []
        warmed = [0]
        sent = 0

        async def read(ws: ClientConnection) -> None:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("op") != "message":
                    continue
                if frame.get("body", "").startswith("t="):
                    latencies.append(time.time() - float(frame["body"][2:]))
                elif frame.get("body") == "warm-up":
                    warmed[0] += 1

        readers = [asyncio.create_task(read(ws)) for ws in receivers]
        readers += [asyncio.create_task(read_acks(ws)) for ws, _ in senders]
        # One untimed round first: each conversation's first message reserves its seq fence
        # and fills caches, which is not what a conversation in use pays.
        for ws, to in senders:
            warm = {"op": "send", "client_msg_id": f"{tag}-w", "to": to, "body": "warm-up"}
            await ws.send(json.dumps(warm))
        give_up = time.monotonic() + TAIL_S
        while warmed[0] < len(senders) and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < deadline:
            for ws, to in senders:
                body = f"t={time.time()!r}"
                await ws.send(
                    json.dumps(
                        {"op": "send", "client_msg_id": f"{tag}-{n}", "to": to, "body": body}
                    )
                )
                sent += 1
            n += 1
            await asyncio.sleep(args.interval)
        give_up = time.monotonic() + TAIL_S
        while len(latencies) < sent and time.monotonic() < give_up:
            await asyncio.sleep(0.1)
        for task in readers:
            task.cancel()
        for ws, _ in senders:
            await ws.close()
        for ws in receivers:
            await ws.close()
        return {"sent": sent, "delivered": len(latencies), **summary_ms(latencies)}

    async def lag_sampler(self, stop: asyncio.Event, out: dict[str, list[float]]) -> None:
        relays = {r: self.stack.component(f"{r}/relay").endpoint for r in self.regions}
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                for region, url in relays.items():
                    text = (await client.get(f"{url}/metrics")).text
                    for line in text.splitlines():
                        if line.startswith("im_relay_replication_lag_seconds{"):
                            source = line.split('source="', 1)[1].split('"', 1)[0]
                            out.setdefault(f"{source}->{region}", []).append(
                                float(line.rsplit(" ", 1)[1])
                            )
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LAG_SAMPLE_S)

    async def run(self, args: argparse.Namespace) -> dict[str, Any]:
        a, b = self.regions[:2]
        lags: dict[str, list[float]] = {}
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.lag_sampler(stop, lags))
        results = {
            "same-region": await self.placement(a, a, a, args),
            "cross, home=sender": await self.placement(a, b, a, args),
            "cross, home=recipient": await self.placement(a, b, b, args),
            "same-region, home elsewhere": await self.placement(a, a, b, args),
        }
        stop.set()
        await sampler
        lag = {
            link: {
                "n": len(v),
                "min_s": round(min(v), 3),
                "p50_s": round(statistics.median(v), 3),
                "p99_s": round(quantile(v, 0.99), 3),
                "max_s": round(max(v), 3),
            }
            for link, v in lags.items()
        }
        return {"regions": [a, b], "latency": results, "replication_lag": lag}


async def read_acks(ws: ClientConnection) -> None:
    async for _ in ws:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, help="a running staging stack (else start one)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.5, help="s between rounds")
    args = parser.parse_args()
    with ExitStack() as cleanup:
        if args.state_dir:
            stack = LocalStack.recorded(args.state_dir)
        else:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-xr-"))
            started = time.monotonic()
            stack = start_stack(Path(tmp) / "state")
            cleanup.callback(stack.down, wipe=True)
            print(f"staging stack up in {time.monotonic() - started:.0f} s", flush=True)
            time.sleep(10)  # MirrorMaker 2's first mirrored beacons
        result = asyncio.run(Bench(stack).run(args))
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = args.seconds
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
