"""Load-generator efficiency: the IM Locust user (loadtests/imclient.py) vs a naive Locust user
built on websocket-client, doing the same work, side by side in one run.

Both run inside real Locust (in-process Environment + LocalRunner, gevent-patched) in their own
child process, against the same stub gateway (a separate asyncio process speaking the minimal
protocol: hello -> welcome, send -> ack + the message echoed back, ping -> pong), so only the
generator's own cost is measured:

* idle: N sessions connect, say hello and sit idle; RSS growth per session -> sessions per GB;
* busy: M sessions send -> ack -> message as fast as they can for T seconds; delivered
  messages per second of generator CPU time -> msgs/s per core (the run reports the CPU it
  used, so the figure is what one fully used core gives; the saturation guard trips at 90 %).

The IM user is structured like loadtests' ChatUser (one long task that paces itself and reads
its socket between actions); the naive user is the usual one-Locust-task-per-message style
with websocket-client's blocking recv. Both fire the same Locust request event per delivery.

    .venv/bin/python benchmarks/loadtest_generator.py [--idle 5000] [--busy 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAD = "x" * int(os.environ.get("LOADTEST_BENCH_BODY_BYTES", "64"))  # profile default size


def stub_server(port: int) -> None:
    import asyncio

    from websockets.asyncio.server import serve

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        seq = 0
        async for raw in ws:
            frame = json.loads(raw)
            op = frame.get("op")
            now = int(time.time() * 1000)
            if op == "hello":
                await ws.send(
                    json.dumps({"op": "welcome", "ref": frame.get("ref"), "server_time": now})
                )
            elif op == "ping":
                await ws.send(
                    json.dumps({"op": "pong", "ref": frame.get("ref"), "server_time": now})
                )
            elif op == "send":
                seq += 1
                ref = frame.get("ref") or frame["client_msg_id"]
                await ws.send(
                    json.dumps(
                        {
                            "op": "ack",
                            "ref": ref,
                            "client_msg_id": frame["client_msg_id"],
                            "conversation_id": "dm:a:b",
                            "accepted_at": now,
                        }
                    )
                )
                await ws.send(
                    json.dumps(
                        {
                            "op": "message",
                            "conversation_id": "dm:a:b",
                            "seq": seq,
                            "from": "peer",
                            "kind": "dm",
                            "body": frame["body"],
                            "accepted_at": now,
                        }
                    )
                )

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", port, max_size=2**20, compression=None, backlog=4096
        ):
            await asyncio.Future()

    asyncio.run(main())


def generator(impl: str, mode: str, sessions: int, seconds: float, url: str) -> dict[str, float]:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import psutil
    import websocket
    from locust import User, task
    from locust.env import Environment

    from loadtests.imclient import ImConnection
    from opsctl.poll import WaitTimeout, wait_until

    if impl == "fast":  # what a worker's locustfile loads besides, for its base RSS
        import loadtests.config
        import loadtests.reporting
        import loadtests.session
        import loadtests.storm  # noqa: F401

    delivered = [0]
    connected = [0]
    busy = mode == "busy"

    def dm(n: int) -> dict[str, str]:
        """A DM to the stub's peer, stamped with its send time for the latency."""
        return {
            "op": "send",
            "client_msg_id": f"m{n}",
            "to": "peer",
            "body": f"{now_ms():.1f}|{PAD}",
        }

    def now_ms() -> float:
        return time.time() * 1000

    def count_delivery(user: User, frame: dict[str, Any]) -> None:
        """A delivered message: one Locust request event with its latency, as both users fire."""
        if frame["op"] != "message":
            return
        user.environment.events.request.fire(
            request_type="DELIVER",
            name="dm",
            response_time=now_ms() - float(frame["body"].split("|")[0]),
            response_length=0,
            exception=None,
            context={},
        )
        delivered[0] += 1

    class FastUser(User):
        def __init__(self, environment: Environment) -> None:
            # Every field set here, as loadtests' ImUser does: one added later (in on_start)
            # turns the instance's shared-key attributes into a dict of its own.
            super().__init__(environment)
            self.conn = ImConnection(url, token="bench", timeout_s=60.0)
            self.n = 0

        def on_start(self) -> None:
            self.conn.connect()
            self.conn.send({"op": "hello", "device_id": "d", "ref": "h"})
            while not self.conn.receive(5.0):
                pass
            connected[0] += 1

        @task
        def work(self) -> None:
            # Like loadtests' ChatUser: one long-running task that paces itself and reads its
            # socket in between, instead of one Locust task (and hub round trip) per message.
            if not busy:
                self.conn.receive(30.0)
                return
            while True:
                self.n += 1
                self.conn.send(dm(self.n))
                got = 0
                while got < 2:
                    for frame in self.conn.receive(5.0):
                        got += 1
                        count_delivery(self, frame)

    class NaiveUser(User):
        def __init__(self, environment: Environment) -> None:
            super().__init__(environment)  # the same attribute layout as FastUser
            self.ws = websocket.WebSocket()
            self.n = 0

        def on_start(self) -> None:
            self.ws.connect(url, header=["Authorization: Bearer bench"])
            self.ws.send(json.dumps({"op": "hello", "device_id": "d", "ref": "h"}))
            json.loads(self.ws.recv())
            connected[0] += 1

        @task
        def work(self) -> None:
            if not busy:
                self.ws.settimeout(30.0)
                with contextlib.suppress(websocket.WebSocketTimeoutException):
                    self.ws.recv()
                return
            self.n += 1
            self.ws.send(json.dumps(dm(self.n)))
            for _ in range(2):
                count_delivery(self, json.loads(self.ws.recv()))

    user = FastUser if impl == "fast" else NaiveUser
    env = Environment(user_classes=[user])
    runner = env.create_local_runner()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    base_mib = round(rss_before / 2**20, 1)  # the Locust process before its first user
    runner.start(sessions, spawn_rate=min(sessions, 500))
    with contextlib.suppress(WaitTimeout):  # measure whoever connected within two minutes
        wait_until(
            f"{sessions} sessions to connect",
            lambda: connected[0] >= sessions,
            timeout=120,
            interval=0.2,
            sleep=gevent.sleep,
        )
    gevent.sleep(1.0)
    result: dict[str, float] = {"sessions": connected[0], "base_rss_mib": base_mib}
    if busy:
        cpu0, delivered0, t0 = sum(process.cpu_times()[:2]), delivered[0], time.monotonic()
        gevent.sleep(seconds)
        cpu = sum(process.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - t0
        count = delivered[0] - delivered0
        result.update(
            delivered=count,
            cpu_s=round(cpu, 2),
            cpu_pct=round(100 * cpu / wall, 1),
            msgs_per_s=round(count / wall, 1),
            msgs_per_core_s=round(count / cpu, 1) if cpu else 0.0,
            p99_ms=env.stats.get("dm", "DELIVER").get_response_time_percentile(0.99),
        )
    else:
        rss = process.memory_info().rss - rss_before
        result.update(
            rss_mib=round(rss / 2**20, 1),
            kib_per_session=round(rss / 1024 / max(connected[0], 1), 2),
            sessions_per_gb=round(2**30 / (rss / max(connected[0], 1))) if rss > 0 else 0,
        )
    runner.quit()
    return result


def _child(args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=5000, help="idle sessions per generator")
    parser.add_argument("--busy", type=int, default=50, help="busy sessions per generator")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--role", default="main")
    parser.add_argument("--impl", default="fast")
    parser.add_argument("--mode", default="idle")
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    if args.role == "server":
        stub_server(int(args.url))
        return
    if args.role == "generator":
        sessions = args.idle if args.mode == "idle" else args.busy
        print(json.dumps(generator(args.impl, args.mode, sessions, args.seconds, args.url)))
        return

    from opsctl.loadtest.targets import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--role", "server", "--url", str(port)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,  # clients hanging up at the end are not news
    )
    try:
        time.sleep(1.5)
        url = f"ws://127.0.0.1:{port}/ws"
        results: dict[str, dict[str, dict[str, float]]] = {}
        for impl in ("fast", "naive"):
            results[impl] = {}
            for mode in ("idle", "busy"):
                results[impl][mode] = _child(
                    [
                        "--role",
                        "generator",
                        "--impl",
                        impl,
                        "--mode",
                        mode,
                        "--url",
                        url,
                        "--idle",
                        str(args.idle),
                        "--busy",
                        str(args.busy),
                        "--seconds",
                        str(args.seconds),
                    ]
                )
                print(f"{impl:5} {mode:4} {results[impl][mode]}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    fast, naive = results["fast"], results["naive"]
    ratio = fast["busy"]["msgs_per_core_s"] / max(naive["busy"]["msgs_per_core_s"], 1e-9)
    print()
    print(
        f"msgs/s per generator core: IM user {fast['busy']['msgs_per_core_s']:.0f}, "
        f"naive websocket-client user {naive['busy']['msgs_per_core_s']:.0f} "
        f"-> {ratio:.2f}x (target >= 4x)"
    )
    print(
        f"idle sessions per GB: IM user {fast['idle']['sessions_per_gb']}, naive "
        f"{naive['idle']['sessions_per_gb']} (target >= 100000); "
        f"KiB/session {fast['idle']['kib_per_session']} vs {naive['idle']['kib_per_session']}"
    )
    print(
        f"a Locust process before its first user (the IM user's modules loaded): "
        f"{fast['idle']['base_rss_mib']} MiB RSS"
    )
    print(
        f"idle sessions per worker core: {fast['idle']['sessions']} held by one single-threaded "
        f"process (the --idle count; memory, not CPU, is the limit: see sessions per GB)"
    )


if __name__ == "__main__":
    main()
