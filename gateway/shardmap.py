"""The shard map: which region homes each of the 4096 shards, at which epoch (docs/multi-region.md
sections 2, 5.5 and 7), and the operations that change it.

Three layers, top to bottom:

* **The model** (pure): ``ShardMap`` (map epoch, the regions its first homes are rendezvous
  over, and a row per shard that ever moved or changed state), ``decide`` (what a dispatcher
  does with one record: sequence, hold, skip, or re-read the map first) and the move plans
  (``evacuation_plan``, ``restore_plan``).
* **The store** (``ControlStore``): the control keyspace (``IMGW_CASSANDRA_CONTROL_KEYSPACE``,
  default ``im_control``): ``shard_map`` (one partition: the map epoch and regions as static
  columns, a row per shard that differs from its rendezvous home at epoch 0), ``held_records``
  and ``dispatcher_epochs``. The map changes only by a conditional batch on that one partition
  (``IF map_epoch = <seen>``, SERIAL), so every change is one Paxos round, atomic, and bumps the
  map epoch by exactly one.
* **The operations** the later ``opsctl region evacuate/restore`` call: ``drain``,
  ``wait_released``, ``move``, ``evacuate``, ``restore``, ``reconcile``; and a CLI,
  ``python -m gateway.shardmap show|init|drain|move|evacuate|restore|held|reconcile``, which
  prints JSON on stdout (progress on stderr) and exits 0 done, 1 failed/timed out, 2 bad input.

Why a shard without a row is "rendezvous home at epoch 0, active": initialising 4096 rows by
LWT would cost seconds on every fresh stack; one static row (epoch 0 and the region list) is
one LWT, and a shard gets a row the first time it moves.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import functools
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.homes import SHARDS, home_of, ranked, shard_of

log = logging.getLogger("gateway.shardmap")

MAP_NAME = "im"  # the partition of shard_map: one map per deployment
ACTIVE = "active"
DRAINING = "draining"
STATES = (ACTIVE, DRAINING)
# How a shard got its current home: the first rendezvous home, a planned move (the old home
# stopped and acknowledged first) or an unplanned one (the old home may still hold writes).
INITIAL = "initial"
PLANNED = "planned"
UNPLANNED = "unplanned"

REFRESH_S = 2.0  # dispatchers and gateways re-read the map this often
# A dispatcher issues no write with a map older than this (its last successful SERIAL read and
# epoch report): a region cut off from the Paxos majority stops sequencing by itself.
MAP_LEASE_S = 6.0
MOVE_CHUNK = 256  # shard rows per conditional batch (stays under the batch size limit)


# The model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One shard: its home, the map epoch at which it last changed home (the fencing epoch of
    its conversations), its state and how it got there."""

    home: str
    epoch: int = 0
    state: str = ACTIVE
    moved: str = INITIAL


@functools.lru_cache(maxsize=16)
def _rendezvous(regions: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(home_of(shard, regions) for shard in range(SHARDS))


@dataclass(frozen=True)
class ShardMap:
    epoch: int
    regions: tuple[str, ...]
    rows: Mapping[int, Entry] = field(default_factory=dict)

    def entry(self, shard: int) -> Entry:
        row = self.rows.get(shard)
        if row is not None:
            return row
        return Entry(_rendezvous(self.regions)[shard])

    def entry_of(self, conversation_id: str) -> Entry:
        return self.entry(shard_of(conversation_id))

    def homed_in(self, region: str) -> list[int]:
        return [s for s in range(SHARDS) if self.entry(s).home == region]

    def share(self) -> dict[str, int]:
        """Shards homed per region (every region of the map listed, 0 included)."""
        out = dict.fromkeys(self.regions, 0)
        for shard in range(SHARDS):
            home = self.entry(shard).home
            out[home] = out.get(home, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        draining = sorted(s for s, e in self.rows.items() if e.state == DRAINING)
        return {
            "epoch": self.epoch,
            "regions": list(self.regions),
            "homes": self.share(),
            "moved": len([e for e in self.rows.values() if e.moved != INITIAL]),
            "draining": draining,
        }


class Decision(enum.Enum):
    SEQUENCE = "sequence"  # homed here: sequence (message_seqs lookup first, as always)
    # Homed here after an unplanned move, record stamped before it: reuse a seq found in
    # message_seqs, else hold (the old home may have sequenced it in writes not seen here).
    SEQUENCE_SEEN_OR_HOLD = "sequence_seen_or_hold"
    # Homed here after a planned move, record stamped before it: look it up in every DC
    # (the old home's last writes may still be replicating); found -> reuse, not -> sequence.
    SEQUENCE_CHECKED = "sequence_checked"
    HOLD = "hold"  # nobody may sequence it now (draining, or a stale stamp of a moved shard)
    SKIP = "skip"  # homed elsewhere: its home sequences it from its own copy of the topic
    REFRESH = "refresh"  # stamped with a newer map epoch than ours: re-read the map first


def decide(shard_map: ShardMap, region: str, shard: int, stamped: int) -> Decision:
    """What the dispatcher of ``region`` does with a record of ``shard`` stamped ``stamped``.

    Every record must end up sequenced once or held; it is lost only if the region that
    would sequence it skips it and so does everyone else. The rules that prevent that:

    * a record stamped at or after the shard's epoch is sequenced by the current home (a
      dispatcher whose map is older than the stamp re-reads the map first);
    * a record stamped before the shard's epoch (the accepting gateway had not seen the move)
      may be one the new home skipped before it learned of the move: every region other than
      the home holds it rather than skipping it, and the home reconciles holds;
    * while a shard drains, nobody sequences it: everyone holds.
    """
    if stamped > shard_map.epoch:
        return Decision.REFRESH
    entry = shard_map.entry(shard)
    if entry.state == DRAINING:
        return Decision.HOLD
    if entry.home != region:
        return Decision.HOLD if stamped < entry.epoch else Decision.SKIP
    if stamped >= entry.epoch or entry.moved == INITIAL:
        return Decision.SEQUENCE
    if entry.moved == PLANNED:
        return Decision.SEQUENCE_CHECKED
    return Decision.SEQUENCE_SEEN_OR_HOLD


def evacuation_plan(shard_map: ShardMap, region: str) -> dict[int, str]:
    """shard -> new home for every shard homed in ``region``: its next rendezvous region among
    the map's other regions (so evacuating one region moves only its own shards)."""
    others = [r for r in shard_map.regions if r != region]
    if not others:
        raise ValueError(f"cannot evacuate {region!r}: it is the only region of the map")
    return {s: ranked(s, others)[0] for s in shard_map.homed_in(region)}


def restore_plan(shard_map: ShardMap, region: str) -> dict[int, str]:
    """shard -> ``region`` for every shard whose rendezvous home is ``region`` but which is
    homed elsewhere now."""
    if region not in shard_map.regions:
        raise ValueError(f"{region!r} is not a region of the map {list(shard_map.regions)}")
    first = _rendezvous(shard_map.regions)
    return {
        s: region for s in range(SHARDS) if first[s] == region and shard_map.entry(s).home != region
    }


def moved(shard_map: ShardMap, plan: Mapping[int, str], *, planned: bool) -> dict[int, Entry]:
    """The rows after moving ``plan``'s shards at the next map epoch."""
    epoch = shard_map.epoch + 1
    kind = PLANNED if planned else UNPLANNED
    return {s: Entry(home, epoch, ACTIVE, kind) for s, home in plan.items()}


def draining(shard_map: ShardMap, shards: Iterable[int]) -> dict[int, Entry]:
    return {s: replace(shard_map.entry(s), state=DRAINING) for s in shards}


# The store ------------------------------------------------------------------------------------


class MapChanged(Exception):
    """The map's epoch moved since we read it (another change won): re-read and retry."""


@dataclass(frozen=True)
class Held:
    shard: int
    message_id: str
    conversation_id: str
    record: bytes
    stamped_epoch: int
    held_by: str
    held_at: int


CONTROL_STATEMENTS = {
    "read_map": "SELECT shard, home, epoch, state, moved, map_epoch, regions FROM {ks}.shard_map "
    "WHERE name = ?",
    "read_epoch": "SELECT map_epoch FROM {ks}.shard_map WHERE name = ? LIMIT 1",
    "init_map": "UPDATE {ks}.shard_map SET map_epoch = 0, regions = ? WHERE name = ? "
    "IF map_epoch = null",
    "bump": "UPDATE {ks}.shard_map SET map_epoch = ? WHERE name = ? IF map_epoch = ?",
    "set_shard": "UPDATE {ks}.shard_map SET home = ?, epoch = ?, state = ?, moved = ? "
    "WHERE name = ? AND shard = ?",
    "hold": "INSERT INTO {ks}.held_records (shard, message_id, conversation_id, record, "
    "stamped_epoch, held_by, held_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "held": "SELECT shard, message_id, conversation_id, record, stamped_epoch, held_by, held_at "
    "FROM {ks}.held_records",
    "unhold": "DELETE FROM {ks}.held_records WHERE shard = ? AND message_id = ?",
    "report_epoch": "INSERT INTO {ks}.dispatcher_epochs (region, node, map_epoch, seen_at) "
    "VALUES (?, ?, ?, ?) USING TTL 120",
    "reported": "SELECT node, map_epoch, seen_at FROM {ks}.dispatcher_epochs WHERE region = ?",
}


class ControlStore:
    """Async access to the control keyspace over an existing driver session."""

    def __init__(self, session: Any, keyspace: str) -> None:
        from cassandra import ConsistencyLevel

        self.keyspace = keyspace
        self._session = session
        self._prepared = {
            name: session.prepare(cql.format(ks=keyspace))
            for name, cql in CONTROL_STATEMENTS.items()
        }
        # The dispatcher's reads complete any Paxos round in progress: never an older map
        # than the last change anyone saw applied; they fail in a region cut off from the
        # majority, which then stops sequencing (MAP_LEASE_S).
        self._prepared["read_map"].consistency_level = ConsistencyLevel.SERIAL
        for name in ("init_map", "bump"):
            self._prepared[name].serial_consistency_level = ConsistencyLevel.SERIAL

    async def _run(self, name: str, params: Sequence[Any]) -> Any:
        from gateway.store import _await

        return await _await(self._session.execute_async(self._prepared[name], params))

    async def read(self) -> ShardMap | None:
        """The map at SERIAL; None when nobody initialised it yet."""
        rows = list(await self._run("read_map", (MAP_NAME,)))
        if not rows or rows[0].map_epoch is None:
            return None
        entries = {
            row.shard: Entry(row.home, row.epoch, row.state, row.moved)
            for row in rows
            if row.shard is not None
        }
        return ShardMap(rows[0].map_epoch, tuple(rows[0].regions or ()), entries)

    async def read_epoch(self) -> int | None:
        """The map epoch at LOCAL_QUORUM (the gateways' stamp: a stale one only delays)."""
        rows = list(await self._run("read_epoch", (MAP_NAME,)))
        return rows[0].map_epoch if rows and rows[0].map_epoch is not None else None

    async def ensure(self, regions: Sequence[str]) -> ShardMap:
        """The map, created at epoch 0 over ``regions`` if nobody did yet. A map that exists
        wins over ``regions`` (a warning when they differ)."""
        current = await self.read()
        if current is None:
            await self._run("init_map", (list(regions), MAP_NAME))
            current = await self.read()
            assert current is not None
        if set(current.regions) != set(regions):
            log.warning(
                "the shard map's regions %s differ from IMGW_REGIONS %s: the map wins",
                list(current.regions),
                list(regions),
            )
        return current

    async def change(self, seen: ShardMap, rows: Mapping[int, Entry]) -> ShardMap:
        """Write ``rows`` and bump the map epoch by one, if it is still ``seen.epoch``: one
        conditional batch on the map's partition (SERIAL). MapChanged when it lost."""
        from cassandra import ConsistencyLevel
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.serial_consistency_level = ConsistencyLevel.SERIAL
        batch.add(self._prepared["bump"], (seen.epoch + 1, MAP_NAME, seen.epoch))
        for shard, entry in rows.items():
            params = (entry.home, entry.epoch, entry.state, entry.moved, MAP_NAME, shard)
            batch.add(self._prepared["set_shard"], params)
        from gateway.store import _await

        result = list(await _await(self._session.execute_async(batch)))
        if not result or not result[0][0]:
            raise MapChanged(f"the map moved past epoch {seen.epoch}")
        return ShardMap(seen.epoch + 1, seen.regions, {**seen.rows, **rows})

    async def hold(self, shard: int, record: Any, raw: bytes, region: str) -> None:
        now = int(time.time() * 1000)
        params = (
            shard,
            record.message_id,
            record.conversation_id,
            raw.decode(),
            record.epoch,
            region,
            now,
        )
        await self._run("hold", params)

    async def held(self) -> list[Held]:
        rows = await self._run("held", ())
        return [
            Held(
                r.shard,
                r.message_id,
                r.conversation_id,
                r.record.encode(),
                r.stamped_epoch,
                r.held_by,
                r.held_at,
            )
            for r in rows
        ]

    async def unhold(self, shard: int, message_id: str) -> None:
        await self._run("unhold", (shard, message_id))

    async def report_epoch(self, region: str, node: str, epoch: int) -> None:
        await self._run("report_epoch", (region, node, epoch, int(time.time() * 1000)))

    async def reported(self, region: str) -> dict[str, tuple[int, int]]:
        """node -> (map epoch it applied, when it said so in ms) for ``region``'s dispatchers."""
        rows = await self._run("reported", (region,))
        return {r.node: (r.map_epoch, r.seen_at) for r in rows}


# The operations -------------------------------------------------------------------------------


def _chunks(plan: Mapping[int, Any], size: int = MOVE_CHUNK) -> list[dict[int, Any]]:
    items = sorted(plan.items())
    return [dict(items[i : i + size]) for i in range(0, len(items), size)]


async def _apply(control: ControlStore, make: Any, plan: Mapping[int, Any]) -> ShardMap:
    """Apply ``make(map, chunk) -> rows`` chunk by chunk, each a conditional batch; a lost race
    re-reads the map and retries that chunk. Returns the final map."""
    current = await control.read()
    if current is None:
        raise ValueError("no shard map yet (python -m gateway.shardmap init)")
    for chunk in _chunks(plan):
        for _attempt in range(10):
            try:
                current = await control.change(current, make(current, chunk))
                break
            except MapChanged:
                fresh = await control.read()
                assert fresh is not None
                current = fresh
        else:
            raise MapChanged("the map kept moving; try again")
    return current


async def drain(control: ControlStore, shards: Iterable[int]) -> ShardMap:
    """Mark ``shards`` draining: from the dispatchers' next refresh on, nobody sequences them
    (every region holds their records) until they move."""
    wanted = dict.fromkeys(shards, None)

    def make(current: ShardMap, chunk: dict[int, None]) -> dict[int, Entry]:
        return draining(current, [s for s in chunk if current.entry(s).state != DRAINING])

    return await _apply(control, make, wanted)


async def wait_released(
    control: ControlStore, region: str, epoch: int, timeout_s: float = 30.0
) -> bool:
    """Wait until every dispatcher of ``region`` that reported within the map lease has applied
    ``epoch`` (they report after finishing the batch in progress). A dispatcher that stopped
    reporting longer ago than the lease cannot write any more. False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        now_ms = time.time() * 1000
        reports = await control.reported(region)
        live = {n: e for n, (e, seen) in reports.items() if now_ms - seen < MAP_LEASE_S * 1000}
        behind = sorted(n for n, e in live.items() if e < epoch)
        if not behind:
            return True
        if time.monotonic() > deadline:
            log.warning("dispatchers of %s still behind epoch %d: %s", region, epoch, behind)
            return False
        await asyncio.sleep(0.5)


async def move(control: ControlStore, plan: Mapping[int, str], *, planned: bool = True) -> ShardMap:
    """Give each shard of ``plan`` its new home at the next map epoch (chunked). Idempotent: a
    shard already homed at its target with the state active is left alone."""

    def make(current: ShardMap, chunk: dict[int, str]) -> dict[int, Entry]:
        todo = {
            s: home
            for s, home in chunk.items()
            if current.entry(s).home != home or current.entry(s).state != ACTIVE
        }
        return moved(current, todo, planned=planned)

    return await _apply(control, make, plan)


async def planned_move(
    control: ControlStore, plan: Mapping[int, str], *, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Drain, wait for every old home to apply it, then move: the steps of section 7.1."""
    if not plan:
        current = await control.read()
        return {"moved": 0, "epoch": current.epoch if current else None}
    before = await control.read()
    assert before is not None
    old_homes = {before.entry(s).home for s in plan}
    drained = await drain(control, plan)
    for region in sorted(old_homes):
        if not await wait_released(control, region, drained.epoch, timeout_s):
            raise TimeoutError(
                f"dispatchers of {region} did not apply the drain (epoch {drained.epoch}) "
                f"within {timeout_s:.0f}s; the shards stay draining: re-run, or move them "
                "--unplanned"
            )
    after = await move(control, plan, planned=True)
    return {"moved": len(plan), "epoch": after.epoch}


async def reconcile(
    control: ControlStore,
    lookup: Any,
    produce: Any,
    *,
    force: bool = False,
    shards: set[int] | None = None,
) -> dict[str, int]:
    """Settle held records of shards that are active now (section 7.3).

    ``lookup(conversation_id, message_ids, everywhere)`` returns the ids that already have a
    seq: read in **every** DC (consistency ALL), so a seq the old home wrote is found however
    late its replication; with ``force`` (the old region is gone for good: ``region forget``)
    only the local DC is asked. Found: drop the hold. Not found: ``produce(record)`` again,
    stamped with the current map epoch, so the home sequences it like any new record (and finds
    it in message_seqs if this runs twice), then drop the hold.
    """
    current = await control.read()
    assert current is not None
    held = [
        h
        for h in await control.held()
        if (shards is None or h.shard in shards) and current.entry(h.shard).state == ACTIVE
    ]
    by_conv: dict[str, list[Held]] = {}
    for h in held:
        by_conv.setdefault(h.conversation_id, []).append(h)
    done = {"held": len(held), "already_sequenced": 0, "sequenced": 0}
    for conv, items in by_conv.items():
        found = await lookup(conv, [h.message_id for h in items], not force)
        for h in items:
            if h.message_id in found:
                done["already_sequenced"] += 1
            else:
                data = json.loads(h.record)
                data["v"], data["ep"] = 2, current.epoch
                await produce(conv, json.dumps(data, separators=(",", ":")).encode())
                done["sequenced"] += 1
            await control.unhold(h.shard, h.message_id)
    return done


# The CLI -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.shardmap",
        description="Show and change the shard map (docs/multi-region.md sections 2 and 7). "
        "Reads IMGW_CASSANDRA_HOSTS, IMGW_CASSANDRA_CONTROL_KEYSPACE, IMGW_REGIONS; reconcile "
        "also IMGW_KAFKA_BOOTSTRAP, IMGW_KAFKA_TOPIC and IMGW_CASSANDRA_KEYSPACE.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="map epoch, regions, shards per home, draining shards")
    show.add_argument("--shard", type=int, action="append", help="one shard's row (repeatable)")
    show.add_argument("--conversation", action="append", help="a conversation's shard and row")
    sub.add_parser("init", help="create the map over IMGW_REGIONS if it does not exist")
    drain_p = sub.add_parser("drain", help="mark shards draining")
    drain_p.add_argument("--shard", type=int, action="append", required=True)
    move_p = sub.add_parser("move", help="move shards to a region")
    move_p.add_argument("--shard", type=int, action="append", required=True)
    move_p.add_argument("--to", required=True)
    move_p.add_argument("--unplanned", action="store_true", help="no drain: the old home is gone")
    move_p.add_argument("--timeout", type=float, default=30.0)
    evac = sub.add_parser("evacuate", help="move every shard of a region to its next home")
    evac.add_argument("region")
    evac.add_argument("--unreachable", action="store_true", help="unplanned: no drain")
    evac.add_argument("--timeout", type=float, default=30.0)
    restore_p = sub.add_parser("restore", help="move a region's rendezvous shards back to it")
    restore_p.add_argument("region")
    restore_p.add_argument("--timeout", type=float, default=30.0)
    sub.add_parser("held", help="list held records")
    rec = sub.add_parser("reconcile", help="sequence or drop held records")
    rec.add_argument(
        "--force",
        action="store_true",
        help="look message ids up in the local DC only (the old region is gone for good)",
    )
    return parser


async def _run_cli(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.config import load_or_exit
    from gateway.runtime import in_daemon_thread
    from gateway.store import CassandraStore, close_store

    config = load_or_exit("shardmap")
    store = CassandraStore.of_config(config)
    await in_daemon_thread(lambda: store.connect(keyspace=args.command == "reconcile"))
    try:
        control = ControlStore(store.session, config.cassandra_control_keyspace)
        if args.command == "init":
            return (await control.ensure(config.region_list)).summary()
        current = await control.read()
        if current is None:
            raise ValueError("no shard map yet (python -m gateway.shardmap init)")
        if args.command == "reconcile":
            return await _reconcile_cli(config, store, control, force=args.force)
        handler = _COMMANDS[args.command]
        result: dict[str, Any] = await handler(control, current, args)
        return result
    finally:
        await close_store(store)


async def _show(control: ControlStore, current: ShardMap, args: argparse.Namespace) -> Any:
    out = current.summary()
    shards = list(args.shard or []) + [shard_of(c) for c in args.conversation or []]
    if shards:
        out["shards"] = {str(s): vars_of(current.entry(s)) for s in shards}
    return out


async def _drain(control: ControlStore, current: ShardMap, args: argparse.Namespace) -> Any:
    return (await drain(control, args.shard)).summary()


async def _move(control: ControlStore, current: ShardMap, args: argparse.Namespace) -> Any:
    if args.to not in current.regions:
        raise ValueError(f"{args.to!r} is not a region of the map {list(current.regions)}")
    plan = dict.fromkeys(args.shard, args.to)
    if args.unplanned:
        return (await move(control, plan, planned=False)).summary()
    return await planned_move(control, plan, timeout_s=args.timeout)


async def _region(control: ControlStore, current: ShardMap, args: argparse.Namespace) -> Any:
    """evacuate and restore: resumable, since the plan is recomputed from the map each run."""
    if args.command == "evacuate":
        plan = evacuation_plan(current, args.region)
    else:
        plan = restore_plan(current, args.region)
    _progress(f"{args.command} {args.region}: {len(plan)} shards to move")
    if args.command == "evacuate" and args.unreachable:
        result: dict[str, Any] = {"moved": len(plan)}
        result["epoch"] = (await move(control, plan, planned=False)).epoch
    else:
        result = await planned_move(control, plan, timeout_s=args.timeout)
    left = (await control.read()) or current
    result["homed_in_region"] = len(left.homed_in(args.region))
    return result


async def _held(control: ControlStore, current: ShardMap, args: argparse.Namespace) -> Any:
    rows = await control.held()
    keys = ("shard", "message_id", "conversation_id", "stamped_epoch", "held_by", "held_at")
    return {"held": [{k: getattr(h, k) for k in keys} for h in rows]}


_COMMANDS = {
    "show": _show,
    "drain": _drain,
    "move": _move,
    "evacuate": _region,
    "restore": _region,
    "held": _held,
}


async def _reconcile_cli(
    config: Any, store: Any, control: ControlStore, *, force: bool
) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**config.kafka_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:

        async def lookup(conv: str, ids: list[str], everywhere: bool) -> set[str]:
            return set(await store.message_seqs(conv, ids, everywhere=everywhere))

        async def produce(conv: str, value: bytes) -> None:
            await producer.send_and_wait(config.kafka_topic, value=value, key=conv.encode())

        return await reconcile(control, lookup, produce, force=force)
    finally:
        await producer.stop()


def vars_of(entry: Entry) -> dict[str, Any]:
    return {"home": entry.home, "epoch": entry.epoch, "state": entry.state, "moved": entry.moved}


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        out = asyncio.run(_run_cli(args))
    except ValueError as exc:
        print(f"shardmap: error: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, MapChanged) as exc:
        print(f"shardmap: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
