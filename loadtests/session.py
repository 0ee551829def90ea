"""One simulated device's IM session on one connection: what a user asks the gateway and hears.

- connecting: the WebSocket upgrade with a freshly signed token, then ``hello`` (optionally with
  sync cursors, so a reconnect catches up) and the welcome;
- requests with ack tracking: every request carries a ``ref``; the ref remembers the Locust
  request type, name and start until its reply (ack, answer or error) comes back, so the
  latency recorded is request -> reply;
- sync: ``sync_batch`` frames feed the sequence tracker; the final sync after the sending window
  turns every message live delivery missed into a counted loss;
- live messages: sequence accounting (duplicates, reordering) and sender -> receiver latency
  from the send time stamped in the body, on the gateway's clock.

There is no Locust in here: what to record goes through ``record`` (reporting.recorder), and
waiting is reading the socket, so a session runs inside its user's greenlet.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import jwt

from loadtests.clock import ClockSync
from loadtests.imclient import Closed, ConnectError, ImConnection
from loadtests.tracking import SeqTracker
from opsctl.loadtest.placement import locality

# (request type, name, elapsed ms, error): a Locust request event. An empty type is not
# recorded (internal requests such as the clock ping).
Record = Callable[[str, str, float, BaseException | None], None]

REPLY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
SYNC_LIMIT = 10000  # messages per sync; more than any conversation gets in a run
TOKEN_TTL_S = 6 * 3600  # longer than any profile, so no token expires mid-run
DEVICE_ID = "lt"
# Resends of a send answered outcome_unknown (it may have been written) before giving up.
SEND_UNKNOWN_RESENDS = 3
GATEWAY_CLOCK_SAMPLES = 50  # enough pings to find a fast exchange; then stop asking


class Reply(Exception):
    """The gateway answered a request with an error frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = str(frame.get("code"))


class TokenSigner:
    """HS256 tokens for the simulated users; the secret file is read on first use.

    ``iss`` and ``aud`` go in whenever they are given: a gateway that checks them refuses a
    token without them (``bad_issuer``/``bad_audience``), one that does not ignores them.
    """

    def __init__(self, secret_file: Path, issuer: str | None, audience: str | None) -> None:
        self.secret_file = secret_file
        self.issuer = issuer
        self.audience = audience
        self._secret: str | None = None

    def __call__(self, user_id: str, ttl_s: int = TOKEN_TTL_S) -> str:
        if self._secret is None:
            self._secret = self.secret_file.read_text(encoding="utf-8").strip()
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, self._secret, algorithm="HS256")


@dataclass(kw_only=True, slots=True, eq=False)
class ImSession:
    """One device of one user. ``conn`` is None while disconnected.

    ``gateway_clock`` says whether this process estimates its clock offset by pinging the
    gateway (a single-process run); workers get theirs from the master instead.
    """

    url: str
    user_id: str
    sign: Callable[[str], str]
    counters: Counter[str]
    clock: ClockSync
    record: Record
    gateway_clock: bool = False
    # A profile's region mix: the region of ``url``, stamped on every send so that a receiver
    # can tell a cross-region delivery from a same-region one ("": no mix).
    region: str = ""
    # With a mix: (region, URL) to connect to in turn, own region first. A connect that fails
    # moves to the next one, and a request left without a reply ends the connection (a frozen
    # region's gateway keeps its sockets open but never answers; protocol 7.1: a dead
    # connection is reconnected), so the users of a region that is down move to another.
    routes: tuple[tuple[str, str], ...] = ()
    conn: ImConnection | None = field(default=None, init=False)
    tracker: SeqTracker = field(init=False)
    # ref -> (type, name, start)
    waiting: dict[str, tuple[str, str, float]] = field(default_factory=dict, init=False)
    replies: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    last_error_code: str | None = field(default=None, init=False)  # of the last request
    sync_done_refs: list[str] = field(default_factory=list, init=False)  # rarely more than one
    in_final_sync: bool = field(default=False, init=False)
    seq: int = field(default=0, init=False)  # numbers refs and client message ids
    # hello answered on the current connection
    established: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.tracker = SeqTracker(self.counters)

    # ---- connection --------------------------------------------------------------------

    def connect(self, *, sync: dict[str, Any] | None) -> bool:
        """Upgrade, hello and (with ``sync``) catch up; a failure is recorded, not raised."""
        started = time.perf_counter()
        conn = ImConnection(self.url, token=self.sign(self.user_id), timeout_s=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
            self.conn = conn
            hello: dict[str, Any] = {"op": "hello", "device_id": DEVICE_ID, "ref": "hello"}
            if sync is not None:
                hello["sync"] = {**sync, "limit": SYNC_LIMIT}
            conn.send(hello)
            self.waiting["hello"] = ("CONNECT", "hello", started)
            self.wait_reply("hello")
            if sync is not None:
                self.wait_sync("hello")
        except (ConnectError, Closed, Reply, TimeoutError) as exc:
            self.drop()
            self.waiting.pop("hello", None)
            self.record("CONNECT", "hello", (time.perf_counter() - started) * 1000, exc)
            self._next_route()
            return False
        self.counters["connects"] += 1
        self.established = True
        self._sample_gateway_clock()
        return True

    def _next_route(self) -> None:
        """The next (region, URL) to try, after one that did not answer."""
        if len(self.routes) < 2:
            return
        here = (self.region, self.url)
        at = self.routes.index(here) if here in self.routes else -1
        self.region, self.url = self.routes[(at + 1) % len(self.routes)]
        self.counters["region_failovers"] += 1

    def reconnect(self) -> bool:
        """Connect again, catching up from this device's cursors."""
        return self.connect(sync={"cursors": self.tracker.cursors()})

    def sever(self) -> None:
        """Cut the connection under the session (as an outage does): its own greenlet reads
        the end of the stream and handles it as a lost connection."""
        if self.conn is not None:
            self.conn.sever()

    def drop(self) -> None:
        self.established = False
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.counters["disconnects"] += 1

    def _sample_gateway_clock(self) -> None:
        """Without a master (single process), estimate the offset against the gateway."""
        if not self.gateway_clock or self.clock.samples >= GATEWAY_CLOCK_SAMPLES:
            return
        if self.conn is None:
            return
        sent = self.clock.local_ms()
        self.conn.send({"op": "ping", "ref": "clock"})
        self.waiting["clock"] = ("", "ping", time.perf_counter())
        pong = self.wait_reply("clock", record=False)
        self.clock.add_sample(sent, float(pong["server_time"]), self.clock.local_ms())

    # ---- requests ----------------------------------------------------------------------

    def request(self, frame: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
        """Send a frame and wait for its reply; failures are recorded, not raised."""
        if self.conn is None:
            return None
        self.seq += 1
        ref = f"r{self.seq}"
        frame["ref"] = ref
        self.waiting[ref] = (kind, name, time.perf_counter())
        self.last_error_code = None
        try:
            self.conn.send(frame)
            return self.wait_reply(ref)
        except Reply as reply:
            self.last_error_code = reply.code
            return None
        except (Closed, TimeoutError):
            return None

    def send(self, target: dict[str, str], name: str, padding: str) -> bool:
        """Send a text message (``to`` or ``group_id``) stamped with the send time; True if
        the gateway acknowledged it."""
        self.seq += 1
        frame = {
            "op": "send",
            "client_msg_id": f"{self.user_id}-{self.seq}",
            "body": f"{self.clock.now_ms():.1f}|{self.region}|{padding}"
            if self.region
            else f"{self.clock.now_ms():.1f}|{padding}",
            **target,
        }
        for attempt in range(SEND_UNKNOWN_RESENDS + 1):
            if self.request(frame, "SEND", name) is not None:
                self.counters["sent_acked"] += 1
                return True
            if self.last_error_code != "outcome_unknown":
                return False
            # Perhaps written (docs/protocol.md 5.2): resend it unchanged, with backoff, as a
            # client must. A real client never gives up; a load-test user moves on after a
            # few tries (only acked sends are checked for loss).
            self.counters["sent_outcome_unknown"] += 1
            gevent.sleep(0.5 * (attempt + 1))
        return False

    def create_group(self, group_id: str, members: list[str], attempts: int = 5) -> None:
        """Create ``group_id`` with ``members``; an existing group is fine, a busy backend is
        retried."""
        for attempt in range(attempts):
            self.seq += 1
            ref = f"g{self.seq}"
            frame = {"op": "group_create", "group_id": group_id, "members": members, "ref": ref}
            self.waiting[ref] = ("", "group_create", time.perf_counter())
            try:
                if self.conn is None:
                    return
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
        """After the sending window: fetch what live delivery missed (each one is lost)."""
        if self.conn is None and not self.reconnect():
            return
        assert self.conn is not None
        self.in_final_sync = True
        try:
            self.conn.send(
                {
                    "op": "sync",
                    "cursors": self.tracker.cursors(),
                    "limit": SYNC_LIMIT,
                    "ref": "final",
                }
            )
            self.wait_sync("final")
            self.counters["final_synced_users"] += 1
        except (Closed, TimeoutError):
            self.counters["final_sync_failed"] += 1
        finally:
            self.in_final_sync = False

    # ---- frames ------------------------------------------------------------------------

    def pump(self, seconds: float) -> None:
        """Read and handle frames for ``seconds`` (sleep them away while disconnected)."""
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
                return  # back to the user at once: it reconnects (with backoff) now
            for frame in frames:
                self.handle(frame)

    def wait_reply(self, ref: str, *, record: bool = True) -> dict[str, Any]:
        """Handle frames until the reply to ``ref`` arrives; raises Reply for an error frame,
        TimeoutError after REPLY_TIMEOUT_S, Closed if the connection goes."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while ref not in self.replies:
            if self.conn is None:
                raise Closed(None, "connection lost while waiting for a reply")
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = self.waiting.pop(ref, None)
                if waiting is not None and record and waiting[0]:
                    self.record(waiting[0], waiting[1], REPLY_TIMEOUT_S * 1000, TimeoutError(ref))
                if self.routes and ref != "hello":
                    self.counters["reply_timeout_disconnects"] += 1
                    self.drop()
                    self._next_route()
                raise TimeoutError(f"no reply to {ref} in {REPLY_TIMEOUT_S} s")
            self._read(left)
        reply = self.replies.pop(ref)
        if reply.get("op") == "error":
            raise Reply(reply)
        return reply

    def wait_sync(self, ref: str) -> None:
        """Handle frames until the sync started by ``ref`` is done."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while ref not in self.sync_done_refs:
            if self.conn is None or time.monotonic() > deadline:
                raise TimeoutError(f"no sync_done for {ref}")
            self._read(deadline - time.monotonic())
        self.sync_done_refs.remove(ref)

    def _read(self, timeout_s: float) -> None:
        assert self.conn is not None
        try:
            frames = self.conn.receive(timeout_s)
        except Closed as closed:
            self.on_closed(closed)
            raise
        for frame in frames:
            self.handle(frame)

    def on_closed(self, closed: Closed) -> None:
        """The gateway closed us: every request still waiting fails with the close."""
        self.drop()
        self.counters[f"closed_{closed.code}"] += 1
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
            for low, high in frame.get("gaps", ()):
                self.tracker.gap(conv, int(low), int(high))
        elif op == "gap":
            self.tracker.gap(frame["conversation_id"], int(frame["from"]), int(frame["to"]))
        elif op == "sync_done":
            self.sync_done_refs.append(str(frame.get("ref")))
        elif op == "sync_required":
            self.counters["sync_required"] += 1
        elif op == "reconnect":
            self.counters["drain_reconnects"] += 1
        ref = frame.get("ref")
        if ref is not None and op != "sync_done":
            ref = str(ref)
            waiting = self.waiting.pop(ref, None)
            if waiting is not None:
                kind, name, started = waiting
                error = Reply(frame) if op == "error" else None
                if kind:
                    self.record(kind, name, (time.perf_counter() - started) * 1000, error)
                self.replies[ref] = frame

    def on_message(self, frame: dict[str, Any]) -> None:
        conv = frame["conversation_id"]
        if not self.tracker.live(conv, int(frame["seq"])):
            return
        if frame.get("from") == self.user_id:
            return  # own echo: counted for sequence, not for sender -> receiver latency
        parts = str(frame.get("body", "")).split("|", 2)
        try:
            sent_ms = float(parts[0])
        except ValueError:
            return
        latency = self.clock.now_ms() - sent_ms
        if latency < 0:
            self.counters["negative_latency"] += 1
            latency = 0.0
        name = str(frame.get("kind", "dm"))
        if self.region and len(parts) == 3 and parts[1]:
            # Sender's region (stamped in the body) against ours now: "dm/cross", "group/same".
            name = f"{name}/{locality(parts[1], self.region)}"
        self.record("DELIVER", name, latency, None)


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 5.0) -> float:
    """Reconnect backoff: exponential from ``base_s`` up to ``cap_s``, with +-50 % jitter."""
    return float(min(base_s * 2**attempt, cap_s)) * random.uniform(0.5, 1.5)
