"""The drill's probe: a few users whose every message is accounted for by id.

Locust's users make the load; their accounting is by sequence number, which cannot see an
acknowledged message that never got a seq. The probe can: pairs of users, two devices each
(first on different gateways, then reconnecting to any), send to each other all through the
drill. Each device follows the client rules of docs/protocol.md (resend what was not acked,
sync from its cursors on connect, on ``sync_required`` and after a hole, move past announced
in-doubt ranges); at the end every device syncs once more and the acked ids are compared with
what each member device holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from opsctl.drill._model import Accounting

SEND_INTERVAL_S = 0.1  # per sender; four senders: ~40 probe messages/s
PAIRS = 2
CONNECT_TIMEOUT_S = 10.0
TOKEN_TTL_S = 3600
RETRY_ERRORS = ("rate_limited", "unavailable")
SYNC_ROUND_S = 10.0


def dm(a: str, b: str) -> str:
    """docs/protocol.md 2: a DM's conversation id, the two user ids in ascending order."""
    low, high = sorted((a, b))
    return f"dm:{low}:{high}"


@dataclass
class Credentials:
    secret_file: Path
    issuer: str
    audience: str

    def token(self, user: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
        }
        secret = self.secret_file.read_text(encoding="utf-8").strip()
        return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class _Conversation:
    cursor: int = 0
    pending: set[int] = field(default_factory=set)
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def advance(self) -> None:
        while True:
            if self.cursor + 1 in self.pending:
                self.cursor += 1
                self.pending.discard(self.cursor)
                continue
            covering = [high for low, high in self.gaps if low <= self.cursor + 1 <= high]
            if not covering:
                return
            self.cursor = max(covering)
            self.pending = {s for s in self.pending if s > self.cursor}


@dataclass(frozen=True)
class Keepalive:
    """How a device notices a connection that went silent: WebSocket pings (the library's
    defaults: 20 s), and how long a connect may take. A region drill shortens both, so that
    devices of a frozen region (whose sockets stay open) move to another region in seconds."""

    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    open_timeout_s: float = CONNECT_TIMEOUT_S


class Device:
    """One device of one user; a background task reads its frames and reconnects it.

    ``routes``: the URLs to connect to in turn (its own region's first); a connect that fails
    moves on to the next, and the device stays where it last connected. Without routes it
    reconnects to any of ``urls``."""

    def __init__(
        self,
        urls: list[str],
        user: str,
        device: str,
        token: Callable[[], str],
        *,
        routes: list[str] | None = None,
        keepalive: Keepalive | None = None,
    ) -> None:
        self.urls = urls
        self.routes = routes or []
        self.route_at = 0
        self.keepalive = keepalive or Keepalive()
        self.user = user
        self.device = device
        self.token = token
        self.ws: ClientConnection | None = None
        self.conversations: dict[str, _Conversation] = {}
        self.ids: dict[str, set[int]] = {}  # message id -> seqs it came under
        self.seqs: set[tuple[str, int]] = set()
        self.live: list[Counter[tuple[str, int]]] = []  # per connection
        self.last_live: list[dict[str, int]] = []  # per connection: conversation -> last seq
        self.reordered = 0
        self.unacked: dict[str, dict[str, Any]] = {}
        self.acked: dict[str, tuple[str, float]] = {}  # cmid -> (message id, sent at)
        self.acked_at: dict[str, float] = {}  # message id -> when the ack came (monotonic)
        self.sent_at: dict[str, float] = {}
        self.connected = asyncio.Event()
        self.closing = False
        self._sync_done: set[str] = set()
        self._open_syncs: set[str] = set()  # sent, no sync_done yet
        self._refs = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ref(self, kind: str) -> str:
        self._refs += 1
        return f"{kind}-{self._refs}"

    def _target(self) -> str:
        if self.routes:
            return self.routes[self.route_at % len(self.routes)]
        return random.choice(self.urls)

    async def connect(self, url: str | None = None) -> None:
        target = url or self._target()
        keepalive = self.keepalive
        ws = await connect(
            target,
            additional_headers={"Authorization": f"Bearer {self.token()}"},
            max_size=2**22,
            compression=None,
            open_timeout=keepalive.open_timeout_s,
            ping_interval=keepalive.ping_interval_s,
            ping_timeout=keepalive.ping_timeout_s,
        )
        try:
            ref = self._ref("hello")
            cursors = {c: v.cursor for c, v in self.conversations.items()}
            await ws.send(
                json.dumps(
                    {
                        "op": "hello",
                        "device_id": self.device,
                        "ref": ref,
                        "sync": {"cursors": cursors},
                    }
                )
            )
            welcome = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
            if welcome.get("op") != "welcome":
                raise ConnectionError(f"no welcome from {target}: {welcome}")
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        self.ws = ws
        self._open_syncs.clear()  # those went out on the old connection; hello syncs again
        self.live.append(Counter())
        self.last_live.append({})
        self._spawn(self._read(ws))
        self.connected.set()
        for frame in list(self.unacked.values()):  # resend what was not acknowledged
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(frame))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._on_frame(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            if self.ws is ws:
                self.ws = None
                self.connected.clear()
                if not self.closing:
                    self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self.closing:
            try:
                await self.connect()
                return
            except (OSError, InvalidHandshake, InvalidURI, ConnectionError, TimeoutError):
                self.route_at += 1  # with routes: the next region's gateway
                await asyncio.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 1.0)
            except ConnectionClosed:
                await asyncio.sleep(delay)

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # frames -------------------------------------------------------------------------------

    def _on_frame(self, frame: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{frame.get('op')}", None)
        if handler is not None:
            handler(frame)

    def _on_message(self, frame: dict[str, Any]) -> None:
        key = (frame["conversation_id"], int(frame["seq"]))
        self.live[-1][key] += 1
        last = self.last_live[-1].get(key[0], 0)
        if key[1] < last:
            self.reordered += 1
        self.last_live[-1][key[0]] = max(last, key[1])
        self._accept(frame)

    def _on_sync_batch(self, frame: dict[str, Any]) -> None:
        conv = frame["conversation_id"]
        for low, high in frame.get("gaps", ()):
            self._gap(conv, int(low), int(high))
        for message in frame["messages"]:
            self._accept({**message, "conversation_id": conv})

    def _on_gap(self, frame: dict[str, Any]) -> None:
        self._gap(frame["conversation_id"], int(frame["from"]), int(frame["to"]))

    def _on_sync_done(self, frame: dict[str, Any]) -> None:
        self._sync_done.add(str(frame.get("ref")))
        self._open_syncs.discard(str(frame.get("ref")))
        for conv, status in frame.get("conversations", {}).items():
            if not status.get("complete", True):
                self._spawn(self.sync({conv: int(status["last_seq"])}))

    def _on_sync_required(self, frame: dict[str, Any]) -> None:
        self._spawn(self.sync())

    def _on_ack(self, frame: dict[str, Any]) -> None:
        cmid = frame["client_msg_id"]
        self.unacked.pop(cmid, None)
        self.acked.setdefault(cmid, (frame["message_id"], self.sent_at.get(cmid, 0.0)))
        self.acked_at.setdefault(frame["message_id"], time.monotonic())

    def _on_error(self, frame: dict[str, Any]) -> None:
        """Protocol 7.3: rate_limited / unavailable had no effect; the same frame again later."""
        ref = frame.get("ref")
        if frame.get("code") not in RETRY_ERRORS:
            return
        later = 0.2 + random.random() * 0.3
        if ref in self.unacked:
            asyncio.get_running_loop().call_later(later, self._resend, ref)
        elif str(ref).startswith("sync-"):
            self._open_syncs.discard(str(ref))  # refused: no sync_done will come
            asyncio.get_running_loop().call_later(later, self._resync)

    def _accept(self, message: dict[str, Any]) -> None:
        conv, seq = message["conversation_id"], int(message["seq"])
        key = (conv, seq)
        if key in self.seqs:
            return
        self.seqs.add(key)
        self.ids.setdefault(message["message_id"], set()).add(seq)
        state = self.conversations.setdefault(conv, _Conversation())
        if seq > state.cursor:
            state.pending.add(seq)
            before = state.cursor
            state.advance()
            if state.pending and state.cursor == before and min(state.pending) > state.cursor + 1:
                self._spawn(self.sync())  # a hole: fetch it (protocol 5.3)

    def _gap(self, conv: str, low: int, high: int) -> None:
        state = self.conversations.setdefault(conv, _Conversation())
        if (low, high) not in state.gaps:
            state.gaps.append((low, high))
        state.advance()

    def _resync(self) -> None:
        if not self.closing:
            self._spawn(self.sync())

    def _resend(self, cmid: str) -> None:
        frame = self.unacked.get(cmid)
        if frame is not None and not self.closing:
            self._spawn(self._send_frame(frame))

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        ws = self.ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(frame))

    # requests -----------------------------------------------------------------------------

    async def send(self, to: str, body: str) -> None:
        cmid = uuid.uuid4().hex
        frame = {"op": "send", "client_msg_id": cmid, "body": body, "to": to, "ref": cmid}
        self.unacked[cmid] = frame
        self.sent_at[cmid] = time.monotonic()
        await self._send_frame(frame)

    async def sync(self, cursors: dict[str, int] | None = None) -> str:
        ref = self._ref("sync")
        merged = {c: v.cursor for c, v in self.conversations.items()}
        merged.update(cursors or {})
        self._open_syncs.add(ref)
        await self._send_frame({"op": "sync", "cursors": merged, "ref": ref})
        return ref

    async def final_sync(self, timeout_s: float) -> bool:
        """Sync from the cursors and wait for its sync_done; False if it never came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.connected.is_set():
                await asyncio.sleep(0.1)
                continue
            ref = await self.sync()
            until = min(deadline, time.monotonic() + 5)
            while time.monotonic() < until and ref not in self._sync_done:
                await asyncio.sleep(0.05)
            if ref in self._sync_done:
                # The follow-up syncs of incomplete conversations (protocol 4) must end too.
                while self._open_syncs and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                return not self._open_syncs
        return False

    def duplicates(self) -> int:
        live = sum(n - 1 for counts in self.live for n in counts.values() if n > 1)
        return live + sum(len(seqs) - 1 for seqs in self.ids.values() if len(seqs) > 1)


@dataclass
class _Pair:
    conv: str
    a: list[Device]
    b: list[Device]

    @property
    def devices(self) -> list[Device]:
        return self.a + self.b


@dataclass(frozen=True)
class Placement:
    """Where a region drill puts the probe: each pair's two users, and per device (a0, a1,
    b0, b1) the URLs it connects to in turn (its region's gateway first)."""

    users: list[tuple[str, str]]
    routes: list[list[list[str]]]  # pair -> device -> URLs
    keepalive: Keepalive
    send_interval_s: float = SEND_INTERVAL_S


class Probe:
    """``PAIRS`` pairs of users, two devices each; ``start``, ``fresh_delivered``, ``finish``.
    ``placement`` (a region drill) names the users and where each device connects."""

    def __init__(
        self,
        urls: list[str],
        credentials: Credentials,
        suffix: str,
        placement: Placement | None = None,
    ) -> None:
        self.urls = urls
        self.placement = placement
        self.pairs: list[_Pair] = []
        pairs = (
            placement.users
            if placement
            else [(f"drill-a{i}-{suffix}", f"drill-b{i}-{suffix}") for i in range(PAIRS)]
        )
        for i, (a, b) in enumerate(pairs):
            routes = placement.routes[i] if placement else [[] for _ in range(4)]
            keepalive = placement.keepalive if placement else None
            devices = {
                user: [
                    Device(
                        urls,
                        user,
                        f"dev{k}",
                        functools.partial(credentials.token, user),
                        routes=routes[2 * u + k],
                        keepalive=keepalive,
                    )
                    for k in range(2)
                ]
                for u, user in enumerate((a, b))
            }
            self.pairs.append(_Pair(dm(a, b), devices[a], devices[b]))
        self._stop = asyncio.Event()
        self._senders: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for pair in self.pairs:
            for index, device in enumerate(pair.devices):
                first = None if device.routes else self.urls[index % len(self.urls)]
                await device.connect(first)
        for pair in self.pairs:
            self._senders.append(asyncio.create_task(self._send(pair.a[0], pair.b[0].user)))
            self._senders.append(asyncio.create_task(self._send(pair.b[1], pair.a[1].user)))

    async def _send(self, device: Device, to: str) -> None:
        i = 0
        while not self._stop.is_set():
            if device.connected.is_set():
                await device.send(to, f"{device.user}#{i}")
                i += 1
            await asyncio.sleep(
                self.placement.send_interval_s if self.placement else SEND_INTERVAL_S
            )

    def fresh_delivered(self, since: float, pairs: list[int] | None = None) -> bool:
        """A message sent after ``since`` (monotonic) is acked and on every member device
        (of one of ``pairs``, by index; default any)."""
        for index, pair in enumerate(self.pairs):
            if pairs is not None and index not in pairs:
                continue
            for device in (pair.a[0], pair.b[1]):
                for message_id, sent in device.acked.values():
                    if sent > since and all(message_id in d.ids for d in pair.devices):
                        return True
        return False

    async def stop_sending(self, ack_timeout_s: float) -> None:
        self._stop.set()
        for task in self._senders:
            await task
        deadline = time.monotonic() + ack_timeout_s
        while time.monotonic() < deadline and any(d.unacked for p in self.pairs for d in p.devices):
            await asyncio.sleep(0.1)

    async def finish(self, settle_s: float) -> Accounting:
        """Wait up to ``settle_s`` for every acked message to reach every device (a restarted
        dispatcher may still be catching up), syncing every few seconds as a client would;
        then one last sync and the accounting. Closes every device."""
        devices = [d for p in self.pairs for d in p.devices]
        try:
            deadline = time.monotonic() + settle_s
            while self.accounting().lost and time.monotonic() < deadline:
                await asyncio.gather(*(d.final_sync(SYNC_ROUND_S) for d in devices))
                await asyncio.sleep(1.0)
            await asyncio.gather(*(d.final_sync(SYNC_ROUND_S) for d in devices))
            return self.accounting()
        finally:
            await self.close()

    async def close(self) -> None:
        self._stop.set()
        for task in self._senders:
            task.cancel()
        for pair in self.pairs:
            for device in pair.devices:
                await device.close()

    def acked_times(self) -> dict[str, tuple[str, float]]:
        """Every acked message id -> (its conversation, when the ack came, monotonic)."""
        return {
            mid: (pair.conv, at)
            for pair in self.pairs
            for device in pair.devices
            for mid, at in device.acked_at.items()
        }

    def lost_details(self, limit: int = 50) -> list[dict[str, Any]]:
        """For the report: each lost message (up to ``limit``), where it is and where not, and
        the in-doubt ranges each device was told of."""
        details: list[dict[str, Any]] = []
        for pair in self.pairs:
            ids = {mid for d in pair.devices for mid, _ in d.acked.values()}
            for mid in sorted(ids):
                missing = [f"{d.user}/{d.device}" for d in pair.devices if mid not in d.ids]
                if not missing or len(details) >= limit:
                    continue
                seqs = sorted({s for d in pair.devices for s in d.ids.get(mid, ())})
                details.append(
                    {
                        "message_id": mid,
                        "conversation": pair.conv,
                        "seqs": seqs,
                        "missing_on": missing,
                        "gaps": {
                            f"{d.user}/{d.device}": d.conversations.get(
                                pair.conv, _Conversation()
                            ).gaps
                            for d in pair.devices
                        },
                    }
                )
        return details

    def accounting(self) -> Accounting:
        acked = delivered = lost = duplicated = reordered = unacked = 0
        for pair in self.pairs:
            ids = {mid for d in pair.devices for mid, _ in d.acked.values()}
            acked += len(ids)
            everywhere = {mid for mid in ids if all(mid in d.ids for d in pair.devices)}
            delivered += len(everywhere)
            lost += len(ids - everywhere)
            duplicated += sum(d.duplicates() for d in pair.devices)
            reordered += sum(d.reordered for d in pair.devices)
            unacked += sum(len(d.unacked) for d in pair.devices)
        return Accounting(acked, delivered, lost, duplicated, reordered, unacked)
