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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.sequencer import Fence, Gap

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 100  # rows per single-partition unlogged batch
# A logged batch (message rows + their message_seqs rows) stays under Cassandra's
# batch_size_fail_threshold (50 KiB by default): messages per batch, and body bytes per batch.
LOGGED_BATCH_MESSAGES = 16
LOGGED_BATCH_BYTES = 32 * 1024

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


def _write_params(record: MessageRecord) -> tuple[Any, ...]:
    """The message row's values and its write timestamp: the home's persisted_at, so a peer's
    relay that writes the same row into its own DC writes it identically (USING TIMESTAMP)."""
    return (*_params(record), record.persisted_at * 1000)


def _seq_params(record: MessageRecord) -> tuple[str, str, int, int, int]:
    return (
        record.conversation_id,
        record.message_id,
        record.seq,
        record.bucket,
        record.persisted_at * 1000,
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


@dataclass(frozen=True)
class CassandraAuth:
    """The role the driver logs in as (PasswordAuthenticator) and the CA it verifies the
    nodes' certificates with (client TLS). The password is read from its file once, never
    shown (repr)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def of(cls, config: Config) -> CassandraAuth:
        password = None
        if config.cassandra_password_file is not None:
            password = config.cassandra_password_file.read_text(encoding="utf-8").strip()
        return cls(
            username=config.cassandra_username or None,
            password=password,
            ca_file=str(config.cassandra_ca_file) if config.cassandra_ca_file else None,
        )

    def cluster_kwargs(self) -> dict[str, Any]:
        """``Cluster(...)`` arguments: an auth provider, and a TLS context that checks the
        node's certificate and its address (the driver passes the contact point's)."""
        out: dict[str, Any] = {}
        if self.username is not None:
            from cassandra.auth import PlainTextAuthProvider

            out["auth_provider"] = PlainTextAuthProvider(self.username, self.password or "")
        if self.ca_file is not None:
            import ssl

            context = ssl.create_default_context(cafile=self.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            out["ssl_context"] = context
        return out


class CassandraStore:
    def __init__(
        self,
        hosts: Sequence[tuple[str, int]],
        keyspace: str,
        bucket_s: int,
        auth: CassandraAuth | None = None,
    ) -> None:
        self._hosts = list(hosts)
        self._auth = auth or CassandraAuth()
        self.keyspace = keyspace
        self.bucket_s = bucket_s
        self._cluster: Any = None
        self._session: Any = None
        self._prepared: dict[str, Any] = {}

    @classmethod
    def of_config(cls, config: Config) -> CassandraStore:
        """The store a process's config names: contact points, keyspace, login and CA."""
        return cls(
            config.host_ports("cassandra_hosts"),
            config.cassandra_keyspace,
            config.cassandra_bucket_s,
            CassandraAuth.of(config),
        )

    @property
    def ready(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> Any:
        """The driver session (None until connected): the control keyspace's statements are
        prepared on it too (gateway.shardmap.ControlStore)."""
        return self._session

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
            **self._auth.cluster_kwargs(),
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
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
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
            "remove_user_conversation": f"DELETE FROM {ks}.user_conversations "
            "WHERE user_id = ? AND conversation_id = ?",
            "create_group": f"INSERT INTO {ks}.groups (group_id, created_by, created_at) "
            "VALUES (?, ?, ?) IF NOT EXISTS",
            "group_exists": f"SELECT group_id FROM {ks}.groups WHERE group_id = ?",
            "add_member": f"INSERT INTO {ks}.group_members (group_id, user_id, joined_at) "
            "VALUES (?, ?, ?)",
            "remove_member": f"DELETE FROM {ks}.group_members WHERE group_id = ? AND user_id = ?",
            "members": f"SELECT user_id FROM {ks}.group_members WHERE group_id = ?",
            # Seq fencing (0003_seq_fencing.cql, docs/multi-region.md section 5).
            "insert_message_seq": f"INSERT INTO {ks}.message_seqs "
            "(conversation_id, message_id, seq, bucket) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            "message_seqs": f"SELECT message_id, seq, bucket FROM {ks}.message_seqs "
            "WHERE conversation_id = ? AND message_id IN ?",
            "message_seqs_all": f"SELECT message_id, seq, bucket FROM {ks}.message_seqs "
            "WHERE conversation_id = ? AND message_id IN ?",
            "read_fence": f"SELECT epoch, writer, ceiling FROM {ks}.conversation_seq "
            "WHERE conversation_id = ?",
            "create_fence": f"INSERT INTO {ks}.conversation_seq "
            "(conversation_id, epoch, writer, ceiling) VALUES (?, ?, ?, ?) IF NOT EXISTS",
            "move_fence": f"UPDATE {ks}.conversation_seq SET epoch = ?, writer = ?, ceiling = ? "
            "WHERE conversation_id = ? IF epoch = ? AND writer = ? AND ceiling = ?",
            "record_gap": f"INSERT INTO {ks}.seq_gaps "
            "(conversation_id, low, high, writer, recorded_at) VALUES (?, ?, ?, ?, ?)",
            "gaps": f"SELECT low, high FROM {ks}.seq_gaps WHERE conversation_id = ?",
            "seqs_between": f"SELECT seq FROM {ks}.messages "
            "WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
            "shadow_seqs": f"DELETE FROM {ks}.messages USING TIMESTAMP ? "
            "WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
            "release": f"INSERT INTO {ks}.seq_releases (writer, released_at) VALUES (?, ?)",
            "released": f"SELECT writer FROM {ks}.seq_releases WHERE writer = ?",
        }
        self._prepared = {name: session.prepare(cql) for name, cql in statements.items()}
        from cassandra import ConsistencyLevel

        # The fence is read and moved by Paxos over every replica (SERIAL): a read completes
        # any round in progress, so nobody decides on a row a concurrent CAS is changing.
        self._prepared["read_fence"].consistency_level = ConsistencyLevel.SERIAL
        # Every replica in every DC: what a record stamped before a move is checked against
        # (the old home's last LOCAL_QUORUM writes may still be replicating).
        self._prepared["message_seqs_all"].consistency_level = ConsistencyLevel.ALL
        for name in ("create_fence", "move_fence"):
            self._prepared[name].serial_consistency_level = ConsistencyLevel.SERIAL

    async def _run(self, name: str, params: Sequence[Any]) -> Any:
        if self._session is None:
            raise ConnectionError("Cassandra is not connected yet")
        return await _await(self._session.execute_async(self._prepared[name], params))

    def bucket_of(self, epoch_s: float) -> int:
        return int(epoch_s // self.bucket_s)

    # Dispatcher writes ----------------------------------------------------------------------

    async def insert_messages(self, records: Iterable[MessageRecord]) -> None:
        """Write messages with their durable message id -> seq rows: per conversation, logged
        batches of message rows plus their ``message_seqs`` rows (atomic: either both or
        neither, so a seq found in message_seqs always has its message row, and a message row
        always has its id -> seq entry), all conversations concurrently.

        A message too large to share a batch under Cassandra's batch size limit is written in
        two steps, ``message_seqs`` first: a crash in between leaves an id -> seq entry without
        its row, and the redelivered record finds the entry and writes the row at that seq.
        """
        from cassandra.query import BatchStatement, BatchType

        if self._session is None:
            raise ConnectionError("Cassandra is not connected yet")
        insert = self._prepared["insert_message"]
        insert_seq = self._prepared["insert_message_seq"]
        by_conversation: dict[str, list[MessageRecord]] = {}
        for record in records:
            by_conversation.setdefault(record.conversation_id, []).append(record)
        requests: list[Any] = []
        sequential: list[MessageRecord] = []
        for rows in by_conversation.values():
            chunk: list[MessageRecord] = []
            size = 0
            for row in [*rows, None]:
                weight = len(row.body.encode()) if row is not None else 0
                if chunk and (
                    row is None
                    or len(chunk) >= LOGGED_BATCH_MESSAGES
                    or size + weight > LOGGED_BATCH_BYTES
                ):
                    batch = BatchStatement(batch_type=BatchType.LOGGED)
                    for item in chunk:
                        batch.add(insert, _write_params(item))
                        batch.add(insert_seq, _seq_params(item))
                    requests.append(self._session.execute_async(batch))
                    chunk, size = [], 0
                if row is None:
                    break
                if weight > LOGGED_BATCH_BYTES:
                    sequential.append(row)
                    continue
                chunk.append(row)
                size += weight
        await asyncio.gather(*(_await(request) for request in requests), self._two_step(sequential))

    async def _two_step(self, records: list[MessageRecord]) -> None:
        for record in records:
            await self._run("insert_message_seq", _seq_params(record))
            await self._run("insert_message", _write_params(record))

    async def message_seqs(
        self, conversation_id: str, message_ids: Sequence[str], *, everywhere: bool = False
    ) -> dict[str, tuple[int, int]]:
        """message id -> (seq, bucket) for those of ``message_ids`` that already have one;
        ``everywhere``: read every replica in every DC (fails while a DC is down)."""
        found: dict[str, tuple[int, int]] = {}
        statement = "message_seqs_all" if everywhere else "message_seqs"
        for start in range(0, len(message_ids), MAX_BATCH_ROWS):
            ids = list(message_ids[start : start + MAX_BATCH_ROWS])
            for row in await self._run(statement, (conversation_id, ids)):
                found[row.message_id] = (row.seq, row.bucket)
        return found

    # Seq fencing (gateway.sequencer.FenceStore) ------------------------------------------

    async def read_fence(self, conversation_id: str) -> Fence | None:
        from gateway.sequencer import Fence

        rows = await self._run("read_fence", (conversation_id,))
        if not rows:
            return None
        row = rows[0]
        return Fence(row.epoch, row.writer, row.ceiling)

    async def cas_fence(self, conversation_id: str, new: Fence, seen: Fence | None) -> bool:
        if seen is None:
            rows = await self._run("create_fence", (conversation_id, *new))
        else:
            rows = await self._run("move_fence", (*new, conversation_id, *seen))
        return bool(rows and rows[0][0])  # [applied]

    async def last_durable(self, conversation_id: str) -> tuple[int, int | None]:
        recent = await self.recent_ids(conversation_id, 1)
        if recent:
            return recent[0][0], recent[0][1]
        buckets = await self._run("buckets", (conversation_id, 1))
        return 0, (buckets[0].bucket if buckets else None)

    async def is_released(self, writer: str) -> bool:
        return bool(await self._run("released", (writer,)))

    async def release(self, writers: Iterable[str]) -> None:
        now = int(time.time() * 1000)
        await asyncio.gather(*(self._run("release", (w, now)) for w in writers))

    async def record_gap(self, gap: Gap, writer: str) -> None:
        now = int(time.time() * 1000)
        await self._run("record_gap", (gap.conversation_id, gap.low, gap.high, writer, now))

    async def shadow_in_doubt(self, gap: Gap, buckets: list[int]) -> set[int]:
        from gateway.sequencer import empty_runs

        conv = gap.conversation_id
        results = await asyncio.gather(
            *(self._run("seqs_between", (conv, b, gap.low, gap.high)) for b in buckets)
        )
        present = {row.seq for rows in results for row in rows}
        # Microseconds, like the message rows' own timestamps (persisted_at ms * 1000): every
        # write the old owner issued before the takeover is older.
        now_us = time.time_ns() // 1000
        await asyncio.gather(
            *(
                self._run("shadow_seqs", (now_us, conv, b, low, high))
                for b in buckets
                for low, high in empty_runs(gap.low, gap.high, present)
            )
        )
        return present

    async def gaps(self, conversation_id: str) -> list[tuple[int, int]]:
        """In-doubt ranges (low, high) of the conversation, by low."""
        return [(row.low, row.high) for row in await self._run("gaps", (conversation_id,))]

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

    async def remove_user_conversation(self, user_id: str, conversation_id: str) -> None:
        await self._run("remove_user_conversation", (user_id, conversation_id))

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
