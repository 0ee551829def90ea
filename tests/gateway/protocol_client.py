"""A WebSocket client for the IM gateway written only from docs/protocol.md.

It deliberately imports nothing from ``gateway/``: if it works, the document is enough to write
a client. It follows the client rules of the doc: the token in the Authorization header, sync
cursors in ``hello``, dedup and ordering by (conversation_id, seq), resend of unacknowledged
sends with the same client_msg_id (never of a send refused as ``invalid_text``), sync on holes
and on ``sync_required``, moving the cursor past announced in-doubt ranges (``gap`` frames and
``sync_batch.gaps``, protocol 2), reconnect after ``reconnect`` frames and lost connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake


def make_token(
    secret_file: Path, user: str, *, issuer: str, audience: str, ttl_s: int = 3600, **extra: Any
) -> str:
    """An HS256 access token for ``user`` (section 1.1)."""
    now = int(time.time())
    claims = {"sub": user, "iss": issuer, "aud": audience, "iat": now, "exp": now + ttl_s}
    claims.update(extra)
    return jwt.encode(claims, secret_file.read_text().strip(), algorithm="HS256")


def dm(a: str, b: str) -> str:
    """Section 2: the two user ids in ascending order."""
    low, high = sorted((a, b))
    return f"dm:{low}:{high}"


@dataclass
class Conversation:
    cursor: int = 0  # highest contiguous seq
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # seqs above cursor + 1
    gaps: list[tuple[int, int]] = field(default_factory=list)  # announced in-doubt ranges

    def advance(self) -> None:
        """Section 5.3/5.6: move the cursor over received seqs and announced gaps."""
        while True:
            if self.cursor + 1 in self.pending:
                self.cursor += 1
                del self.pending[self.cursor]
                continue
            covering = [high for low, high in self.gaps if low <= self.cursor + 1 <= high]
            if not covering:
                return
            self.cursor = max(covering)
            for seq in [s for s in self.pending if s <= self.cursor]:
                del self.pending[seq]


class ProtocolClient:
    """One device of one user. Call ``connect``; frames are read by a background task."""

    def __init__(
        self,
        urls: Sequence[str],
        user: str,
        device: str,
        token: Callable[[], str],
        *,
        auto_reconnect: bool = True,
    ) -> None:
        self.urls = list(urls)
        self.user = user
        self.device = device
        self.token = token
        self.auto_reconnect = auto_reconnect
        self.ws: ClientConnection | None = None
        self.node_id: str | None = None
        self.conversations: dict[str, Conversation] = {}
        self.messages: dict[tuple[str, int], dict[str, Any]] = {}  # deduped view
        self.by_message_id: dict[str, set[tuple[str, int]]] = {}
        self.live_per_connection: list[Counter[tuple[str, int]]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.unacked: dict[str, dict[str, Any]] = {}
        self.frames: list[dict[str, Any]] = []
        self.arrivals: list[tuple[float, str]] = []
        self.errors: list[dict[str, Any]] = []
        self.refused: dict[str, dict[str, Any]] = {}  # sends refused for good (invalid_text)
        self.receipts: list[dict[str, Any]] = []
        self.presence: dict[str, str] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.close_codes: list[int | None] = []
        self.reconnect_frames: list[dict[str, Any]] = []
        self.sync_done = asyncio.Event()
        self.connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._refs = itertools.count(1)
        self._changed = asyncio.Event()
        self._syncs: dict[str, dict[str, int]] = {}  # sync ref -> explicit cursors, until done

    # Connection ------------------------------------------------------------------------------

    async def connect(self, url: str | None = None, *, sync: bool = True) -> dict[str, Any]:
        """Open a session (section 1.2); returns the welcome frame once sync is done."""
        target = url or random.choice(self.urls)
        ws = await connect(
            target,
            additional_headers={"Authorization": f"Bearer {self.token()}"},
            max_size=2**20,
            compression=None,
            open_timeout=10,
        )
        try:
            return await self._open(ws, target, sync=sync)
        except BaseException:
            # Never leave a half-open session behind: it would keep receiving live frames
            # next to the session of the next attempt.
            if self.ws is ws:
                self.ws = None
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    async def _open(self, ws: ClientConnection, target: str, *, sync: bool) -> dict[str, Any]:
        ref = f"hello-{next(self._refs)}"
        hello: dict[str, Any] = {"op": "hello", "device_id": self.device, "ref": ref}
        if sync:
            hello["sync"] = {"cursors": {c: v.cursor for c, v in self.conversations.items()}}
        self.sync_done.clear()
        await ws.send(json.dumps(hello))
        try:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except TimeoutError:
            raise TimeoutError(f"{self.user}/{self.device}: no welcome from {target}") from None
        if welcome.get("op") != "welcome":
            raise ConnectionError(f"expected welcome from {target}, got {welcome}")
        self.ws = ws
        self.node_id = welcome["node_id"]
        self.live_per_connection.append(Counter())
        self._reader = asyncio.create_task(self._read(ws))
        if sync:
            # Section 1.2: sync_done follows, or an error carrying the hello's ref.
            def answered() -> bool:
                return self.sync_done.is_set() or self._error_for(ref) is not None

            await self.wait_until(answered, 30, f"sync_done after hello on {target}")
            error = self._error_for(ref)
            if error is not None and not self.sync_done.is_set():
                raise ConnectionError(f"sync at connect failed on {target}: {error}")
        self.connected.set()
        for frame in list(self.unacked.values()):  # section 5.2: resend what was not acked
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(frame))
        return welcome

    def _error_for(self, ref: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.errors) if e.get("ref") == ref), None)

    async def close(self) -> None:
        self._closing = True
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._on_frame(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)
            self.connected.clear()
            self._changed.set()
            if self.ws is ws and self.auto_reconnect and not self._closing:
                asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self.connect()
                return
            except (OSError, InvalidHandshake, ConnectionError, TimeoutError, ConnectionClosed):
                await asyncio.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 1.0)

    # Frames ------------------------------------------------------------------------------------

    def _on_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        self.arrivals.append((time.monotonic(), str(frame.get("op"))))
        handler = getattr(self, f"_on_{frame.get('op')}", None)
        if handler is not None:
            handler(frame)
        if "ref" in frame:
            self.replies[str(frame["ref"])] = frame
        self._changed.set()

    def _on_message(self, frame: dict[str, Any]) -> None:
        self.live_per_connection[-1][(frame["conversation_id"], frame["seq"])] += 1
        self._accept(frame)

    def _on_sync_batch(self, frame: dict[str, Any]) -> None:
        for low, high in frame.get("gaps", []):
            self._gap(frame["conversation_id"], low, high)
        for message in frame["messages"]:
            self._accept(message)

    def _on_gap(self, frame: dict[str, Any]) -> None:
        self._gap(frame["conversation_id"], frame["from"], frame["to"])

    def _gap(self, conversation_id: str, low: int, high: int) -> None:
        """Section 5.6: seqs low..high may never exist; a message inside may still come late."""
        state = self.conversations.setdefault(conversation_id, Conversation())
        state.gaps.append((low, high))
        state.advance()

    def announced_gaps(self, conversation_id: str) -> list[tuple[int, int]]:
        return list(self.conversations.get(conversation_id, Conversation()).gaps)

    def _on_sync_done(self, frame: dict[str, Any]) -> None:
        self._syncs.pop(str(frame.get("ref")), None)
        for conv, state in frame["conversations"].items():
            if not state["complete"]:  # section 4: ask for the rest
                asyncio.get_running_loop().create_task(self.sync({conv: state["last_seq"]}))
        self.sync_done.set()

    def _on_ack(self, frame: dict[str, Any]) -> None:
        self.acks[frame["client_msg_id"]] = frame
        self.unacked.pop(frame["client_msg_id"], None)

    def _on_error(self, frame: dict[str, Any]) -> None:
        self.errors.append(frame)
        # Section 7.3: rate_limited / unavailable had no effect, outcome_unknown perhaps had:
        # either way, resend the same send later (the same client_msg_id keeps it one message).
        ref = frame.get("ref")
        if frame["code"] == "invalid_text" and ref in self.unacked:
            # Section 7.3: the text itself is refused; resending it unchanged cannot succeed.
            self.refused[ref] = self.unacked.pop(ref)
        elif frame["code"] in ("rate_limited", "unavailable", "outcome_unknown") and (
            ref in self.unacked
        ):
            delay = 0.2 + random.random() * 0.3
            asyncio.get_running_loop().call_later(delay, self._resend, ref)
        elif frame["code"] == "unavailable" and ref in self._syncs:
            # The sync had no effect either: ask again later, or messages stay missing.
            cursors = self._syncs.pop(ref)
            delay = 0.2 + random.random() * 0.3
            asyncio.get_running_loop().call_later(delay, self._resync, cursors)

    def _resync(self, cursors: dict[str, int]) -> None:
        if not self._closing:
            asyncio.get_running_loop().create_task(self.sync(cursors))

    def _resend(self, client_msg_id: str) -> None:
        frame = self.unacked.get(client_msg_id)
        if frame is not None and self.ws is not None:
            asyncio.get_running_loop().create_task(self._send_quietly(frame))

    async def _send_quietly(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed, AssertionError):
            await self.send_frame(frame)

    def _on_receipt(self, frame: dict[str, Any]) -> None:
        self.receipts.append(frame)

    def _on_presence(self, frame: dict[str, Any]) -> None:
        self.presence.update(frame["statuses"])

    def _on_reconnect(self, frame: dict[str, Any]) -> None:
        self.reconnect_frames.append(frame)

    def _on_sync_required(self, frame: dict[str, Any]) -> None:
        asyncio.get_running_loop().create_task(self.sync())

    def _accept(self, message: dict[str, Any]) -> None:
        """Section 5.3: dedup by (conversation_id, seq), advance the contiguous cursor."""
        conv, seq = message["conversation_id"], message["seq"]
        state = self.conversations.setdefault(conv, Conversation())
        key = (conv, seq)
        if key in self.messages:
            return
        self.messages[key] = message
        self.by_message_id.setdefault(message["message_id"], set()).add(key)
        if seq <= state.cursor:
            return
        state.pending[seq] = message
        state.advance()

    # Requests ----------------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(frame))

    async def send(self, body: str, *, to: str | None = None, group: str | None = None) -> str:
        cmid = uuid.uuid4().hex
        frame: dict[str, Any] = {"op": "send", "client_msg_id": cmid, "body": body}
        if to is not None:
            frame["to"] = to
        else:
            frame["group_id"] = group
        self.unacked[cmid] = frame
        with contextlib.suppress(ConnectionClosed, AssertionError):
            await self.send_frame(frame)
        return cmid

    async def request(self, frame: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        ref = f"r{next(self._refs)}"
        await self.send_frame({**frame, "ref": ref})
        await self.wait_until(lambda: ref in self.replies, timeout, f"reply to {frame['op']}")
        return self.replies[ref]

    async def sync(self, cursors: dict[str, int] | None = None) -> None:
        all_cursors = {c: v.cursor for c, v in self.conversations.items()}
        all_cursors.update(cursors or {})
        ref = f"sync-{next(self._refs)}"
        self._syncs[ref] = dict(cursors or {})
        with contextlib.suppress(ConnectionClosed, AssertionError):
            await self.send_frame({"op": "sync", "cursors": all_cursors, "ref": ref})

    async def receipt(self, conversation_id: str, seq: int, kind: str = "delivered") -> None:
        await self.request(
            {"op": "receipt", "conversation_id": conversation_id, "seq": seq, "kind": kind}
        )

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.user}/{self.device}: timed out waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    # Views -------------------------------------------------------------------------------------

    def bodies(self, conversation_id: str) -> list[str]:
        """Bodies in seq order, as the user would see them."""
        keys = sorted(seq for conv, seq in self.messages if conv == conversation_id)
        return [self.messages[(conversation_id, seq)]["body"] for seq in keys]

    def duplicates_on_one_connection(self) -> list[tuple[str, int]]:
        return [key for live in self.live_per_connection for key, n in live.items() if n > 1]
