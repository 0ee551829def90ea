"""Apply the schema: Kafka topics (migrations/kafka/topics.yaml) and the versioned CQL migrations
(migrations/cql/NNNN_name.cql), idempotently.

Run: ``python -m gateway.migrate [--only kafka|cql] [--wait SECONDS] [--increase-partitions]``.
Exit 0 when everything is applied (or already was), 2 for bad configuration or migration files,
1 when a backend refused or stayed unreachable, 3 when a topic has fewer partitions than
configured and adding them was not asked for (``--increase-partitions``) or is not safe now
(nothing was changed; the procedure: docs/protocol.md section 9.4).

Partitions are never added implicitly: a record's partition is its key's hash modulo the count,
so adding partitions moves conversations to other partitions while their older records may
still wait in the old ones, and a dispatcher could then process a newer message of a
conversation before an older one. ``--increase-partitions`` adds them only once every affected
topic is quiet (no end offset moves for QUIET_S) and every consumer group that reads it has
committed up to its end (lag 0).
"""

# Heavy client libraries are imported where first used, so --help and bad input stay fast.

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Config, load_or_exit
from gateway.runtime import setup_logging

log = logging.getLogger("gateway.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CQL_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cql$")
TOPIC_ALREADY_EXISTS = 36
QUIET_S = 5.0  # --increase-partitions: no end offset of an affected topic may move for this long
EXIT_REFUSED = 3


class MigrationInputError(Exception):
    """A migration file is invalid (exit 2, nothing applied)."""


class MigrationFailed(Exception):
    """A backend refused a change or stayed unreachable (exit 1)."""


class PartitionIncreaseRefused(Exception):
    """A topic needs more partitions and that was not asked for, or is not safe now (exit 3,
    nothing changed)."""


SAFE_INCREASE = (
    "To add partitions without breaking the order of any conversation: stop the producers "
    "(scale the gateways to 0, or drain them), wait until every consumer group of the topic "
    "has lag 0 (im_dispatcher_consumer_lag), then run `python -m gateway.migrate --only kafka "
    "--increase-partitions` and start the producers again (docs/protocol.md section 9.4)."
)


# Kafka plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def load_topic_plan(
    text: str,
    *,
    source: str,
    topic: str,
    partitions: int,
    replication_factor: int,
    deliveries: str = "im.deliveries",
) -> list[TopicPlan]:
    """Parse topics.yaml; partitions and replication come from the environment, "{topic}" is
    IMGW_KAFKA_TOPIC and "{deliveries}" IMGW_KAFKA_DELIVERIES_TOPIC."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MigrationInputError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise MigrationInputError(f"{source}: expected a mapping with 'version: 1'")
    topics = data.get("topics")
    if not isinstance(topics, list) or not topics:
        raise MigrationInputError(f"{source}: 'topics' must be a non-empty list")
    plans = [
        _topic_entry(
            entry,
            f"{source}: topics[{i}]",
            {"{topic}": topic, "{deliveries}": deliveries},
            partitions,
            replication_factor,
        )
        for i, entry in enumerate(topics)
    ]
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise MigrationInputError(f"{source}: duplicate topic names {names}")
    return plans


def _topic_entry(
    entry: object,
    where: str,
    names: dict[str, str],
    partitions: int,
    replication_factor: int,
) -> TopicPlan:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise MigrationInputError(f"{where}: needs a string 'name'")
    unknown = set(entry) - {"name", "purpose", "configs"}
    if unknown:
        raise MigrationInputError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry["name"]
    for placeholder, value in names.items():
        name = name.replace(placeholder, value)
    if not re.match(r"^[A-Za-z0-9._-]{1,249}$", name):
        raise MigrationInputError(f"{where}.name: '{name}' is not a valid topic name")
    configs = entry.get("configs") or {}
    if not isinstance(configs, dict):
        raise MigrationInputError(f"{where}.configs: must be a mapping")
    resolved: dict[str, str] = {}
    for key, value in configs.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise MigrationInputError(f"{where}.configs.{key}: must be a string or integer")
        resolved[str(key)] = str(value)
    if "min.insync.replicas" in resolved:
        try:
            wanted = int(resolved["min.insync.replicas"])
        except ValueError:
            raise MigrationInputError(
                f"{where}.configs.min.insync.replicas: must be an integer"
            ) from None
        resolved["min.insync.replicas"] = str(min(wanted, max(1, replication_factor - 1)))
    return TopicPlan(name, partitions, replication_factor, resolved)


async def apply_kafka(
    config: Config,
    plans: list[TopicPlan],
    wait_s: float,
    *,
    increase_partitions: bool = False,
    quiet_s: float = QUIET_S,
) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    deadline = time.monotonic() + wait_s
    admin = None
    while admin is None:
        candidate = AIOKafkaAdminClient(**config.kafka_kwargs(), request_timeout_ms=15000)
        try:
            await candidate.start()
            admin = candidate
        except Exception as exc:
            await candidate.close()
            if time.monotonic() > deadline:
                raise MigrationFailed(
                    f"Kafka at {config.kafka_bootstrap} unreachable: {exc}"
                ) from None
            log.info("waiting for Kafka at %s ...", config.kafka_bootstrap)
            await asyncio.sleep(1.0)
    done: list[str] = []
    try:
        existing = {t["topic"]: t for t in await admin.describe_topics()}
        grow = {
            p.name: (have, p.partitions)
            for p in plans
            if p.name in existing and (have := len(existing[p.name]["partitions"])) < p.partitions
        }
        if grow and not increase_partitions:
            counts = ", ".join(f"{t} has {h}, {w} configured" for t, (h, w) in sorted(grow.items()))
            raise PartitionIncreaseRefused(
                f"{counts}: adding partitions moves conversations to other partitions while "
                f"their older records may still wait in the old ones, breaking their order. "
                f"Nothing was changed. {SAFE_INCREASE}"
            )
        if grow:
            await _check_drained(config, admin, grow, quiet_s)
        missing = [p for p in plans if p.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(p.name, p.partitions, p.replication_factor, topic_configs=p.configs)
                    for p in missing
                ]
            )
            for error in response.topic_errors:
                topic, code = error[0], error[1]
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise MigrationFailed(f"creating topic {topic} failed: {error}")
            done += [f"kafka: created topic {p.name} ({p.partitions} partitions)" for p in missing]
        for plan in plans:
            if plan.name in existing:
                done += await _reconcile_topic(admin, plan, existing[plan.name])
    finally:
        await admin.close()
    return done


async def _check_drained(
    config: Config, admin: Any, grow: dict[str, tuple[int, int]], quiet_s: float
) -> None:
    """Refuse (PartitionIncreaseRefused) unless the topics in ``grow`` are quiet and drained:
    no end offset moves for ``quiet_s``, and every consumer group with offsets on them (and the
    dispatchers' group on the messages topic, committed or not) has committed up to the end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(t, i) for t, (have, _) in grow.items() for i in range(have)]
    consumer = AIOKafkaConsumer(**config.kafka_kwargs())
    await consumer.start()
    try:
        first = await consumer.end_offsets(tps)
        await asyncio.sleep(quiet_s)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    moving = sorted({tp.topic for tp in tps if ends[tp] != first[tp]})
    if moving:
        raise PartitionIncreaseRefused(
            f"{', '.join(moving)} still written to (end offsets moved within {quiet_s:.0f}s). "
            f"Nothing was changed. {SAFE_INCREASE}"
        )
    groups = {str(g[0]) for g in await admin.list_consumer_groups()}
    behind: list[str] = []
    for group in sorted(groups | {config.consumer_group}):
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        required = group == config.consumer_group
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None else -1
            if offset < 0 and not (required and tp.topic == config.kafka_topic):
                continue  # the group does not read this topic
            if max(offset, 0) < ends[tp]:
                behind.append(f"{group} {tp.topic}[{tp.partition}] {ends[tp] - max(offset, 0)}")
    if behind:
        raise PartitionIncreaseRefused(
            f"consumer groups still behind (group topic[partition] records): "
            f"{', '.join(behind)}. Nothing was changed. {SAFE_INCREASE}"
        )


async def _reconcile_topic(admin: object, plan: TopicPlan, current: dict[str, object]) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    assert isinstance(admin, AIOKafkaAdminClient)
    done: list[str] = []
    partitions = current["partitions"]
    assert isinstance(partitions, list)
    if len(partitions) < plan.partitions:  # only with --increase-partitions, drained (above)
        await admin.create_partitions({plan.name: NewPartitions(plan.partitions)})
        done.append(f"kafka: {plan.name} partitions {len(partitions)} -> {plan.partitions}")
    elif len(partitions) > plan.partitions:
        log.warning(
            "%s has %d partitions, more than the %d configured; Kafka cannot shrink",
            plan.name,
            len(partitions),
            plan.partitions,
        )
    replicas = len(partitions[0]["replicas"]) if partitions else 0
    if replicas != plan.replication_factor:
        log.warning(
            "%s has replication factor %d, configured %d: needs a partition reassignment, "
            "which migrate does not do",
            plan.name,
            replicas,
            plan.replication_factor,
        )
    resource = ConfigResource(ConfigResourceType.TOPIC, plan.name, configs=plan.configs)
    for response in await admin.alter_configs([resource]):
        for result in response.resources:
            if result[0] != 0:
                raise MigrationFailed(f"config of {plan.name}: {result}")
    done.append(f"kafka: configs of {plan.name} in sync")
    return done


# CQL migrations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CqlMigration:
    version: int
    name: str
    path: Path
    checksum: str
    statements: tuple[str, ...]


def cql_statements(text: str) -> list[str]:
    """Split a migration into statements: ';' ends one, '--' comments are dropped."""
    lines = [line.split("--", 1)[0] if "--" in line else line for line in text.splitlines()]
    body = "\n".join(lines)
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


def discover_migrations(directory: Path) -> list[CqlMigration]:
    found: list[CqlMigration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".cql":
            continue
        match = CQL_NAME.match(path.name)
        if not match:
            raise MigrationInputError(f"{path}: name must look like 0001_description.cql")
        text = path.read_text(encoding="utf-8")
        statements = tuple(cql_statements(text))
        if not statements:
            raise MigrationInputError(f"{path}: no CQL statements")
        for stmt in statements:
            if re.search(r"\bKEYSPACE\b", stmt, re.IGNORECASE):
                raise MigrationInputError(f"{path}: keyspaces are managed by migrate, not files")
        checksum = hashlib.sha256(text.encode()).hexdigest()[:16]
        found.append(CqlMigration(int(match[1]), match[2], path, checksum, statements))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationInputError(f"{directory}: two migrations share a version: {versions}")
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationInputError(f"{directory}: versions must be 1..N without gaps: {versions}")
    return found


def replication_of(
    replication_factor: int, datacenter: str, current: dict[str, str] | None = None
) -> dict[str, str]:
    """The keyspace replication this process wants, given the ``current`` one (None: no
    keyspace yet). With a datacenter it only sets its own DC's factor and keeps every other
    DC's: in a multi-region cluster each region's migrate runs with its own DC, and the
    stack's keyspace Job owns the full map; dropping a DC would stop replicating to it."""
    if not datacenter:
        return {"class": "SimpleStrategy", "replication_factor": str(replication_factor)}
    wanted = {"class": "NetworkTopologyStrategy"}
    if current is not None and _short_class(current.get("class", "")) == wanted["class"]:
        wanted.update({dc: rf for dc, rf in current.items() if dc != "class"})
    wanted[datacenter] = str(replication_factor)
    return wanted


def _short_class(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _replication_cql(replication: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in replication.items()) + "}"


def _same_replication(current: dict[str, str], wanted: dict[str, str]) -> bool:
    a = {k: _short_class(v) if k == "class" else v for k, v in current.items()}
    b = {k: _short_class(v) if k == "class" else v for k, v in wanted.items()}
    return a == b


def apply_cql(
    config: Config,
    migrations: list[CqlMigration],
    wait_s: float,
    control: list[CqlMigration] | None = None,
) -> list[str]:
    """The IM keyspace's migrations, then (when given) the control keyspace's, each keyspace
    with its own ``schema_migrations``; then the shard map over IMGW_REGIONS if there is none."""
    from gateway.store import CassandraStore

    store = CassandraStore.of_config(config)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            session = store.connect(keyspace=False, timeout_s=15)
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise MigrationFailed(
                    f"Cassandra at {config.cassandra_hosts} unreachable: {exc}"
                ) from None
            log.info("waiting for Cassandra at %s ...", config.cassandra_hosts)
            time.sleep(2.0)
    done: list[str] = []
    try:
        done += _apply_keyspace(session, config, config.cassandra_keyspace, migrations)
        if control is not None:
            keyspace = config.cassandra_control_keyspace
            done += _apply_keyspace(session, config, keyspace, control)
            done.append(_ensure_map(session, config))
    finally:
        store.close()
    return done


def _ensure_map(session: object, config: Config) -> str:
    from gateway.shardmap import ControlStore

    async def ensure() -> str:
        control = ControlStore(session, config.cassandra_control_keyspace)
        found = await control.ensure(config.region_list)
        return f"cql: shard map at epoch {found.epoch} over {list(found.regions)}"

    return asyncio.run(ensure())


def _apply_keyspace(
    session: Any, config: Config, keyspace: str, migrations: list[CqlMigration]
) -> list[str]:
    done: list[str] = []
    rows = list(
        session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (keyspace,),
        )
    )
    current = dict(rows[0].replication) if rows else None
    wanted = replication_of(
        config.cassandra_replication_factor, config.cassandra_datacenter, current
    )
    if current is None:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} "
            f"WITH replication = {_replication_cql(wanted)}"
        )
        done.append(f"cql: created keyspace {keyspace} {wanted}")
    elif not _same_replication(current, wanted):
        session.execute(f"ALTER KEYSPACE {keyspace} WITH replication = {_replication_cql(wanted)}")
        done.append(f"cql: keyspace {keyspace} replication -> {wanted} (run a repair)")
    session.set_keyspace(keyspace)
    session.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version int PRIMARY KEY, name text, checksum text, applied_at timestamp)"
    )
    applied = {
        row.version: row.checksum
        for row in session.execute("SELECT version, checksum FROM schema_migrations")
    }
    applied_now = False
    for migration in migrations:
        label = f"{migration.version:04d}_{migration.name}"
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationFailed(
                    f"{migration.path}: changed after it was applied "
                    "(add a new migration instead of editing an applied one)"
                )
            continue
        for stmt in migration.statements:
            session.execute(stmt, timeout=60)
        session.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
            "VALUES (%s, %s, %s, toTimestamp(now()))",
            (migration.version, migration.name, migration.checksum),
        )
        done.append(f"cql: applied {keyspace} {label}")
        applied_now = True
    if not applied_now:
        done.append(f"cql: {keyspace}: {len(migrations)} migrations already applied")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.migrate", description=__doc__)
    parser.add_argument("--only", choices=("kafka", "cql"), help="apply only one of the two")
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for unreachable backends"
    )
    parser.add_argument(
        "--increase-partitions",
        action="store_true",
        help="add the partitions IMGW_KAFKA_PARTITIONS asks for, once the topics are quiet and "
        "every consumer group has lag 0 (else exit 3; docs/protocol.md section 9.4)",
    )
    args = parser.parse_args(argv)
    config = load_or_exit("migrate")
    setup_logging(config.log_level, config.node_id or "migrate")
    try:
        topics_file = MIGRATIONS_DIR / "kafka" / "topics.yaml"
        plans = load_topic_plan(
            topics_file.read_text(encoding="utf-8"),
            source=str(topics_file),
            topic=config.kafka_topic,
            partitions=config.kafka_partitions,
            replication_factor=config.kafka_replication_factor,
            deliveries=config.kafka_deliveries_topic,
        )
        migrations = discover_migrations(MIGRATIONS_DIR / "cql")
        control = discover_migrations(MIGRATIONS_DIR / "control")
    except MigrationInputError as exc:
        print(f"migrate: error: {exc}", file=sys.stderr)
        return 2
    try:
        done: list[str] = []
        if args.only in (None, "kafka"):
            done += asyncio.run(
                apply_kafka(config, plans, args.wait, increase_partitions=args.increase_partitions)
            )
        if args.only in (None, "cql"):
            done += apply_cql(config, migrations, args.wait, control)
    except PartitionIncreaseRefused as exc:
        print(f"migrate: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except MigrationFailed as exc:
        print(f"migrate: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"migrate: error: {exc!r}", file=sys.stderr)
        return 1
    for line in done:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
