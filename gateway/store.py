"""Cassandra access shared by the gateway (sync reads, groups) and the dispatcher (writes).

The driver runs its own I/O thread; ``_await`` bridges its ResponseFuture into asyncio without
blocking the event loop. Connecting is blocking, so callers run ``connect`` in a thread.
"""

# Heavy client libraries are imported where first used, so the process listens fast.

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 100  # rows per single-partition unlogged batch

# Columns of the messages table, in the order of MessageRecord.
MESSAGE_COLUMNS = (
    "conversation_id, bucket, seq, message_id, sender, sender_device, client_msg_id, "
    "kind, recipient, group_id, body, accepted_at, persisted_at"
)


@dataclass(slots=True)
class MessageRecord:
    conversation_id: str
    bucket: int
    seq: int
    message_id: str
    sender: str
    sender_device: str
    client_msg_id: str
    kind: str  # dm | group
    recipient: str | None
    group_id: str | None
    body: str
    accepted_at: int  # ms since epoch, gateway clock
    persisted_at: int  # ms since epoch, dispatcher clock

    def client_view(self) -> dict[str, Any]:
        """The message as clients see it (the ``message`` frame minus ``op``)."""
        view: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "message_id": self.message_id,
            "from": self.sender,
            "device_id": self.sender_device,
            "client_msg_id": self.client_msg_id,
            "kind": self.kind,
            "body": self.body,
            "accepted_at": self.accepted_at,
        }
        if self.recipient is not None:
            view["to"] = self.recipient
        if self.group_id is not None:
            view["group_id"] = self.group_id
        return view


# The insert's values in MESSAGE_COLUMNS order (the fields are named as the columns).
_params: Callable[[MessageRecord], tuple[Any, ...]] = operator.attrgetter(
    *MESSAGE_COLUMNS.split(", ")
)


def _await(response_future: Any) -> asyncio.Future[Any]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def _ok(rows: Any) -> None:
        loop.call_soon_threadsafe(_settle, future, rows, None)

    def _err(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, future, None, exc)

    response_future.add_callbacks(_ok, _err)
    return future


def _settle(future: asyncio.Future[Any], rows: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(rows)


class CassandraStore:
    def __init__(self, hosts: Sequence[tuple[str, int]], keyspace: str, bucket_s: int) -> None:
        self._hosts = list(hosts)
        self.keyspace = keyspace
        self.bucket_s = bucket_s
        self._cluster: Any = None
        self._session: Any = None
        self._prepared: dict[str, Any] = {}

    @property
    def ready(self) -> bool:
        return self._session is not None

    def connect(self, *, keyspace: bool = True, timeout_s: float = 10.0) -> Any:
        """Blocking: connect and prepare statements. Returns the session."""
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            request_timeout=timeout_s,
        )
        from cassandra import ConsistencyLevel

        profile.consistency_level = ConsistencyLevel.LOCAL_QUORUM
        cluster = Cluster(
            contact_points=self._hosts,
            port=self._hosts[0][1],
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            protocol_version=5,
            connect_timeout=timeout_s,
            control_connection_timeout=timeout_s,
        )
        session = cluster.connect()
        self._cluster = cluster
        if keyspace:
            self._prepare(session)
        self._session = session
        return session

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = self._session = None

    def _prepare(self, session: Any) -> None:
        ks = self.keyspace  # qualified names: no USE <keyspace> with prepared statements
        statements = {
            "insert_message": f"INSERT INTO {ks}.messages ({MESSAGE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            "insert_bucket": f"INSERT INTO {ks}.conversation_buckets (conversation_id, bucket) "
            "VALUES (?, ?)",
            "buckets": f"SELECT bucket FROM {ks}.conversation_buckets "
            "WHERE conversation_id = ? LIMIT ?",
            "first_seq": f"SELECT seq FROM {ks}.messages "
            "WHERE conversation_id = ? AND bucket = ? LIMIT 1",
            "read_after": f"SELECT {MESSAGE_COLUMNS} FROM {ks}.messages "
            "WHERE conversation_id = ? AND bucket = ? AND seq > ? LIMIT ?",
            "recent_ids": f"SELECT seq, message_id FROM {ks}.messages "
            "WHERE conversation_id = ? AND bucket = ? ORDER BY seq DESC LIMIT ?",
            "insert_user_conversation": f"INSERT INTO {ks}.user_conversations "
            "(user_id, conversation_id) VALUES (?, ?)",
            "user_conversations": f"SELECT conversation_id FROM {ks}.user_conversations "
            "WHERE user_id = ?",
            "create_group": f"INSERT INTO {ks}.groups (group_id, created_by, created_at) "
            "VALUES (?, ?, ?) IF NOT EXISTS",
            "group_exists": f"SELECT group_id FROM {ks}.groups WHERE group_id = ?",
            "add_member": f"INSERT INTO {ks}.group_members (group_id, user_id, joined_at) "
            "VALUES (?, ?, ?)",
            "remove_member": f"DELETE FROM {ks}.group_members WHERE group_id = ? AND user_id = ?",
            "members": f"SELECT user_id FROM {ks}.group_members WHERE group_id = ?",
        }
        self._prepared = {name: session.prepare(cql) for name, cql in statements.items()}

    async def _run(self, name: str, params: Sequence[Any]) -> Any:
        if self._session is None:
            raise ConnectionError("Cassandra is not connected yet")
        return await _await(self._session.execute_async(self._prepared[name], params))

    def bucket_of(self, epoch_s: float) -> int:
        return int(epoch_s // self.bucket_s)

    # Dispatcher writes ----------------------------------------------------------------------

    async def insert_messages(self, records: Iterable[MessageRecord]) -> None:
        """One request per partition: an unlogged batch when a partition got several messages
        (atomic and cheap within a partition), all partitions concurrently."""
        from cassandra.query import BatchStatement, BatchType

        if self._session is None:
            raise ConnectionError("Cassandra is not connected yet")
        statement = self._prepared["insert_message"]
        partitions: dict[tuple[str, int], list[MessageRecord]] = {}
        for record in records:
            partitions.setdefault((record.conversation_id, record.bucket), []).append(record)
        requests = []
        for rows in partitions.values():
            for start in range(0, len(rows), MAX_BATCH_ROWS):
                chunk = rows[start : start + MAX_BATCH_ROWS]
                if len(chunk) == 1:
                    requests.append(self._session.execute_async(statement, _params(chunk[0])))
                    continue
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for row in chunk:
                    batch.add(statement, _params(row))
                requests.append(self._session.execute_async(batch))
        await asyncio.gather(*(_await(request) for request in requests))

    async def add_buckets(self, pairs: Iterable[tuple[str, int]]) -> None:
        await asyncio.gather(*(self._run("insert_bucket", pair) for pair in pairs))

    async def add_user_conversations(self, pairs: Iterable[tuple[str, str]]) -> None:
        await asyncio.gather(*(self._run("insert_user_conversation", pair) for pair in pairs))

    # Reads -----------------------------------------------------------------------------------

    async def read_after(
        self, conversation_id: str, after_seq: int, limit: int
    ) -> list[MessageRecord]:
        """Messages with seq > after_seq in seq order, at most ``limit``.

        Buckets hold increasing seq ranges; walk back from the newest bucket until one starts
        at or before after_seq + 1, then read forward.
        """
        buckets = [row.bucket for row in await self._run("buckets", (conversation_id, 1000))]
        wanted: list[int] = []
        for bucket in buckets:  # newest first
            wanted.append(bucket)
            first = await self._run("first_seq", (conversation_id, bucket))
            if first and first[0].seq <= after_seq + 1:
                break
        out: list[MessageRecord] = []
        for bucket in reversed(wanted):
            if len(out) >= limit:
                break
            rows = await self._run(
                "read_after", (conversation_id, bucket, after_seq, limit - len(out))
            )
            out.extend(MessageRecord(*row) for row in rows)
        out.sort(key=lambda r: r.seq)
        return out[:limit]

    async def recent_ids(self, conversation_id: str, limit: int) -> list[tuple[int, int, str]]:
        """(seq, bucket, message_id) of the newest messages, newest first (two newest buckets)."""
        buckets = [row.bucket for row in await self._run("buckets", (conversation_id, 2))]
        out: list[tuple[int, int, str]] = []
        for bucket in buckets:
            rows = await self._run("recent_ids", (conversation_id, bucket, limit))
            out.extend((row.seq, bucket, row.message_id) for row in rows)
        out.sort(reverse=True)
        return out[:limit]

    async def user_conversations(self, user_id: str) -> list[str]:
        return [row.conversation_id for row in await self._run("user_conversations", (user_id,))]

    # Groups ------------------------------------------------------------------------------------

    async def create_group(self, group_id: str, creator: str, members: Iterable[str]) -> bool:
        now = int(time.time() * 1000)
        rows = await self._run("create_group", (group_id, creator, now))
        if not rows or not rows[0][0]:  # [applied]
            return False
        everyone = dict.fromkeys([creator, *members])
        await asyncio.gather(*(self._run("add_member", (group_id, u, now)) for u in everyone))
        return True

    async def group_exists(self, group_id: str) -> bool:
        return bool(await self._run("group_exists", (group_id,)))

    async def add_member(self, group_id: str, user_id: str) -> None:
        await self._run("add_member", (group_id, user_id, int(time.time() * 1000)))

    async def remove_member(self, group_id: str, user_id: str) -> None:
        await self._run("remove_member", (group_id, user_id))

    async def members(self, group_id: str) -> list[str]:
        return [row.user_id for row in await self._run("members", (group_id,))]


async def close_store(store: CassandraStore, timeout_s: float = 1.0) -> None:
    """Shut the driver down without letting a slow shutdown hold up process exit."""
    from gateway.runtime import in_daemon_thread

    try:
        await asyncio.wait_for(in_daemon_thread(store.close), timeout_s)
    except Exception as exc:
        log.debug("cassandra shutdown: %r", exc)
