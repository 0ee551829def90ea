"""Block reservation and fencing (gateway.sequencer) over an in-memory fence store.

The store's CAS is exact (what Cassandra's LWT at SERIAL gives): the integration tests in
test_fencing.py run the same logic against the real Cassandra, with real processes killed.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from gateway.sequencer import (
    FIRST_BLOCK,
    MAX_BLOCK,
    Fence,
    Fenced,
    Gap,
    NotOwner,
    Sequencer,
    Writer,
    empty_runs,
)

pytestmark = pytest.mark.unit


class FakeFences:
    def __init__(self) -> None:
        self.rows: dict[str, Fence] = {}
        self.last: dict[str, int] = {}
        self.released: set[str] = set()
        self.gaps: list[tuple[Gap, str]] = []
        self.cas_calls = 0
        self.fail_next_cas_after_apply = False
        self.rows_at: dict[str, set[int]] = {}  # seqs with a message row
        self.shadowed: list[tuple[Gap, list[int], set[int]]] = []  # (gap, buckets, empty seqs)
        self.fail_next_shadow = False

    async def read_fence(self, conversation_id: str) -> Fence | None:
        return self.rows.get(conversation_id)

    async def cas_fence(self, conversation_id: str, new: Fence, seen: Fence | None) -> bool:
        self.cas_calls += 1
        await asyncio.sleep(0)
        if self.rows.get(conversation_id) != seen:
            return False
        self.rows[conversation_id] = new
        if self.fail_next_cas_after_apply:
            self.fail_next_cas_after_apply = False
            raise TimeoutError("CAS write timeout (applied)")
        return True

    async def last_durable(self, conversation_id: str) -> tuple[int, int | None]:
        return self.last.get(conversation_id, 0), None

    async def is_released(self, writer: str) -> bool:
        return writer in self.released

    async def record_gap(self, gap: Gap, writer: str) -> None:
        self.gaps.append((gap, writer))

    async def shadow_in_doubt(self, gap: Gap, buckets: list[int]) -> set[int]:
        if self.fail_next_shadow:
            self.fail_next_shadow = False
            raise TimeoutError("tombstone write timed out")
        rows = self.rows_at.get(gap.conversation_id, set())
        present = {n for n in range(gap.low, gap.high + 1) if n in rows}
        self.shadowed.append((gap, buckets, set(range(gap.low, gap.high + 1)) - present))
        return present


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sequencer(store: FakeFences, generation: int = 1, clock: Clock | None = None) -> Sequencer:
    refusals: list[str] = []
    seq = Sequencer(store, "local", clock=clock or Clock(), on_refusal=refusals.append)
    seq.assigned(generation)
    seq.refusals = refusals  # type: ignore[attr-defined]
    return seq


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_new_conversation_starts_at_one_with_a_first_block() -> None:
    async def main() -> None:
        store = FakeFences()
        s = sequencer(store)
        got = await s.take("c", 0, 3, bucket_now=5)
        assert (got.seqs, got.gap, got.bucket) == ([1, 2, 3], None, 5)
        assert store.rows["c"] == Fence(0, "local:1:0", FIRST_BLOCK)
        assert (await s.take("c", 0, 2, 5)).seqs == [4, 5]

    run(main())


def test_blocks_double_for_hot_conversations_up_to_the_cap() -> None:
    async def main() -> None:
        store = FakeFences()
        s = sequencer(store)
        taken = 0
        for _ in range(400):
            got = await s.take("hot", 0, 10, 1)
            assert got.seqs == list(range(taken + 1, taken + 11))
            taken += 10
        ceiling = store.rows["hot"].ceiling
        # Few reservations for 4000 seqs, and the block never beyond the cap.
        assert store.cas_calls < 20
        # At most a block reserved ahead on top of less than half a block left.
        assert ceiling - taken < MAX_BLOCK + MAX_BLOCK // 2

    run(main())


def test_cold_conversation_keeps_small_blocks() -> None:
    async def main() -> None:
        store, clock = FakeFences(), Clock()
        s = sequencer(store, clock=clock)
        for _ in range(40):
            clock.now += 10  # one message every 10 s
            await s.take("dm", 0, 1, 1)
        assert store.rows["dm"].ceiling - 40 <= 2 * FIRST_BLOCK

    run(main())


def test_reservation_ahead_keeps_a_batch_off_the_lwt() -> None:
    async def main() -> None:
        store = FakeFences()
        s = sequencer(store)
        await s.take("c", 0, FIRST_BLOCK - 1, 1)  # leaves 1 < block/2: reserve ahead
        await asyncio.sleep(0.01)
        calls = store.cas_calls
        await s.take("c", 0, 2, 1)
        assert store.cas_calls == calls  # served from the block reserved ahead

    run(main())


def test_graceful_handover_continues_without_a_gap() -> None:
    async def main() -> None:
        store = FakeFences()
        old = sequencer(store, generation=1)
        await old.take("c", 0, 3, 1)
        store.last["c"] = 3
        store.released.add("local:1:0")  # the revoke callback's marker
        new = sequencer(store, generation=2)
        got = await new.take("c", 0, 1, 1)
        assert (got.seqs, got.gap, store.gaps) == ([4], None, [])

    run(main())


def test_crash_handover_starts_above_the_ceiling_and_records_the_gap_first() -> None:
    async def main() -> None:
        store = FakeFences()
        old = sequencer(store, generation=1)
        await old.take("c", 0, 3, 1)
        store.last["c"] = 2  # seq 3 was assigned but never became durable (SIGKILL)
        ceiling = store.rows["c"].ceiling
        new = sequencer(store, generation=2)
        got = await new.take("c", 0, 1, 1)
        assert got.seqs == [ceiling + 1]
        assert got.gap == Gap("c", 3, ceiling)
        assert store.gaps == [(Gap("c", 3, ceiling), "local:2:0")]

    run(main())


def test_zombie_is_refused_and_stops_sequencing() -> None:
    async def main() -> None:
        store = FakeFences()
        zombie = sequencer(store, generation=1)
        await zombie.take("c", 0, FIRST_BLOCK, 1)  # its block is used up
        new = sequencer(store, generation=2)
        taken = await new.take("c", 0, 1, 1)
        with pytest.raises(Fenced):
            await zombie.take("c", 0, 1, 1)  # needs a new block: the CAS fails
        assert zombie.refusals == ["c"]  # type: ignore[attr-defined]
        with pytest.raises(Fenced):
            await zombie.take("c", 0, 1, 1)  # and stays fenced
        assert store.rows["c"].writer == "local:2:0"
        assert taken.seqs[0] > FIRST_BLOCK

    run(main())


def test_a_stale_generation_never_takes_a_conversation_over() -> None:
    async def main() -> None:
        store = FakeFences()
        await sequencer(store, generation=5).take("c", 0, 1, 1)
        stale = sequencer(store, generation=4)
        with pytest.raises(Fenced, match="newer generation"):
            await stale.take("c", 0, 1, 1)
        store.rows["x"] = Fence(0, "local:4:1", 8)
        same_gen_other_partition = sequencer(store, generation=4)
        with pytest.raises(Fenced, match="partition count"):
            await same_gen_other_partition.take("x", 0, 1, 1)
        store.rows["e"] = Fence(3, "local:1:0", 8)
        with pytest.raises(Fenced, match="epoch"):
            await sequencer(store, generation=9).take("e", 0, 1, 1)

    run(main())


def test_a_timed_out_reservation_is_settled_by_a_serial_read() -> None:
    async def main() -> None:
        store = FakeFences()
        s = sequencer(store)
        store.fail_next_cas_after_apply = True
        with pytest.raises(TimeoutError):
            await s.take("c", 0, 1, 1)  # the first CAS landed, its answer was lost
        # Our own token without state: nothing of it was handed out, but what a previous owner
        # held is unknown now, so all of it up to our ceiling is in doubt.
        got = await s.take("c", 0, 1, 1)
        assert got.seqs == [FIRST_BLOCK + 1]
        assert got.gap == Gap("c", 1, FIRST_BLOCK)
        await s.take("c", 0, FIRST_BLOCK - 1, 1)  # uses the block up: reserves ahead...
        store.fail_next_cas_after_apply = True  # ...and that CAS times out after applying
        await asyncio.sleep(0.01)
        got = await s.take("c", 0, 1, 1)  # a SERIAL read settles it: adopted, same numbering
        assert got.seqs == [2 * FIRST_BLOCK + 1]
        assert not store.fail_next_cas_after_apply  # the timeout did happen
        assert s.refusals == []  # type: ignore[attr-defined]

    run(main())


def test_no_assignment_no_seqs() -> None:
    async def main() -> None:
        s = sequencer(FakeFences())
        s.revoked()
        with pytest.raises(NotOwner):
            await s.take("c", 0, 1, 1)

    run(main())


def test_many_owners_in_turn_never_reuse_a_seq() -> None:
    """Alternate clean and unclean handovers; every seq handed out is unique and every hole
    is inside a recorded gap."""

    async def main() -> None:
        store = FakeFences()
        handed: list[int] = []
        for generation in range(1, 30):
            s = sequencer(store, generation=generation)
            for _ in range(generation % 4 + 1):
                handed += (await s.take("c", 0, generation % 3 + 1, 1)).seqs
            durable = handed[: len(handed) - (generation % 2)]  # odd: the last one lost
            store.last["c"] = max(durable)
            if generation % 3 == 0:
                store.released.add(f"local:{generation}:0")
            handed = durable
        assert len(handed) == len(set(handed))
        covered = {n for gap, _ in store.gaps for n in range(gap.low, gap.high + 1)}
        holes = set(range(1, max(handed) + 1)) - set(handed)
        assert holes <= covered

    run(main())


def test_writer_token_round_trip() -> None:
    w = Writer("eu-central", 12, 3)
    assert Writer.parse(w.token) == w
    assert Writer.parse("garbage") is None


def test_aiokafka_still_exposes_what_the_fence_reads() -> None:
    """The dispatcher reads the consumer generation and wraps the heartbeat of aiokafka's
    private group coordinator: a new aiokafka without them must fail here, not in production."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    assert inspect.iscoroutinefunction(GroupCoordinator._do_heartbeat)
    assert "self.generation" in inspect.getsource(GroupCoordinator.__init__)


def test_a_crash_handover_shadows_the_empty_in_doubt_seqs_and_keeps_the_durable_ones() -> None:
    """A frozen owner's writes may land after the takeover: the empty seqs of its range are
    tombstoned, and a message found at one of them later is void (gets a new seq)."""

    async def main() -> None:
        store = FakeFences()
        old = sequencer(store, generation=1)
        await old.take("c", 0, 5, 7)
        ceiling = store.rows["c"].ceiling
        store.last["c"] = 2
        store.rows_at["c"] = {1, 2, 4}  # 4 landed after the last-durable read: kept
        new = sequencer(store, generation=2)
        gap = await new.prepare("c", 0, 7)
        assert gap == Gap("c", 3, ceiling)
        assert store.gaps == [(gap, "local:2:0")]  # recorded before it is shadowed
        [(shadowed_gap, buckets, empty)] = store.shadowed
        assert shadowed_gap == gap
        assert buckets == [6, 7]  # yesterday's and today's
        assert empty == set(range(3, ceiling + 1)) - {4}
        assert [new.is_void("c", n) for n in (2, 3, 4, 5)] == [False, True, False, True]
        assert await new.prepare("c", 0, 7) is None  # taken over once per generation
        got = await new.take("c", 0, 1, 7)
        assert got.seqs == [ceiling + 1]
        assert got.gap is None  # announced by prepare

    run(main())


def test_no_shadow_after_a_graceful_handover_or_when_the_shard_moved_from_another_region() -> None:
    async def main() -> None:
        store = FakeFences()
        await sequencer(store, generation=1).take("c", 0, 2, 1)
        store.last["c"] = 2
        store.released.add("local:1:0")
        assert await sequencer(store, generation=2).prepare("c", 0, 1) is None
        # A moved shard: the previous home's rows may still be replicating here.
        await sequencer(store, generation=3).take("d", 0, 3, 1)
        store.last["d"] = 1
        gap = await sequencer(store, generation=4).prepare("d", 0, 1, epoch=1)
        assert gap is not None
        assert gap.low == 2
        assert store.shadowed == []

    run(main())


def test_a_takeover_that_failed_after_its_cas_is_in_doubt_again_on_the_retry() -> None:
    """Our own token without state: the previous range is unknown now, so everything up to
    our ceiling is in doubt and shadowed (before, the retry started at last + 1: it could
    reuse a seq the frozen owner was about to write)."""

    async def main() -> None:
        store = FakeFences()
        await sequencer(store, generation=1).take("c", 0, 3, 1)
        store.last["c"] = 1
        new = sequencer(store, generation=2)
        store.fail_next_shadow = True
        with pytest.raises(TimeoutError):
            await new.prepare("c", 0, 1)
        ours = store.rows["c"]
        assert ours.writer == "local:2:0"
        gap = await new.prepare("c", 0, 1)
        assert gap == Gap("c", 2, ours.ceiling)
        got = await new.take("c", 0, 1, 1)
        assert got.seqs == [ours.ceiling + 1]
        assert new.is_void("c", 3)

    run(main())


def test_empty_runs() -> None:
    assert empty_runs(3, 9, {4, 5, 8}) == [(3, 3), (6, 7), (9, 9)]
    assert empty_runs(1, 3, set()) == [(1, 3)]
    assert empty_runs(1, 2, {1, 2}) == []
