"""Prometheus metrics. Names are part of the interface (dashboards and alerts use them) and are
listed in docs/protocol.md; change them only together with the doc and the alert rules."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gateway.protocol import ALL_ERROR_CODES

# End-to-end delivery SLO is 50-300 ms: resolve finely around it.
LATENCY_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03),
    *(0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3),  # the SLO range
    *(0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)
FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Every label value the processes use, created at 0 on start: alerts and dashboards see the
# series before the first event (a rate over a missing series is "no data", not 0).
CONNECT_OUTCOMES = (
    "accepted",
    "auth_failed",
    "hello_timeout",
    "closed_before_hello",
    "protocol_error",
    "backend_error",
    "draining",
    "not_ready",
    "server_full",
    "preauth_limit",
    "ip_limit",
    "user_limit",
)
DISCONNECT_REASONS = (
    "client_close",
    "connection_lost",
    "frame_too_big",
    "error",
    "backend_error",
    "replaced",
    "rate_limited",
    "protocol_error",
    "slow_consumer",
    "idle_timeout",
    "token_expired",
    "drain",
    "shutdown",
)
# kafka: not written (the client may give up); kafka_unknown: perhaps written (it must resend).
SEND_FAILURES = ("not_member", "redis", "duplicate_id", "kafka", "kafka_unknown")
# The platform's failures, which count against the send SLO and a rollout's analysis; the
# others are the client's. kafka_unknown counts: the attempt got no ack, the client resends.
PLATFORM_SEND_FAILURES = ("kafka", "kafka_unknown", "redis")
# Why the Kafka producer was replaced (gateway.producer, docs/protocol.md 9.5).
PRODUCER_STATE = "producer_state"  # the broker no longer accepts its id, epoch or sequences
SENDER_STOPPED = "sender_stopped"  # aiokafka's sender task ended with a fatal error
PRODUCER_FAILING = "failing"  # no send written for gateway.producer.FAILING_S
PRODUCER_REPLACE_REASONS = (PRODUCER_STATE, SENDER_STOPPED, PRODUCER_FAILING)
SYNC_SOURCES = ("cache", "cassandra")
AUTH_FAILURES = (
    "malformed",
    "unknown_key",
    "bad_algorithm",
    "missing",
    "expired",
    "not_yet_valid",
    "bad_issuer",
    "bad_audience",
    "bad_signature",
    "bad_subject",
)
JWKS_REFRESH_OUTCOMES = ("updated", "unchanged", "failed")  # gateway/jwks.py
BATCH_STAGES = (
    "dead_letter",
    "sequence",
    "recipients",
    "persist",
    "cache",
    "route",
    "deliveries",
)
DLQ_REASONS = ("undecodable", "poison")
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the scrape size and nobody reads them


class _Metrics:
    """One process's metrics, each named ``<prefix><name>``, in one registry."""

    def __init__(self, prefix: str, registry: CollectorRegistry | None) -> None:
        self.registry = registry or CollectorRegistry()
        self._prefix = prefix

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(self._prefix + name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(self._prefix + name, doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, *labels: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(self._prefix + name, doc, labels, buckets=buckets, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GatewayMetrics(_Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("im_gateway_", registry)
        self.connections_active = self.gauge("connections_active", "Open sessions.")
        self.connections_limit = self.gauge(
            "connections_limit", "Configured maximum of open sessions."
        )
        self.connects = self.counter("connects", "Connection attempts by outcome.", "reason")
        self.disconnects = self.counter("disconnects", "Closed sessions by reason.", "reason")
        self.frames_in = self.counter("frames_in", "Client frames by op.", "op")
        self.frames_out = self.counter("frames_out", "Server frames by op.", "op")
        self.protocol_errors = self.counter(
            "protocol_errors", "Error frames sent, by code.", "code"
        )
        self.messages_accepted = self.counter(
            "messages_accepted", "Messages durable in Kafka and acknowledged."
        )
        self.messages_duplicate = self.counter(
            "messages_duplicate", "Resends of an already accepted client_msg_id."
        )
        self.messages_failed = self.counter(
            "messages_failed", "Sends not accepted, by reason.", "reason"
        )
        self.messages_delivered = self.counter(
            "messages_delivered", "Live message frames written to device sockets."
        )
        self.messages_deduplicated = self.counter(
            "messages_deduplicated",
            "Live deliveries skipped because the device already had that seq.",
        )
        self.synced_messages = self.counter(
            "synced_messages", "Messages sent in sync batches, by source.", "source"
        )
        self.receipts = self.counter("receipts", "Receipts accepted from devices.")
        self.delivery_latency = self.histogram(
            "delivery_latency_seconds",
            "Sender's accept time to the write on the recipient's socket.",
            buckets=LATENCY_BUCKETS,
        )
        self.kafka_produce_latency = self.histogram(
            "kafka_produce_latency_seconds",
            "Produce call to broker acknowledgement (acks=all).",
            buckets=FAST_BUCKETS,
        )
        self.send_queue_depth = self.gauge(
            "send_queue_depth", "Frames waiting in per-connection send queues."
        )
        self.send_queue_bytes = self.gauge(
            "send_queue_bytes", "Bytes waiting in per-connection send queues."
        )
        self.send_queue_drops = self.counter(
            "send_queue_drops", "Frames dropped because a send queue was full."
        )
        self.auth_failures = self.counter("auth_failures", "Refused tokens by reason.", "reason")
        self.jwks_refreshes = self.counter(
            "jwks_refreshes", "JWKS fetches after the first, by outcome.", "outcome"
        )
        self.rate_limited = self.counter(
            "rate_limited", "Frames refused by the per-connection rate limit."
        )
        self.draining = self.gauge("draining", "1 while draining after SIGTERM.")
        self.ready = self.gauge("ready", "1 when /readyz answers 200.")
        self.backend_up = self.gauge(
            "backend_up", "1 when the backend answered its last check.", "backend"
        )
        self.pubsub_reconnects = self.counter(
            "pubsub_reconnects", "Redis pub/sub resubscriptions after a failure."
        )
        self.resync_notices = self.counter(
            "resync_notices", "sync_required sent after a lost subscription (paced, jittered)."
        )
        self.kafka_producer_replacements = self.counter(
            "kafka_producer_replacements",
            "Kafka producers replaced because they could no longer deliver, by reason.",
            "reason",
        )
        for counter, values in (
            (self.connects, CONNECT_OUTCOMES),
            (self.disconnects, DISCONNECT_REASONS),
            (self.messages_failed, SEND_FAILURES),
            (self.kafka_producer_replacements, PRODUCER_REPLACE_REASONS),
            (self.auth_failures, AUTH_FAILURES),
            (self.jwks_refreshes, JWKS_REFRESH_OUTCOMES),
            (self.synced_messages, SYNC_SOURCES),
            (self.protocol_errors, tuple(sorted(ALL_ERROR_CODES))),
        ):
            for value in values:
                counter.labels(value)


class DispatcherMetrics(_Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("im_dispatcher_", registry)
        self.consumed = self.counter("consumed", "Kafka records consumed.")
        self.persisted = self.counter("persisted", "Messages written to Cassandra.")
        self.duplicates = self.counter(
            "duplicates", "Records already assigned a seq (redelivery/resend)."
        )
        self.routed = self.counter(
            "routed", "Deliveries published to gateways (one per user per node)."
        )
        self.offline = self.counter("recipients_offline", "Recipients with no live gateway route.")
        self.dead_lettered = self.counter(
            "dead_lettered",
            "Records sent to the dead-letter topic, by reason: undecodable, or poison (failed "
            "every attempt alone while the backends were healthy).",
            "reason",
        )
        self.commits = self.counter(
            "commits", "Batches whose offsets were committed (progress past every record)."
        )
        self.failures = self.counter(
            "batch_failures", "Batches retried after an error, by the step that failed.", "stage"
        )
        self.consumer_lag = self.gauge(
            "consumer_lag",
            "Records between a partition's end offset and the committed offset, by partition; "
            "NaN while the end offsets cannot be read (unknown, see lag_known).",
            "partition",
        )
        # Not "consumer_lag_known": tools select the lag series by that name prefix.
        self.lag_known = self.gauge(
            "lag_known",
            "1 while consumer_lag is current (end offsets read within the last few seconds), "
            "0 while Kafka cannot tell them.",
        )
        self.persist_latency = self.histogram(
            "persist_latency_seconds", "Cassandra write time for one batch.", buckets=FAST_BUCKETS
        )
        self.batch_latency = self.histogram(
            "batch_latency_seconds",
            "Consume to offsets committed, per batch (persist + route).",
            buckets=FAST_BUCKETS,
        )
        self.batch_size = self.histogram(
            "batch_size", "Records per processed batch.", buckets=BATCH_SIZE_BUCKETS
        )
        self.fencing_refusals = self.counter(
            "fencing_refusals",
            "Seq reservations refused because another writer holds the conversation's fence.",
        )
        self.seq_gaps = self.counter(
            "seq_gaps",
            "In-doubt seq ranges recorded on taking a conversation over without a release marker.",
        )
        self.late_writes_shadowed = self.counter(
            "late_writes_shadowed",
            "Messages found at a shadowed seq (an old owner's late write), sequenced again.",
        )
        self.foreign_records = self.counter(
            "foreign_records",
            "Records skipped because another region homes their shard (it sequences them).",
        )
        self.held_records = self.counter(
            "held_records",
            "Records held (draining shard, or stamped before their shard moved) until "
            "reconciliation.",
        )
        self.map_epoch = self.gauge("map_epoch", "The shard map epoch applied.")
        self.info = self.gauge(
            "info", "Always 1; labels: region and consumer group.", "region", "group"
        )
        self.ready = self.gauge("ready", "1 when /readyz answers 200.")
        self.draining = self.gauge("draining", "1 while stopping after SIGTERM.")
        for stage in BATCH_STAGES:
            self.failures.labels(stage)
        for reason in DLQ_REASONS:
            self.dead_lettered.labels(reason)


RELAY_STAGES = ("persist", "cache", "route", "events")
RELAY_EVENT_KINDS = ("r", "p", "i")  # receipts, presence, membership (gateway/region_events.py)


class RelayMetrics(_Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("im_relay_", registry)
        self.applied = self.counter(
            "applied",
            "Messages from a peer's home applied to the local DC and caches, by source region.",
            "source",
        )
        self.routed = self.counter("routed", "Deliveries published to local gateways.")
        self.replication_lag = self.gauge(
            "replication_lag_seconds",
            "Age of the newest beacon from a source region, now (grows while none arrives; "
            "time since the relay started before the first).",
            "source",
            "target",
        )
        # No series before the first beacon: a made-up timestamp would read as a real one.
        self.last_beacon = self.gauge(
            "last_beacon_timestamp_seconds",
            "Send time of the newest beacon received from a source region.",
            "source",
            "target",
        )
        self.delivery_latency = self.histogram(
            "delivery_latency_seconds",
            "Sender's accept time to the local publish, by source (home) region.",
            "source",
            buckets=LATENCY_BUCKETS,
        )
        self.failures = self.counter(
            "batch_failures", "Batches retried, by the step that failed.", "stage"
        )
        self.skipped = self.counter("skipped_records", "Undecodable deliveries records skipped.")
        self.events_forwarded = self.counter(
            "events_forwarded",
            "This region's receipts (r), presence (p) and membership changes (i) produced for "
            "the peers.",
            "kind",
        )
        self.events_dropped = self.counter(
            "events_dropped", "Receipts or presence changes not forwarded (queue full, Kafka)."
        )
        self.receipts_applied = self.counter(
            "receipts_applied", "Peers' receipts that moved a stored receipt here."
        )
        self.presence_changes = self.counter(
            "presence_changes", "Users whose status here changed by a peer's presence record."
        )
        self.info = self.gauge(
            "info", "Always 1; labels: region and consumer group.", "region", "group"
        )
        self.ready = self.gauge("ready", "1 when /readyz answers 200.")
        for stage in RELAY_STAGES:
            self.failures.labels(stage)
        for kind in RELAY_EVENT_KINDS:
            self.events_forwarded.labels(kind)


class ProberMetrics(_Metrics):
    """The conflict prober (gateway/prober.py), exported by the relay that runs it; pass the
    relay's registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("im_prober_", registry)
        self.conflicts = self.counter(
            "conflicts",
            "(conversation, seq) pairs found naming two message ids in some DC (each counted "
            "once per process).",
        )
        self.checked = self.counter(
            "checked", "(conversation, seq) pairs compared across every DC."
        )
        self.conversations = self.counter("conversations", "Conversations probed.")
        self.read_failures = self.counter(
            "read_failures", "Probe reads of a DC that failed (that DC was skipped).", "datacenter"
        )
        self.last_run = self.gauge(
            "last_run_timestamp_seconds", "End of the last probe run (alive check)."
        )
