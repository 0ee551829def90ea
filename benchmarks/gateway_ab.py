"""Side by side: the IM processes (dispatcher and two gateways) of two source trees, on one local
stack, alternating, each driven by gateway_throughput.py. A tree is any checkout of this repo,
e.g. a baseline made with ``git worktree add /tmp/base <commit>``:

    .venv/bin/python -m benchmarks.gateway_ab --trees base=/tmp/base,new=. \\
        --rounds 2 --rates 500,1000,2000 --seconds 15

The stack (Redis, Kafka, Cassandra, Prometheus) is started in --state-dir with the JVMs' full
JIT unless it runs already; its own IM processes are stopped while the trees take turns, and
``opsctl local up --state-dir ...`` brings them back. Every tree runs in the same virtualenv,
and every tree's dispatcher in one consumer group (``--group``): trees with different default
groups would otherwise re-consume each other's records from the start of the topic.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from opsctl.local import LocalStack
from opsctl.local._config import LocalConfig, Ports
from opsctl.local._procs import running_record
from opsctl.poll import WaitTimeout, wait_until

IM_PROCESSES = ("dispatcher", "gw-1", "gw-2")
SUMMARY_MARKERS = ("offered", "latency", "CPU")


def parse_trees(text: str) -> list[tuple[str, Path]]:
    trees = []
    for item in text.split(","):
        label, _, path = item.partition("=")
        root = Path(path).resolve()
        if not label or not (root / "gateway" / "server.py").is_file():
            raise SystemExit(f"--trees: '{item}' is not label=<checkout with gateway/>")
        trees.append((label, root))
    return trees


def ensure_stack(state_dir: Path, base_port: int) -> LocalStack:
    if (state_dir / "stack.json").is_file():
        return LocalStack.recorded(state_dir)
    config = LocalConfig(
        state_dir=state_dir, ports=Ports.from_base(base_port), jvm_quick_start=False
    )
    stack = LocalStack(config)
    stack.up()
    return stack


def stop_stack_im(stack: LocalStack) -> None:
    for name in IM_PROCESSES:
        record = running_record(stack.layout.pid(name))
        if record is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
    try:
        wait_until(
            "the stack's IM processes to stop",
            lambda: not any(running_record(stack.layout.pid(n)) for n in IM_PROCESSES),
            timeout=30,
            interval=0.2,
        )
    except WaitTimeout as exc:
        raise SystemExit(str(exc)) from None


def start_tree(
    stack: LocalStack, root: Path, log_dir: Path, group: str
) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGW_")}
    env.update(stack.imgw_env(), PYTHONUNBUFFERED="1")
    # One consumer group for every tree: trees whose default groups differ (before and after
    # region-qualified groups) would otherwise re-consume each other's records from the start.
    env["IMGW_KAFKA_CONSUMER_GROUP"] = group
    ports = stack.config.ports
    roles = [("gateway.dispatcher", "dispatcher-1", ports.dispatcher)]
    roles += [("gateway.server", f"gw-{i + 1}", ports.gateway(i)) for i in range(2)]
    procs = []
    for module, node, port in roles:
        with (log_dir / f"{root.name}-{node}.log").open("ab") as log:
            own = {"IMGW_NODE_ID": node, "IMGW_LISTEN_PORT": str(port)}
            argv = [sys.executable, "-m", module]
            proc = subprocess.Popen(
                argv, cwd=root, env={**env, **own}, stdout=log, stderr=subprocess.STDOUT
            )
            procs.append(proc)
    deadline = time.monotonic() + 90  # for all of them together
    for _, node, port in roles:
        what = f"{root}: {node} ready (logs in {log_dir})"
        remaining = max(0.0, deadline - time.monotonic())
        try:
            wait_until(what, functools.partial(_ready, port), timeout=remaining, interval=0.3)
        except WaitTimeout as exc:
            raise SystemExit(str(exc)) from None
    return procs


def _ready(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", required=True, help="label=path[,label=path...]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rates", default="500,1000,2000")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--state-dir", type=Path, default=Path(".state/bench-ab"))
    parser.add_argument("--base-port", type=int, default=19300)
    parser.add_argument("--group", default="im-dispatcher.bench", help="consumer group of all")
    args = parser.parse_args()
    trees = parse_trees(args.trees)
    stack = ensure_stack(args.state_dir.resolve(), args.base_port)
    info = stack.info
    log_dir = stack.config.state_dir / "logs"
    bench_env = {
        **os.environ,
        "IMGW_BENCH_WS_URLS": ",".join(info.gateway_ws_urls[:2]),
        "IMGW_BENCH_DISPATCHER_URL": info.dispatcher_url,
        "IMGW_BENCH_SECRET_FILE": str(info.jwt_secret_file),
    }
    throughput = Path(__file__).with_name("gateway_throughput.py")
    stop_stack_im(stack)
    for round_ in range(args.rounds):
        for label, root in trees:
            procs = start_tree(stack, root, log_dir, args.group)
            try:
                time.sleep(3)  # let consumer group assignment settle
                argv = [sys.executable, str(throughput), "--rates", args.rates]
                argv += ["--seconds", str(args.seconds)]
                done = subprocess.run(
                    argv, env=bench_env, capture_output=True, text=True, check=False
                )
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(30)
            print(f"== round {round_ + 1}: {label} ({root})", flush=True)
            lines = done.stdout.splitlines()
            print("\n".join(x for x in lines if any(m in x for m in SUMMARY_MARKERS)), flush=True)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(done.returncode)
    print(f"restore the stack's own processes: opsctl local up --state-dir {args.state_dir}")


if __name__ == "__main__":
    main()
