"""Per-conversation seqs from blocks reserved under a fence (docs/multi-region.md, 5.1-5.4).

Pure logic over a small async store (``FenceStore``; Cassandra in production, a dict in the unit
tests). Redis plays no part: a Redis failover that loses writes cannot make a seq go backwards.

The fence row ``conversation_seq(conversation_id) epoch, writer, ceiling`` says who may hand out
seqs of a conversation and up to which seq it has reserved. It changes only by compare-and-set
(a lightweight transaction at SERIAL), so of two dispatchers racing for it exactly one wins, and
a dispatcher whose view is stale (a zombie: SIGSTOP'd, partitions given to another member, then
SIGCONT'd) fails its next reservation and stops sequencing the conversation.

The writer token is ``<region>:<consumer generation>:<owner>``, the owner being the partition
(unit tests, the first slice) or the dispatcher's group member (``m`` + a hash of its Kafka
member id: with the mirrored topics one conversation arrives through several topic-partitions,
all of one member). Kafka gives every rebalance a new, higher generation, so within a region a
higher generation always wins, and the same generation with another owner means one
conversation reached two members (a partition count that differs between topics): refused,
see ``Fenced``.

The fence's ``epoch`` is the shard epoch (gateway.shardmap): a row with a newer epoch than the
caller's map is refused (re-read the map); a row with an older one was written by the shard's
previous home, so the caller starts above its ceiling and records the rest as in doubt: a moved
shard never reuses a seq, whether the old home drained first or vanished.

How a new owner starts (``_seed``):

* no row: the conversation is new (or from before this table: its last seq is read from the
  messages table); reserve ``last + 1 ..``;
* the previous writer left a release marker (a graceful revoke or shutdown, written only once
  every write of that writer was durable): continue at the last durable seq + 1, no gap;
* no marker (crash, SIGKILL, a frozen process): start above the old ceiling. Seqs between the
  last durable one and that ceiling are **in doubt**: the old owner may have used some of them,
  and, if it is a zombie, still may. They are recorded as a gap (``record_gap``) *before* any
  seq above them is handed out, never reused, and announced to clients.

A zombie's writes can also arrive late: issued just before it froze, they sat in its driver's
buffers and go out when it wakes, seconds after the takeover. Under load that window is not
microseconds (test_fencing caught one: a message with two seqs). So, in the same region, the new
owner also **shadows** the in-doubt range (``shadow_in_doubt``): of its seqs, those without a
message row now are deleted with a tombstone timestamped now. Every write of the old owner
carries an older timestamp (its batch's persisted_at), so a late row there stays invisible
whenever it lands; and such a seq found in ``message_seqs`` later is void (``is_void``): the
message gets a new seq, whose entry (newer) wins over the late one. Rows that exist at the
takeover were durable before it and are kept. Not across regions (a moved shard): the previous
home's durable rows may still be replicating into this DC, and a tombstone would delete them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)

# The shard epoch of a conversation whose shard never moved (gateway.shardmap).
EPOCH = 0
FIRST_BLOCK = 8
MAX_BLOCK = 1024
HOT_S = 1.0  # a block used up faster than this doubles the next one
SEED_ATTEMPTS = 5


class Fence(NamedTuple):
    """One ``conversation_seq`` row."""

    epoch: int
    writer: str
    ceiling: int


class Gap(NamedTuple):
    """An in-doubt range of one conversation, both ends included."""

    conversation_id: str
    low: int
    high: int


class Writer(NamedTuple):
    region: str
    generation: int
    partition: int | str  # the owner: a partition, or a group member ('m<hash>')

    @property
    def token(self) -> str:
        return f"{self.region}:{self.generation}:{self.partition}"

    @classmethod
    def parse(cls, token: str) -> Writer | None:
        try:
            region, generation, owner = token.split(":")
            return cls(region, int(generation), int(owner) if owner.isdigit() else owner)
        except ValueError:
            return None


class Fenced(Exception):
    """This dispatcher may not sequence the conversation (any more): another writer holds the
    fence with a newer epoch or generation, or took it over while we held it."""

    def __init__(self, conversation_id: str, why: str, *, newer_epoch: bool = False) -> None:
        super().__init__(f"{conversation_id}: {why}")
        self.conversation_id = conversation_id
        self.newer_epoch = newer_epoch  # our shard map is stale: re-read it


class NotOwner(Exception):
    """No partition assignment is current (between a revoke and the next assignment)."""


class FenceStore(Protocol):
    async def read_fence(self, conversation_id: str) -> Fence | None:
        """The row, read at SERIAL (completes any Paxos round in progress)."""

    async def cas_fence(self, conversation_id: str, new: Fence, seen: Fence | None) -> bool:
        """Set the row to ``new`` if it still is ``seen`` (None: if it does not exist)."""

    async def last_durable(self, conversation_id: str) -> tuple[int, int | None]:
        """(highest seq in the messages table or 0, its newest bucket or None), LOCAL_QUORUM."""

    async def is_released(self, writer: str) -> bool:
        """Whether ``writer`` left a release marker."""

    async def record_gap(self, gap: Gap, writer: str) -> None:
        """Record an in-doubt range durably."""

    async def shadow_in_doubt(self, gap: Gap, buckets: list[int]) -> set[int]:
        """Tombstone, timestamped now, every seq of ``gap`` with no message row in ``buckets``
        (so an older write that lands there later stays invisible); the seqs that have one."""


def empty_runs(low: int, high: int, present: set[int]) -> list[tuple[int, int]]:
    """The maximal runs of seqs in ``low..high`` (both included) not in ``present``."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for n in range(low, high + 2):
        empty = n <= high and n not in present
        if empty and start is None:
            start = n
        elif not empty and start is not None:
            runs.append((start, n - 1))
            start = None
    return runs


@dataclass(slots=True)
class _Conversation:
    fence: Fence  # the row as we last wrote it
    next: int  # the next seq to hand out
    block: int  # size of the next reservation
    bucket: int  # message partition in use: never decreases
    reserved_at: float
    pending: asyncio.Task[None] | None = None  # a reservation made ahead of need
    # In-doubt seqs with no message row at the takeover, shadowed: nothing may be read there.
    void: frozenset[int] = frozenset()
    # A CAS whose outcome we do not know (timeout): the row is either ``fence`` or this.
    uncertain: Fence | None = None
    fenced: bool = False

    @property
    def ceiling(self) -> int:
        return self.fence.ceiling


@dataclass(slots=True)
class Taken:
    seqs: list[int]
    bucket: int
    gap: Gap | None = None


@dataclass
class Sequencer:
    store: FenceStore
    region: str
    clock: Callable[[], float] = time.monotonic
    on_refusal: Callable[[str], None] = lambda conversation_id: None
    generation: int | None = None  # the consumer generation of the current assignment
    _state: dict[str, _Conversation] = field(default_factory=dict)

    # Ownership -------------------------------------------------------------------------------

    def assigned(self, generation: int) -> None:
        """A new assignment: every token of the previous generation is dead."""
        self.revoked()
        self.generation = generation

    def revoked(self) -> None:
        """Forget every block. What a previous generation reserved and did not use stays
        reserved: the next owner either finds our release marker (and continues at the last
        durable seq) or treats the rest as in doubt. Never reuse it ourselves."""
        self.generation = None
        for state in self._state.values():
            if state.pending is not None:
                state.pending.cancel()
        self._state.clear()

    def writer(self, partition: int | str) -> Writer:
        if self.generation is None:
            raise NotOwner("no current partition assignment")
        return Writer(self.region, self.generation, partition)

    def forget(self, conversation_id: str) -> None:
        state = self._state.pop(conversation_id, None)
        if state is not None and state.pending is not None:
            state.pending.cancel()

    def is_void(self, conversation_id: str, seq: int) -> bool:
        """``seq`` was shadowed when this owner took the conversation over: a ``message_seqs``
        entry pointing there is a zombie's late write, not a seq the message has."""
        state = self._state.get(conversation_id)
        return state is not None and seq in state.void

    # Taking seqs -----------------------------------------------------------------------------

    async def prepare(
        self, conversation_id: str, partition: int | str, bucket_now: int, epoch: int = EPOCH
    ) -> Gap | None:
        """Take the conversation over now, if not done yet in this generation: before its
        records' seqs are looked up, so a zombie's late write cannot slip in between the
        lookup and the shadowing. Returns the in-doubt range found (announce it)."""
        state = self._current(conversation_id, self.writer(partition), epoch)
        if state is not None:
            return None
        _, gap = await self._seed(conversation_id, self.writer(partition), bucket_now, epoch)
        return gap

    def _current(self, conversation_id: str, me: Writer, epoch: int) -> _Conversation | None:
        state = self._state.get(conversation_id)
        if state is not None and (state.fence.writer != me.token or state.fence.epoch != epoch):
            self.forget(conversation_id)  # another owner's or another epoch's block: stale
            state = None
        return state

    async def take(
        self,
        conversation_id: str,
        partition: int | str,
        n: int,
        bucket_now: int,
        epoch: int = EPOCH,
    ) -> Taken:
        """``n`` consecutive new seqs of the conversation, in order, with the bucket to write
        them in, and the in-doubt range this owner found when it took the conversation over
        (recorded durably before this returns; announce it before the first seq). ``epoch``:
        the conversation's shard epoch in the caller's map."""
        me = self.writer(partition)
        gap: Gap | None = None
        state = self._current(conversation_id, me, epoch)
        if state is None:
            state, gap = await self._seed(conversation_id, me, bucket_now, epoch)
        if state.fenced:
            raise Fenced(conversation_id, "fenced earlier in this generation")
        if state.pending is not None:
            # The reservation made ahead of need: wait for it, so two CAS of ours never race
            # (the loser would look like a fencing refusal).
            pending, state.pending = state.pending, None
            await asyncio.gather(pending, return_exceptions=True)
            if state.fenced:
                raise Fenced(conversation_id, "reservation refused")
        if state.uncertain is not None:
            await self._settle(conversation_id, state)
        shortfall = state.next + n - 1 - state.ceiling
        if shortfall > 0:
            await self._extend(conversation_id, state, shortfall)
        seqs = list(range(state.next, state.next + n))
        state.next += n
        state.bucket = max(state.bucket, bucket_now)
        remaining = state.ceiling - state.next + 1
        if remaining < state.block // 2 and state.pending is None:
            state.pending = asyncio.ensure_future(self._ahead(conversation_id, state))
        return Taken(seqs, state.bucket, gap)

    async def _ahead(self, conversation_id: str, state: _Conversation) -> None:
        """Reserve the next block before it is needed, off the batch's critical path."""
        try:
            await self._extend(conversation_id, state, 0)
        except Fenced:
            pass  # state.fenced is set: the next take() raises
        except Exception as exc:  # a timeout: take() settles the row or retries inline
            log.debug("reservation ahead for %s failed: %r", conversation_id, exc)

    async def _extend(self, conversation_id: str, state: _Conversation, shortfall: int) -> None:
        now = self.clock()
        if now - state.reserved_at < HOT_S:
            state.block = min(state.block * 2, MAX_BLOCK)
        size = max(state.block, shortfall)
        new = state.fence._replace(ceiling=state.fence.ceiling + size)
        try:
            applied = await self.store.cas_fence(conversation_id, new, state.fence)
        except Exception:
            # A timed-out LWT may still be applied later: until a SERIAL read says which, the
            # row is either the old fence or ``new``; take() settles it first.
            state.uncertain = new
            raise
        if not applied:
            # Somebody changed the row since we wrote it: a newer owner took the conversation
            # (we are the zombie). Stop sequencing it; the seqs we still hold stay unused.
            state.fenced = True
            self.on_refusal(conversation_id)
            raise Fenced(conversation_id, "reservation refused: the fence moved")
        state.fence = new
        state.reserved_at = now

    async def _settle(self, conversation_id: str, state: _Conversation) -> None:
        row = await self.store.read_fence(conversation_id)
        if row is not None and row == state.uncertain:
            state.fence = row
            state.reserved_at = self.clock()
        elif row != state.fence:
            state.fenced = True
            self.on_refusal(conversation_id)
            raise Fenced(conversation_id, "the fence moved while our reservation was in doubt")
        state.uncertain = None

    async def _seed(
        self, conversation_id: str, me: Writer, bucket_now: int, epoch: int = EPOCH
    ) -> tuple[_Conversation, Gap | None]:
        for _attempt in range(SEED_ATTEMPTS):
            # Order matters: the fence first (SERIAL), then the last durable seq. A zombie that
            # writes between the two reads writes inside its own reserved block, which is
            # either below ``last`` (then durable, seen) or in the in-doubt range.
            row = await self.store.read_fence(conversation_id)
            last, last_bucket = await self.store.last_durable(conversation_id)
            bucket = max(bucket_now, last_bucket or 0)
            start, gap, shadow = await self._start(conversation_id, row, last, me, epoch)
            new = Fence(epoch, me.token, start - 1 + FIRST_BLOCK)
            if not await self.store.cas_fence(conversation_id, new, row):
                continue  # somebody else moved it meanwhile: look again
            if gap is not None:
                # Durable before any seq above the range is used: a client that sees the hole
                # can always be told why. If we die right here, the next owner's range covers
                # this one (it starts from the same last durable seq up to our ceiling).
                await self.store.record_gap(gap, me.token)
                log.warning(
                    "%s: took over from %s without a release marker; seqs %d..%d in doubt",
                    conversation_id,
                    row.writer if row else "?",
                    gap.low,
                    gap.high,
                )
            void: frozenset[int] = frozenset()
            if gap is not None and shadow:
                # After the CAS: the old owner cannot reserve past gap.high any more. Its rows
                # go to the bucket it was using: the newest durable one or, since, today's.
                buckets = sorted(
                    {b for b in (last_bucket, bucket_now - 1, bucket_now) if b is not None}
                )
                present = await self.store.shadow_in_doubt(gap, buckets)
                void = frozenset(range(gap.low, gap.high + 1)) - present
            state = _Conversation(new, start, FIRST_BLOCK, bucket, self.clock(), void=void)
            self._state[conversation_id] = state
            return state, gap
        raise RuntimeError(f"{conversation_id}: the fence kept moving; giving up this batch")

    async def _start(
        self, conversation_id: str, row: Fence | None, last: int, me: Writer, epoch: int
    ) -> tuple[int, Gap | None, bool]:
        """Where a new owner starts: (first seq, the in-doubt range, whether to shadow it:
        same region, no release marker, so the old owner may still write late)."""
        above = Gap(conversation_id, last + 1, row.ceiling) if row and row.ceiling > last else None
        if row is None:
            return last + 1, None, False
        if row.epoch < epoch:
            # The shard moved here since the row was written: the previous home's block may
            # have been used in writes not visible here yet (planned or not), so start above
            # it; what is not durable here is in doubt (not shadowed: it may be replicating).
            return max(row.ceiling, last) + 1, above, False
        self._check_may_take(conversation_id, row, me, epoch)
        if row.writer != me.token and await self.store.is_released(row.writer):
            return last + 1, None, False  # a graceful handover: continue, no gap
        # A crash, or our own token without state: a seed of ours that failed after its CAS
        # (state is kept for as long as the token is valid). We handed out nothing under it,
        # but the previous owner's range is no longer known: all of it up to our ceiling is in
        # doubt again, and shadowed again.
        return max(row.ceiling, last) + 1, above, True

    def _check_may_take(
        self, conversation_id: str, row: Fence, me: Writer, epoch: int = EPOCH
    ) -> None:
        if row.epoch > epoch:
            self.on_refusal(conversation_id)
            raise Fenced(
                conversation_id, f"epoch {row.epoch} is newer than ours ({epoch})", newer_epoch=True
            )
        other = Writer.parse(row.writer)
        if other is None or other.region != me.region:
            self._refuse(conversation_id, f"held by {row.writer!r} of another region")
        assert other is not None
        if other.generation > me.generation:
            self._refuse(conversation_id, f"held by {row.writer} of a newer generation")
        if other.generation == me.generation and other.partition != me.partition:
            # One conversation reached two owners of one generation: a topic's partition count
            # changed, or differs between the own and a mirrored topic.
            self._refuse(conversation_id, f"held by {row.writer}: partition count changed?")

    def _refuse(self, conversation_id: str, why: str) -> None:
        self.on_refusal(conversation_id)
        raise Fenced(conversation_id, why)
