"""Every drill, in one place: what it does to the local stack, what must page, and the same
fault on a Kubernetes cluster (docs/drills.md says the same for people)."""

from __future__ import annotations

from opsctl.drill import _faults as f
from opsctl.drill import _region as region
from opsctl.drill._model import Drill, ExpectedAlert
from opsctl.errors import UserInputError

DRILLS: tuple[Drill, ...] = (
    Drill(
        name="gateway-kill",
        summary="SIGKILL a gateway under load; its clients reconnect to the other one.",
        fault=f"SIGKILL {f.GATEWAY}, hold until its alert fires, start it again",
        kubernetes="kubectl delete pod <gateway pod> --grace-period=0 --force",
        expected_alerts=(ExpectedAlert("ImGatewayDown", {"node": f.GATEWAY}),),
        inject=f.kill_gateway,
        restore=f.start_gateway,
    ),
    Drill(
        name="dispatcher-restart",
        summary="SIGKILL the dispatcher under load and start it again (a crash restart): it "
        "takes its conversations over without a clean handover.",
        fault=f"SIGKILL the {f.DISPATCHER}, hold, start it again",
        kubernetes="kubectl delete pod <dispatcher pod> --grace-period=0 --force",
        expected_alerts=(ExpectedAlert("ImDispatcherSeqGaps"),),
        alerts_after_restore=True,
        inject=f.kill_dispatcher,
        restore=f.start_dispatcher,
    ),
    Drill(
        name="redis-restart-empty",
        summary="Redis stopped under load and started with no data (its AOF deleted).",
        fault="stop Redis, delete its data, hold until RedisDown fires, start it empty",
        kubernetes="kubectl delete pod <redis pod> and its PersistentVolumeClaim "
        "(or scale the StatefulSet to 0, delete the PVC, scale back)",
        expected_alerts=(ExpectedAlert("RedisDown"),),
        inject=f.stop_redis_and_wipe,
        restore=f.start_redis,
    ),
    Drill(
        name="poison-records",
        summary="Records that always fail (a group record whose conversation is not g:<gid>, "
        "a ts beyond bigint, a lone surrogate) written into the real messages topic under load: "
        "traffic keeps flowing and each lands in the DLQ.",
        fault="produce 3 poison records to the messages topic; nothing to restore",
        kubernetes="the same records produced to the region's Kafka (a Job running "
        "the producer, or a port-forward to a broker)",
        # Dead-lettering is the designed outcome, not a page. ImDispatcherDeadLettered (a
        # ticket) fires, but is not gated on: it stays active 15 minutes, so after any earlier
        # dead-lettering the drill could not tell it fired again. The DLQ is checked instead.
        expected_alerts=(),
        inject=f.inject_poison,
        restore=f.nothing_to_restore,
        extra_checks=f.poison_dead_lettered,
    ),
    Drill(
        name="cassandra-down",
        summary="Cassandra stopped for longer than the dispatcher's retry backoff: the "
        "dispatcher retries (an outage, never dead-lettered) and catches up afterwards.",
        fault="stop Cassandra, hold until CassandraNodeDown fires, start it again",
        kubernetes="kubectl scale statefulset <cassandra> --replicas=0, then back",
        expected_alerts=(ExpectedAlert("CassandraNodeDown"),),
        inject=f.stop_cassandra,
        restore=f.start_cassandra,
        max_recover_s=240.0,
    ),
    Drill(
        name="kafka-broker-down",
        summary="The Kafka broker stopped: sends are refused as unavailable (the client "
        "resends), the dispatcher's lag is unknown, then everything catches up.",
        fault="stop the (only) Kafka broker, hold until ImDispatcherLagUnknown fires, start it",
        kubernetes="kubectl delete pod <kafka broker pod> (with 3 brokers: one broker; "
        "or a NetworkPolicy denying ingress to it)",
        expected_alerts=(ExpectedAlert("ImDispatcherLagUnknown"),),
        inject=f.stop_kafka,
        restore=f.start_kafka,
        max_recover_s=180.0,
    ),
    Drill(
        name="kafka-partition-leaderless",
        summary="One partition of the messages topic without a leader for a while, the others "
        "fine: its sends are answered outcome_unknown and resent, everything else flows, and "
        "the gateways' producers recover without a restart once it has a leader again.",
        fault="a second broker joins the stack's Kafka, the messages topic's last partition "
        "moves onto it alone, the broker is frozen (SIGSTOP) until KafkaOfflinePartitions "
        "fires; restore thaws it, moves the partition back and stops the broker",
        kubernetes="with 3 brokers and replication factor 3: stop the brokers holding one "
        "partition's replicas (pod delete, or a NetworkPolicy isolating them)",
        expected_alerts=(ExpectedAlert("KafkaOfflinePartitions"),),
        inject=f.partition_leaderless,
        holding=f.leaderless_holding,
        restore=f.partition_led_again,
        extra_checks=f.partition_was_leaderless,
        max_recover_s=240.0,
        # The controller fences the frozen broker after its 9 s session timeout, and the
        # offline-partitions gauge is scraped after that.
        onset_s=25.0,
    ),
    Drill(
        name="pubsub-disconnect",
        summary="Every gateway's Redis pub/sub connection cut, repeatedly (CLIENT KILL TYPE "
        "pubsub): they resubscribe and tell their sessions to sync.",
        fault="CLIENT KILL TYPE pubsub on Redis every 2 s while held; nothing to restore",
        kubernetes="a NetworkPolicy denying the gateways' egress to Redis for a few seconds, "
        "or CLIENT KILL TYPE pubsub through kubectl exec",
        # Short cuts recover by design without paging: no alert; the verdict is the gate.
        expected_alerts=(),
        inject=f.kill_pubsub_clients,
        holding=f.pubsub_holding,
        restore=f.nothing_to_restore,
        extra_checks=f.pubsub_was_cut,
    ),
    Drill(
        name="slow-reader-flood",
        summary="Clients that never read their socket ask for sync after sync of a busy "
        "conversation while a sender writes to them: the gateways close them (slow_consumer) "
        "and stay up, with bounded memory, for everybody else.",
        fault="20 clients that never read (reconnecting when cut off) and 4 senders writing "
        "8 KB messages to them, while held; restore stops them",
        kubernetes="the same clients from a load-generator Job against the region's gateways",
        # ImGatewaySendQueueDrops needs 10 min of drops: a drill does not hold that long; the
        # drops and the closes are checked on the gateways' own metrics instead.
        expected_alerts=(),
        inject=f.start_flood,
        holding=f.flood_holding,
        restore=f.stop_flood,
        extra_checks=f.flood_contained,
    ),
    Drill(
        name="region-down",
        summary="A whole region frozen under load (SIGSTOP), failed over as `opsctl region "
        "evacuate REGION --unreachable` does, served by the survivors, woken up as a zombie "
        "(SIGCONT) and restored: nothing acked lost, no seq naming two messages, and the RPO "
        "and failover time measured.",
        fault="SIGSTOP every process of the region (gateways, dispatcher, relay, Redis, Kafka, "
        "its Cassandra DC), evacuate it --unreachable, hold, SIGCONT, `opsctl region restore`",
        kubernetes="a NetworkPolicy (or the cloud's security groups) cutting the region's "
        "cluster off from the others and from clients, `opsctl region evacuate REGION "
        "--unreachable`, then the policy removed and `opsctl region restore REGION`",
        # Its alerts need minutes (ImCrossRegionReplicationLag: for 5m): reported, not gated.
        expected_alerts=(),
        inject=region.freeze,
        restore=region.thaw,
        multi_region=True,
        max_recover_s=240.0,
    ),
    Drill(
        name="redis-failover-lost-writes",
        summary="The Redis primary fails over to its replica, losing the writes not yet "
        "replicated.",
        fault="-",
        kubernetes="with Sentinel or Redis Cluster: kubectl delete pod <redis primary> right "
        "after a write burst (CLIENT PAUSE on the replica first to make the lag certain)",
        unavailable="the local stack's IM processes know only the primary's address (no "
        "Sentinel, no Redis Cluster): promoting the replica cannot move them over",
    ),
)


def names() -> list[str]:
    return [drill.name for drill in DRILLS]


def find(name: str) -> Drill:
    """The drill called ``name``; exit 2 naming the known ones otherwise."""
    for drill in DRILLS:
        if drill.name == name:
            return drill
    raise UserInputError(f"no drill '{name}'", hint=f"drills: {', '.join(names())}")
