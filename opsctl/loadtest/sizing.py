"""How many Locust workers a distributed run needs, and how big each one is.

Computed from the profile (peak users, message rates, group fan-out) and the generator's
measured costs below, with headroom; ``opsctl loadtest run --on-cluster`` shows the result
before launch, and ``--workers``, ``--worker-cpu``, ``--worker-memory`` override it.

The measured costs have one home: this block. Each names the benchmark that measured it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from opsctl.errors import UserInputError
from opsctl.loadtest.profiles import Profile

# ---- measured generator costs (the one home of these numbers) ------------------------------
# benchmarks/loadtest_generator.py (docs/benchmarks.md, "Load generator"): RSS growth per idle
# IM session in a Locust process (socket, watcher, timer, connection, user, greenlet);
# 9.44-9.78 KiB on 2026-12-02, the larger kept.
IDLE_SESSION_KIB = 9.8
# Same benchmark: delivered messages per second of generator CPU, each with its send and ack,
# i.e. three frames handled (send, ack, message) per delivery; 24,799-25,907 on 2026-12-02 on a
# loaded machine, the smaller kept.
MSGS_PER_CORE_S = 24_799
FRAMES_PER_BENCH_MSG = 3
# RSS of a Locust worker before any user (Python, gevent, Locust, this repository's modules):
# the same benchmark measured 71.8 MiB; rounded up for what a run adds (stats, reports).
WORKER_BASE_MIB = 80
# A connect (TCP, upgrade, JWT signing, hello, welcome, sync) in frames' worth of CPU. Not
# benchmarked separately yet: a conservative estimate of ten frames.
CONNECT_FRAMES = 10

# ---- headroom and limits -----------------------------------------------------------------
# A worker is one single-threaded process: at most one core. Size it to stay well under the
# generator-health guard (profile generator.max_cpu_pct, 90 % by default).
TARGET_CPU_UTILISATION = 0.6
MEMORY_HEADROOM = 1.5
# One worker pod connects from one IP to one Service address: the default ephemeral port
# range (32768-60999) gives it about 28k connections; keep 10 % spare.
MAX_USERS_PER_WORKER = 25_000
MASTER_CPU_MILLI = 500
MASTER_BASE_MIB = 256
MASTER_MIB_PER_WORKER = 2  # the last report of each worker (health samples, counters)


def frames_per_user_s(profile: Profile) -> float:
    """Frames one simulated user's generator handles per second at the profile's rates."""
    b = profile.behaviours
    return (
        b.direct.rate_per_user_s * 4  # send, ack, own echo, (partner's copy counted on theirs)
        + b.group.rate_per_user_s * (2 + b.group.group_size)  # send, ack, one copy per member
        + b.presence.rate_per_user_s * 4  # subscribe and unsubscribe, each with its reply
        + (b.reconnect.rate_per_user_s + b.offline_sync.rate_per_user_s) * CONNECT_FRAMES
    )


def core_s_per_frame() -> float:
    return 1.0 / (MSGS_PER_CORE_S * FRAMES_PER_BENCH_MSG)


@dataclass(frozen=True)
class Sizing:
    users: int
    workers: int
    users_per_worker: int
    worker_cpu_milli: int
    worker_memory_mib: int
    master_cpu_milli: int
    master_memory_mib: int
    expected_cpu_cores: float  # what the whole generator is expected to use
    overridden: tuple[str, ...] = ()

    @property
    def worker_cpu(self) -> str:
        return f"{self.worker_cpu_milli}m"

    @property
    def worker_memory(self) -> str:
        return f"{self.worker_memory_mib}Mi"

    @property
    def master_cpu(self) -> str:
        return f"{self.master_cpu_milli}m"

    @property
    def master_memory(self) -> str:
        return f"{self.master_memory_mib}Mi"

    @property
    def total_cpu_milli(self) -> int:
        return self.workers * self.worker_cpu_milli + self.master_cpu_milli

    @property
    def total_memory_mib(self) -> int:
        return self.workers * self.worker_memory_mib + self.master_memory_mib

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["overridden"] = list(self.overridden)
        return data

    def describe(self) -> str:
        given = f" (given: {', '.join(self.overridden)})" if self.overridden else ""
        return (
            f"{self.users} users on {self.workers} worker(s) x {self.users_per_worker} users, "
            f"each {self.worker_cpu} CPU / {self.worker_memory}; master {self.master_cpu} / "
            f"{self.master_memory}; total {self.total_cpu_milli}m CPU, "
            f"{self.total_memory_mib}Mi; expected use {self.expected_cpu_cores:.2f} cores{given}"
        )


def _round_up(value: float, step: int) -> int:
    return max(step, math.ceil(value / step) * step)


def parse_cpu(text: str) -> int:
    """``500m`` or ``1`` or ``1.5`` -> millicores; UserInputError (exit 2) naming the flag."""
    try:
        milli = int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)
    except ValueError:
        raise UserInputError(
            f"--worker-cpu '{text}' is not a CPU quantity", hint="use e.g. 500m or 1"
        ) from None
    if milli <= 0:
        raise UserInputError(f"--worker-cpu '{text}' must be positive")
    return milli


_MEMORY_UNITS = {"Mi": 1, "Gi": 1024, "M": 1, "G": 1000}


def parse_memory(text: str) -> int:
    """``512Mi`` or ``2Gi`` -> MiB; UserInputError (exit 2) naming the flag."""
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit):
            try:
                value = float(text[: -len(unit)])
            except ValueError:
                break
            if value <= 0:
                break
            return math.ceil(value * factor)
    raise UserInputError(
        f"--worker-memory '{text}' is not a memory quantity", hint="use e.g. 512Mi or 2Gi"
    )


def size_run(
    profile: Profile,
    *,
    users: int | None = None,
    workers: int | None = None,
    worker_cpu: str | None = None,
    worker_memory: str | None = None,
) -> Sizing:
    """The sizing for ``users`` (default: the profile's peak) at the profile's rates."""
    users = users or profile.peak_users
    per_user_core_s = frames_per_user_s(profile) * core_s_per_frame()
    cores = users * per_user_core_s
    needed_workers = max(
        1,
        math.ceil(cores / TARGET_CPU_UTILISATION),
        math.ceil(users / MAX_USERS_PER_WORKER),
    )
    overridden = []
    if workers is not None:
        overridden.append("workers")
    count = workers or needed_workers
    per_worker = math.ceil(users / count)
    cpu_milli = min(
        1000, _round_up(1000 * per_worker * per_user_core_s / TARGET_CPU_UTILISATION, 50)
    )
    if worker_cpu is not None:
        cpu_milli = parse_cpu(worker_cpu)
        overridden.append("worker-cpu")
    memory_mib = _round_up(
        WORKER_BASE_MIB + per_worker * IDLE_SESSION_KIB / 1024 * MEMORY_HEADROOM, 16
    )
    if worker_memory is not None:
        memory_mib = parse_memory(worker_memory)
        overridden.append("worker-memory")
    return Sizing(
        users=users,
        workers=count,
        users_per_worker=per_worker,
        worker_cpu_milli=cpu_milli,
        worker_memory_mib=memory_mib,
        master_cpu_milli=MASTER_CPU_MILLI,
        master_memory_mib=_round_up(MASTER_BASE_MIB + count * MASTER_MIB_PER_WORKER, 16),
        expected_cpu_cores=round(cores, 3),
        overridden=tuple(overridden),
    )
