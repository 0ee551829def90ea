"""Prometheus metrics. Names are part of the interface (dashboards and alerts use them) and are
listed in docs/protocol.md; change them only together with the doc and the alert rules."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

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
SEND_FAILURES = ("not_member", "redis", "duplicate_id", "kafka")
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
BATCH_STAGES = (
    "dead_letter",
    "sequence",
    "recipients",
    "persist",
    "cache",
    "route",
    "deliveries",
)
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the scrape size and nobody reads them


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "im_gateway_"
        self.connections_active = Gauge(p + "connections_active", "Open sessions.", registry=r)
        self.connections_limit = Gauge(
            p + "connections_limit", "Configured maximum of open sessions.", registry=r
        )
        self.connects = Counter(
            p + "connects", "Connection attempts by outcome.", ["reason"], registry=r
        )
        self.disconnects = Counter(
            p + "disconnects", "Closed sessions by reason.", ["reason"], registry=r
        )
        self.frames_in = Counter(p + "frames_in", "Client frames by op.", ["op"], registry=r)
        self.frames_out = Counter(p + "frames_out", "Server frames by op.", ["op"], registry=r)
        self.protocol_errors = Counter(
            p + "protocol_errors", "Error frames sent, by code.", ["code"], registry=r
        )
        self.messages_accepted = Counter(
            p + "messages_accepted", "Messages durable in Kafka and acknowledged.", registry=r
        )
        self.messages_duplicate = Counter(
            p + "messages_duplicate", "Resends of an already accepted client_msg_id.", registry=r
        )
        self.messages_failed = Counter(
            p + "messages_failed", "Sends not accepted, by reason.", ["reason"], registry=r
        )
        self.messages_delivered = Counter(
            p + "messages_delivered", "Live message frames written to device sockets.", registry=r
        )
        self.messages_deduplicated = Counter(
            p + "messages_deduplicated",
            "Live deliveries skipped because the device already had that seq.",
            registry=r,
        )
        self.synced_messages = Counter(
            p + "synced_messages",
            "Messages sent in sync batches, by source.",
            ["source"],
            registry=r,
        )
        self.receipts = Counter(p + "receipts", "Receipts accepted from devices.", registry=r)
        self.delivery_latency = Histogram(
            p + "delivery_latency_seconds",
            "Sender's accept time to the write on the recipient's socket.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.kafka_produce_latency = Histogram(
            p + "kafka_produce_latency_seconds",
            "Produce call to broker acknowledgement (acks=all).",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.send_queue_depth = Gauge(
            p + "send_queue_depth", "Frames waiting in per-connection send queues.", registry=r
        )
        self.send_queue_drops = Counter(
            p + "send_queue_drops", "Frames dropped because a send queue was full.", registry=r
        )
        self.auth_failures = Counter(
            p + "auth_failures", "Refused tokens by reason.", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            p + "rate_limited", "Frames refused by the per-connection rate limit.", registry=r
        )
        self.draining = Gauge(p + "draining", "1 while draining after SIGTERM.", registry=r)
        self.ready = Gauge(p + "ready", "1 when /readyz answers 200.", registry=r)
        self.backend_up = Gauge(
            p + "backend_up", "1 when the backend answered its last check.", ["backend"], registry=r
        )
        self.pubsub_reconnects = Counter(
            p + "pubsub_reconnects", "Redis pub/sub resubscriptions after a failure.", registry=r
        )
        for counter, values in (
            (self.connects, CONNECT_OUTCOMES),
            (self.disconnects, DISCONNECT_REASONS),
            (self.messages_failed, SEND_FAILURES),
            (self.auth_failures, AUTH_FAILURES),
        ):
            for value in values:
                counter.labels(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "im_dispatcher_"
        self.consumed = Counter(p + "consumed", "Kafka records consumed.", registry=r)
        self.persisted = Counter(p + "persisted", "Messages written to Cassandra.", registry=r)
        self.duplicates = Counter(
            p + "duplicates", "Records already assigned a seq (redelivery/resend).", registry=r
        )
        self.routed = Counter(
            p + "routed", "Deliveries published to gateways (one per user per node).", registry=r
        )
        self.offline = Counter(
            p + "recipients_offline", "Recipients with no live gateway route.", registry=r
        )
        self.dead_lettered = Counter(
            p + "dead_lettered", "Unparseable records sent to the dead-letter topic.", registry=r
        )
        self.failures = Counter(
            p + "batch_failures",
            "Batches retried after an error, by the step that failed.",
            ["stage"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            p + "consumer_lag",
            "Records behind the high watermark, by partition.",
            ["partition"],
            registry=r,
        )
        self.persist_latency = Histogram(
            p + "persist_latency_seconds",
            "Cassandra write time for one batch.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            p + "batch_latency_seconds",
            "Consume to offsets committed, per batch (persist + route).",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            p + "batch_size", "Records per processed batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.fencing_refusals = Counter(
            p + "fencing_refusals",
            "Seq reservations refused because another writer holds the conversation's fence.",
            registry=r,
        )
        self.seq_gaps = Counter(
            p + "seq_gaps",
            "In-doubt seq ranges recorded on taking a conversation over without a release marker.",
            registry=r,
        )
        self.foreign_records = Counter(
            p + "foreign_records",
            "Records skipped because another region homes their shard (it sequences them).",
            registry=r,
        )
        self.held_records = Counter(
            p + "held_records",
            "Records held (draining shard, or stamped before their shard moved) until "
            "reconciliation.",
            registry=r,
        )
        self.map_epoch = Gauge(p + "map_epoch", "The shard map epoch applied.", registry=r)
        self.info = Gauge(
            p + "info",
            "Always 1; labels: region and consumer group.",
            ["region", "group"],
            registry=r,
        )
        self.ready = Gauge(p + "ready", "1 when /readyz answers 200.", registry=r)
        self.draining = Gauge(p + "draining", "1 while stopping after SIGTERM.", registry=r)
        for stage in BATCH_STAGES:
            self.failures.labels(stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)


RELAY_STAGES = ("persist", "cache", "route")


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "im_relay_"
        self.applied = Counter(
            p + "applied",
            "Messages from a peer's home applied to the local DC and caches, by source region.",
            ["source"],
            registry=r,
        )
        self.routed = Counter(p + "routed", "Deliveries published to local gateways.", registry=r)
        self.replication_lag = Gauge(
            p + "replication_lag_seconds",
            "Age of the newest beacon from a source region when it arrived here.",
            ["source", "target"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            p + "delivery_latency_seconds",
            "Sender's accept time to the local publish, by source (home) region.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            p + "batch_failures", "Batches retried, by the step that failed.", ["stage"], registry=r
        )
        self.skipped = Counter(
            p + "skipped_records", "Undecodable deliveries records skipped.", registry=r
        )
        self.info = Gauge(
            p + "info",
            "Always 1; labels: region and consumer group.",
            ["region", "group"],
            registry=r,
        )
        self.ready = Gauge(p + "ready", "1 when /readyz answers 200.", registry=r)
        for stage in RELAY_STAGES:
            self.failures.labels(stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
