"""Locust scenarios for the IM gateway, configured by environment (set by opsctl loadtest run).

LOADTEST_PROFILE     profile file (loadtests/profiles/*.yaml)
LOADTEST_TARGETS     comma-separated ws:// URLs; users spread over them
LOADTEST_JWT_SECRET_FILE, LOADTEST_JWT_ISSUER, LOADTEST_JWT_AUDIENCE   HS256 token settings
LOADTEST_RUN_ID      prefix of user and group ids, so every run starts at seq 1
LOADTEST_OUT         where the master writes timeline.jsonl and workers worker-<i>.json
LOADTEST_CLOCK_SKEW_MS   inject a clock error into this worker (tests)
LOADTEST_CLOCK_CORRECTION  0 disables clock-offset correction (tests)
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
import jwt
import locust.runners
from locust import LoadTestShape, User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.clock import ClockSync
from loadtests.health import HealthSampler
from loadtests.imclient import Closed, ConnectError, ImConnection
from loadtests.tracking import SeqTracker
from opsctl.loadtest.profiles import Profile, load_profile

# Workers report to the master every second, so live progress and health stay fresh.
locust.runners.WORKER_REPORT_INTERVAL = 1.0

PROFILE: Profile = load_profile(os.environ.get("LOADTEST_PROFILE", "smoke"))
TARGETS = [url for url in os.environ.get("LOADTEST_TARGETS", "").split(",") if url]
RUN_ID = os.environ.get("LOADTEST_RUN_ID", "lt")
OUT_DIR = Path(os.environ.get("LOADTEST_OUT", "."))
_ISSUER = os.environ.get("LOADTEST_JWT_ISSUER") or None
_AUDIENCE = os.environ.get("LOADTEST_JWT_AUDIENCE") or None
_SECRET_FILE = os.environ.get("LOADTEST_JWT_SECRET_FILE", "")
REPLY_TIMEOUT_S = 10.0

CLOCK = ClockSync(
    skew_ms=float(os.environ.get("LOADTEST_CLOCK_SKEW_MS", "0")),
    correct=os.environ.get("LOADTEST_CLOCK_CORRECTION", "1") != "0",
)
COUNTERS: Counter[str] = Counter()
HEALTH = HealthSampler()
_STATE: dict[str, Any] = {"send_until": None, "final_sync_at": None, "local_users": 0}
_SECRET: list[str] = []


def _secret() -> str:
    if not _SECRET:
        _SECRET.append(Path(_SECRET_FILE).read_text(encoding="utf-8").strip())
    return _SECRET[0]


def make_token(user_id: str, ttl_s: int = 6 * 3600) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if _ISSUER:
        claims["iss"] = _ISSUER
    if _AUDIENCE:
        claims["aud"] = _AUDIENCE
    return jwt.encode(claims, _secret(), algorithm="HS256")


def dm_conversation(a: str, b: str) -> str:
    low, high = sorted((a, b))
    return f"dm:{low}:{high}"


class Reply(Exception):
    """The gateway answered a request with an error frame."""


class ImUser(User):
    """One device of one user on one persistent connection. Subclasses choose behaviours.

    The user's own greenlet reads its socket between actions (``pump``), so an idle session
    costs no extra greenlet.
    """

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        runner = environment.runner
        worker_index = getattr(runner, "worker_index", 0) if runner else 0
        workers = int(os.environ.get("LOADTEST_WORKERS", "1"))
        local = _STATE["local_users"]
        _STATE["local_users"] += 1
        self.index = local * workers + max(worker_index, 0)
        self.user_id = f"{RUN_ID}-u{self.index}"
        self.partner_id = f"{RUN_ID}-u{self.index ^ 1}"
        size = PROFILE.behaviours.group.group_size
        self.group_id = f"{RUN_ID}-g{self.index // size}"
        self.url = TARGETS[self.index % len(TARGETS)]
        self.conn: ImConnection | None = None
        self.tracker = SeqTracker(COUNTERS)
        self.waiting: dict[str, tuple[str, str, float]] = {}  # ref -> (type, name, start)
        self.replies: dict[str, dict[str, Any]] = {}
        self.sync_done_refs: set[str] = set()
        self.in_final_sync = False
        self.final_synced = False
        self.in_group = self.index % PROFILE.behaviours.group.group_size == 0
        self.seq = 0
        self.padding = "x" * max(PROFILE.message_bytes - 32, 0)
        self.next_action = time.monotonic()

    # ---- measurement -------------------------------------------------------------------

    def record(
        self, kind: str, name: str, elapsed_ms: float, error: BaseException | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=elapsed_ms,
            response_length=0,
            exception=error,
            context={},
        )

    # ---- connection --------------------------------------------------------------------

    def connect(self, *, sync: dict[str, Any] | None) -> bool:
        started = time.perf_counter()
        conn = ImConnection(self.url, token=make_token(self.user_id), timeout_s=5.0)
        try:
            conn.connect()
            self.conn = conn
            hello: dict[str, Any] = {"op": "hello", "device_id": "lt", "ref": "hello"}
            if sync is not None:
                hello["sync"] = {**sync, "limit": 10000}
            conn.send(hello)
            self.waiting["hello"] = ("CONNECT", "hello", started)
            self.wait_reply("hello")
            if sync is not None:
                self.wait_sync("hello")
        except (ConnectError, Closed, Reply, TimeoutError) as exc:
            self.drop_connection()
            self.waiting.pop("hello", None)
            self.record("CONNECT", "hello", (time.perf_counter() - started) * 1000, exc)
            return False
        COUNTERS["connects"] += 1
        self.sync_clock()
        return True

    def ensure_connected(self) -> bool:
        if self.conn is not None:
            return True
        backoff = 0.2
        while not self.connect(sync={"cursors": self.tracker.cursors()}):
            gevent.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)
            if time.monotonic() > (_STATE["send_until"] or float("inf")):
                return False
        return True

    def drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            COUNTERS["disconnects"] += 1

    def sync_clock(self) -> None:
        """Without a master (single process), estimate the offset against the gateway."""
        if _STATE.get("master_clock") or CLOCK.samples >= 50 or self.conn is None:
            return
        if isinstance(self.environment.runner, WorkerRunner):
            return
        sent = CLOCK.local_ms()
        self.conn.send({"op": "ping", "ref": "clock"})
        self.waiting["clock"] = ("", "ping", time.perf_counter())
        pong = self.wait_reply("clock", record=False)
        CLOCK.add_sample(sent, float(pong["server_time"]), CLOCK.local_ms())

    # ---- frames ------------------------------------------------------------------------

    def pump(self, seconds: float) -> None:
        """Read and handle frames for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.conn is None:
                if self.conn is None and left > 0:
                    gevent.sleep(left)
                return
            try:
                frames = self.conn.receive(left)
            except Closed as closed:
                self.on_closed(closed)
                continue
            for frame in frames:
                self.handle(frame)

    def on_closed(self, closed: Closed) -> None:
        self.drop_connection()
        COUNTERS[f"closed_{closed.code}"] += 1
        for ref, (kind, name, started) in list(self.waiting.items()):
            if kind:
                self.record(kind, name, (time.perf_counter() - started) * 1000, closed)
            del self.waiting[ref]

    def handle(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "message":
            self.on_message(frame)
        elif op == "sync_batch":
            conv = frame["conversation_id"]
            for message in frame["messages"]:
                self.tracker.synced(conv, int(message["seq"]), final=self.in_final_sync)
        elif op == "sync_done":
            self.sync_done_refs.add(str(frame.get("ref")))
        elif op == "sync_required":
            COUNTERS["sync_required"] += 1
        elif op == "reconnect":
            COUNTERS["drain_reconnects"] += 1
        ref = frame.get("ref")
        if ref is not None and op not in ("sync_done",):
            ref = str(ref)
            waiting = self.waiting.pop(ref, None)
            if waiting is not None:
                kind, name, started = waiting
                error = (
                    Reply(f"{frame.get('code')}: {frame.get('message')}") if op == "error" else None
                )
                if kind:
                    self.record(kind, name, (time.perf_counter() - started) * 1000, error)
                self.replies[ref] = frame

    def on_message(self, frame: dict[str, Any]) -> None:
        conv = frame["conversation_id"]
        if not self.tracker.live(conv, int(frame["seq"])):
            return
        if frame.get("from") == self.user_id:
            return  # own echo: counted for sequence, not for sender -> receiver latency
        body = str(frame.get("body", ""))
        stamp, _, _ = body.partition("|")
        try:
            sent_ms = float(stamp)
        except ValueError:
            return
        latency = CLOCK.now_ms() - sent_ms
        if latency < 0:
            COUNTERS["negative_latency"] += 1
            latency = 0.0
        self.record("DELIVER", str(frame.get("kind", "dm")), latency)

    def wait_reply(self, ref: str, *, record: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while ref not in self.replies:
            if self.conn is None:
                raise Closed(None, "connection lost while waiting for a reply")
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = self.waiting.pop(ref, None)
                if waiting is not None and record and waiting[0]:
                    self.record(waiting[0], waiting[1], REPLY_TIMEOUT_S * 1000, TimeoutError(ref))
                raise TimeoutError(f"no reply to {ref} in {REPLY_TIMEOUT_S} s")
            try:
                frames = self.conn.receive(left)
            except Closed as closed:
                self.on_closed(closed)
                raise
            for frame in frames:
                self.handle(frame)
        reply = self.replies.pop(ref)
        if reply.get("op") == "error":
            raise Reply(f"{reply.get('code')}: {reply.get('message')}")
        return reply

    def wait_sync(self, ref: str) -> None:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while ref not in self.sync_done_refs:
            if self.conn is None or time.monotonic() > deadline:
                raise TimeoutError(f"no sync_done for {ref}")
            try:
                frames = self.conn.receive(deadline - time.monotonic())
            except Closed as closed:
                self.on_closed(closed)
                raise
            for frame in frames:
                self.handle(frame)
        self.sync_done_refs.discard(ref)

    def request(self, frame: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
        """Send a frame and wait for its reply; failures are recorded, not raised."""
        if self.conn is None:
            return None
        self.seq += 1
        ref = f"r{self.seq}"
        frame["ref"] = ref
        self.waiting[ref] = (kind, name, time.perf_counter())
        try:
            self.conn.send(frame)
            return self.wait_reply(ref)
        except (Closed, TimeoutError, Reply):
            return None

    # ---- lifecycle ---------------------------------------------------------------------

    def on_start(self) -> None:
        if _STATE["send_until"] is None:
            start_test_clock()
        if self.connect(sync={}) and PROFILE.behaviours.group.rate_per_user_s > 0:
            self.join_group()

    def on_stop(self) -> None:
        self.drop_connection()

    def join_group(self) -> None:
        """The group's first member creates it with every member; the others are added."""
        size = PROFILE.behaviours.group.group_size
        if self.index % size != 0:
            return
        first = (self.index // size) * size
        members = [f"{RUN_ID}-u{first + k}" for k in range(1, size)]
        for attempt in range(5):
            self.seq += 1
            ref = f"g{self.seq}"
            frame = {"op": "group_create", "group_id": self.group_id, "members": members}
            frame["ref"] = ref
            self.waiting[ref] = ("", "group_create", time.perf_counter())
            try:
                assert self.conn is not None
                self.conn.send(frame)
                self.wait_reply(ref, record=False)
                return
            except Reply as reply:
                if "group_exists" in str(reply):
                    return
                gevent.sleep(0.2 * (attempt + 1))  # unavailable: the backend is busy
            except (Closed, TimeoutError):
                return

    def final_sync(self) -> None:
        if self.conn is None and not self.ensure_connected_once():
            return
        assert self.conn is not None
        self.in_final_sync = True
        try:
            self.conn.send(
                {"op": "sync", "cursors": self.tracker.cursors(), "limit": 10000, "ref": "final"}
            )
            self.wait_sync("final")
            COUNTERS["final_synced_users"] += 1
        except (Closed, TimeoutError):
            COUNTERS["final_sync_failed"] += 1
        finally:
            self.in_final_sync = False

    def ensure_connected_once(self) -> bool:
        return self.connect(sync={"cursors": self.tracker.cursors()})

    @task
    def step(self) -> None:
        now = time.monotonic()
        if now < (_STATE["send_until"] or 0):
            if self.conn is None and not self.ensure_connected():
                return
            if now >= self.next_action:
                self.act()
                self.next_action = max(self.next_action, now) + random.expovariate(
                    PROFILE.behaviours.total_rate
                )
            self.pump(max(self.next_action - time.monotonic(), 0.0))
        elif not self.final_synced and now >= _STATE["final_sync_at"]:
            self.final_synced = True
            self.final_sync()
        else:
            self.pump(0.5)

    def act(self) -> None:
        raise NotImplementedError


class ChatUser(ImUser):
    """The traffic mix of the profile: each action picked with its rate as weight."""

    def act(self) -> None:
        weights = PROFILE.behaviours.weights()
        behaviour = random.choices(list(weights), weights=list(weights.values()))[0]
        getattr(self, f"do_{behaviour}")()

    def send_text(self, target: dict[str, str], name: str) -> None:
        self.seq += 1
        body = f"{CLOCK.now_ms():.1f}|{self.padding}"
        frame = {
            "op": "send",
            "client_msg_id": f"{self.user_id}-{self.seq}",
            "body": body,
            **target,
        }
        if self.request(frame, "SEND", name) is not None:
            COUNTERS["sent_acked"] += 1

    def do_direct(self) -> None:
        self.send_text({"to": self.partner_id}, "dm")

    def do_group(self) -> None:
        if not self.in_group:
            # Until the creator has added us, a group send would be refused (not_member).
            reply = self.request({"op": "group_members", "group_id": self.group_id}, "", "")
            if reply is None:
                self.do_direct()
                return
            self.in_group = True
        self.send_text({"group_id": self.group_id}, "group")

    def do_presence(self) -> None:
        # Subscription churn: subscribe to a few neighbours, then drop them again.
        users = [f"{RUN_ID}-u{(self.index + k) % max(PROFILE.users, 2)}" for k in (1, 2, 3)]
        if self.request({"op": "presence_subscribe", "users": users}, "PRESENCE", "subscribe"):
            self.request({"op": "presence_unsubscribe", "users": users}, "PRESENCE", "unsubscribe")

    def do_reconnect(self) -> None:
        # Reconnect storm member: drop and come straight back with our cursors.
        self.drop_connection()
        COUNTERS["reconnects"] += 1
        self.connect(sync={"cursors": self.tracker.cursors()})

    def do_offline_sync(self) -> None:
        self.drop_connection()
        gevent.sleep(PROFILE.behaviours.offline_sync.offline_s)
        started = time.perf_counter()
        before = COUNTERS["delivered_sync"]
        if self.connect(sync={"cursors": self.tracker.cursors()}):
            self.record("SYNC", "offline", (time.perf_counter() - started) * 1000)
            COUNTERS["offline_synced_messages"] += COUNTERS["delivered_sync"] - before


def start_test_clock() -> None:
    now = time.monotonic()
    sending = PROFILE.stages[-1].until_s if PROFILE.stages else PROFILE.duration_s
    if os.environ.get("LOADTEST_DURATION_S"):  # capacity steps override the duration
        sending = float(os.environ["LOADTEST_DURATION_S"])
    _STATE["send_until"] = now + sending
    _STATE["final_sync_at"] = now + sending + min(1.0, PROFILE.drain_s / 2)


if PROFILE.stages:

    class ProfileShape(LoadTestShape):
        """The profile's stages as a load shape (data, not code)."""

        def tick(self) -> tuple[int, float] | None:
            elapsed = self.get_run_time()
            for stage in PROFILE.stages:
                if elapsed < stage.until_s:
                    return stage.users, stage.spawn_rate
            if elapsed < PROFILE.run_time_s:
                last = PROFILE.stages[-1]
                return last.users, last.spawn_rate
            return None


# ---- reporting -------------------------------------------------------------------------


def _worker_snapshot(environment: Environment) -> dict[str, Any]:
    runner = environment.runner
    return {
        "worker_index": getattr(runner, "worker_index", 0),
        "pid": os.getpid(),
        "counters": dict(COUNTERS),
        "health": HEALTH.samples[-600:],
        "clock": {
            "skew_ms": CLOCK.skew_ms,
            "offset_ms": round(CLOCK.offset_ms, 2),
            "best_rtt_ms": CLOCK.best_rtt_ms,
            "samples": CLOCK.samples,
            "corrected": CLOCK.correct,
        },
        "users": runner.user_count if runner else 0,
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        HEALTH.start()
        if isinstance(environment.runner, WorkerRunner) and "clock" not in _STATE:
            _STATE["clock"] = gevent.spawn(_clock_exchanges, environment.runner)
        if _STATE["send_until"] is None:
            start_test_clock()
    else:
        gevent.spawn(_timeline, environment)
        if os.environ.get("LOADTEST_MEASURE_FROM_S"):
            gevent.spawn(
                _reset_delivery_after, environment, float(os.environ["LOADTEST_MEASURE_FROM_S"])
            )


def _reset_delivery_after(environment: Environment, seconds: float) -> None:
    """Capacity steps: forget the delivery latencies of ramp-up and warm-up."""
    gevent.sleep(seconds)
    for (_name, method), entry in environment.stats.entries.items():
        if method == "DELIVER":
            entry.reset()


@events.report_to_master.add_listener
def _on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    environment = _ENV[0] if _ENV else None
    if environment is None:
        return
    snapshot = _worker_snapshot(environment)
    data["im"] = snapshot
    _write_json(OUT_DIR / f"worker-{snapshot['worker_index']}.json", snapshot)


_ENV: list[Environment] = []
_WORKER_REPORTS: dict[str, dict[str, Any]] = {}


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    _ENV.append(environment)
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message("clock_ping", _answer_clock_ping)
    elif isinstance(runner, WorkerRunner):
        runner.register_message("clock_pong", _take_clock_pong)


# Clock offsets are estimated against the master's clock over Locust's own channel, not
# through the gateway: a slow or asymmetric gateway path would bias an NTP-style estimate by
# half its extra delay and hide exactly the latency being measured.
def _answer_clock_ping(environment: Environment, msg: Any, **_: Any) -> None:
    reply = {"t0": msg.data["t0"], "server": time.time() * 1000.0}
    environment.runner.send_message("clock_pong", reply, client_id=msg.node_id)


def _take_clock_pong(environment: Environment, msg: Any, **_: Any) -> None:
    CLOCK.add_sample(float(msg.data["t0"]), float(msg.data["server"]), CLOCK.local_ms())
    _STATE["master_clock"] = True


def _clock_exchanges(runner: WorkerRunner) -> None:
    for round_number in range(1000):
        runner.send_message("clock_ping", {"t0": CLOCK.local_ms()})
        gevent.sleep(0.1 if round_number < 20 else 5.0)


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if "im" in data:
        _WORKER_REPORTS[client_id] = data["im"]


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not isinstance(
        environment.runner, MasterRunner
    ):
        HEALTH.stop()
        snapshot = _worker_snapshot(environment)
        _write_json(OUT_DIR / f"worker-{snapshot['worker_index']}.json", snapshot)


def _delivery_histogram(environment: Environment) -> dict[int, int]:
    merged: Counter[int] = Counter()
    for (_name, method), entry in environment.stats.entries.items():
        if method == "DELIVER":
            merged.update(entry.response_times)
    return dict(merged)


def _percentile(histogram: dict[int, int], fraction: float) -> float | None:
    total = sum(histogram.values())
    if total <= 0:
        return None
    wanted = fraction * total
    running = 0
    for value in sorted(histogram):
        running += histogram[value]
        if running >= wanted:
            return float(value)
    return float(max(histogram))


def _timeline(environment: Environment) -> None:
    """Master: one line per second for live progress and the report's time series."""
    path = OUT_DIR / "timeline.jsonl"
    previous: dict[int, int] = {}
    previous_counts: dict[str, int] = {}
    started = time.time()
    with path.open("a", encoding="utf-8") as out:
        while True:
            gevent.sleep(1.0)
            histogram = _delivery_histogram(environment)
            window = {
                k: v - previous.get(k, 0)
                for k, v in histogram.items()
                if v - previous.get(k, 0) > 0
            }
            previous = histogram
            totals = environment.stats.total
            counters: Counter[str] = Counter()
            for report in _WORKER_REPORTS.values():
                counters.update(report["counters"])
            counts = {
                "delivered": sum(histogram.values()),
                "requests": totals.num_requests,
                "failures": totals.num_failures,
                "connects": counters["connects"],
                "disconnects": counters["disconnects"],
            }
            deltas = {k: v - previous_counts.get(k, 0) for k, v in counts.items()}
            previous_counts = counts
            health = [r["health"][-1] for r in _WORKER_REPORTS.values() if r["health"]]
            line = {
                "t": round(time.time() - started, 1),
                "users": environment.runner.user_count if environment.runner else 0,
                "msgs_per_s": deltas["delivered"],
                "requests_per_s": deltas["requests"],
                "failures": counts["failures"],
                "connects_per_s": deltas["connects"],
                "disconnects_per_s": deltas["disconnects"],
                "p50_ms": _percentile(window, 0.50),
                "p95_ms": _percentile(window, 0.95),
                "p99_ms": _percentile(window, 0.99),
                "lost": counters["lost"],
                "duplicated": counters["duplicated"],
                "out_of_order": counters["out_of_order"],
                "worker_cpu_max": max((h[1] for h in health), default=None),
                "worker_lag_max_ms": max((h[2] for h in health), default=None),
            }
            out.write(json.dumps(line) + "\n")
            out.flush()


@events.quitting.add_listener
def _on_master_quitting(environment: Environment, **_: Any) -> None:
    """Master (or a single-process run): the final aggregated Locust figures."""
    if isinstance(environment.runner, WorkerRunner):
        return
    histogram = _delivery_histogram(environment)
    entries = []
    for (name, method), entry in environment.stats.entries.items():
        entries.append(
            {
                "type": method,
                "name": name,
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "avg_ms": round(entry.avg_response_time, 2),
                "p50_ms": entry.get_response_time_percentile(0.5),
                "p95_ms": entry.get_response_time_percentile(0.95),
                "p99_ms": entry.get_response_time_percentile(0.99),
                "max_ms": entry.max_response_time,
            }
        )
    errors = [
        {"type": e.method, "name": e.name, "error": str(e.error), "count": e.occurrences}
        for e in environment.stats.errors.values()
    ]
    summary = {
        "delivery": {
            "count": sum(histogram.values()),
            "p50_ms": _percentile(histogram, 0.50),
            "p95_ms": _percentile(histogram, 0.95),
            "p99_ms": _percentile(histogram, 0.99),
            "max_ms": max(histogram, default=None),
        },
        "entries": entries,
        "errors": errors[:50],
        "worker_reports": list(_WORKER_REPORTS.values()),
    }
    _write_json(OUT_DIR / "master.json", summary)
