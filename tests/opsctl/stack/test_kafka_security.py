"""Kafka in prod (issue 14): SCRAM-SHA-512 over TLS on every listener, simple authorization, one
KafkaUser per identity with the ACLs of the one table (opsctl.stack._kafka.kafka_acls), the
external listener only for the peers' egress addresses, and MirrorMaker 2 read-only on its
sources. The local stack runs the same table (tests/opsctl/local/test_security_live.py)."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from opsctl.spec import parse_spec
from opsctl.stack import _names as n
from opsctl.stack import build_stack
from opsctl.stack._gateway import chart_values
from opsctl.stack._kafka import DLQ_TOPIC, kafka_acls, prod_kafka_users
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

STACKS = ("local", "staging", "prod")
WRITES = ("Write", "Create", "Delete", "Alter", "AlterConfigs", "All")


def _regions(stack: str) -> list[Any]:
    spec = parse_spec(shipped_spec(stack))
    return [(spec, plan) for plan in build_stack(spec).regions]


def _kafka_objects(plan: Any, kind: str) -> list[dict[str, Any]]:
    return [o for o in plan.component("kafka").objects if o["kind"] == kind]


def _may(user: str, resource: str, name: str, operation: str, peers: tuple[str, ...]) -> bool:
    return any(
        acl.allows(resource, name, operation) for acl in kafka_acls("eu-central", peers)[user]
    )


@pytest.mark.parametrize("stack", STACKS)
def test_every_listener_is_scram_over_tls_and_only_peers_reach_the_external_one(
    stack: str,
) -> None:
    for spec, plan in _regions(stack):
        (kafka,) = _kafka_objects(plan, "Kafka")
        body = kafka["spec"]["kafka"]
        assert body["authorization"] == {"type": "simple"}
        listeners = {listener["name"]: listener for listener in body["listeners"]}
        for listener in listeners.values():
            assert listener["tls"] is True
            assert listener["authentication"] == {"type": "scram-sha-512"}
        assert listeners["tls"]["configuration"]["brokerCertChainAndKey"]["secretName"] == (
            n.KAFKA_TLS_SECRET
        )
        peers = [r for r in spec.regions if r.name != plan.region.name]
        if not peers:
            assert set(listeners) == {"tls"}
            continue
        cidrs = [{"ipBlock": {"cidr": c}} for peer in peers for c in peer.egress_cidrs]
        assert cidrs
        assert listeners["external"]["networkPolicyPeers"] == cidrs
        policies = {
            o["metadata"]["name"]: o
            for o in plan.component("platform").objects
            if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == n.DATA_NAMESPACE
        }
        # No policy of ours admits the ports that replicate across regions (Kafka's external
        # listener, Cassandra's storage port) from anywhere but the peers; a rule without
        # ports admits every port, so it must name its sources too.
        replicating = {n.KAFKA_PORTS["external"], n.CASSANDRA_INTERNODE_PORT}
        admitted = set()
        for policy in policies.values():
            for rule in policy["spec"].get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                assert "from" in rule, policy["metadata"]["name"]
                if ports & replicating:
                    assert rule["from"] == cidrs, policy["metadata"]["name"]
                    admitted |= ports & replicating
        assert admitted == replicating


@pytest.mark.parametrize("stack", STACKS)
def test_one_kafka_user_per_identity_with_the_tables_acls_and_a_password_from_a_secret(
    stack: str,
) -> None:
    for spec, plan in _regions(stack):
        peers = [r.name for r in spec.regions if r.name != plan.region.name]
        users = {u["metadata"]["name"]: u for u in _kafka_objects(plan, "KafkaUser")}
        assert tuple(users) == prod_kafka_users(plan.region, peers)
        table = kafka_acls(plan.region.name, peers)
        for name, user in users.items():
            assert user["metadata"]["namespace"] == n.DATA_NAMESPACE
            assert user["metadata"]["labels"]["strimzi.io/cluster"] == n.KAFKA_CLUSTER
            auth = user["spec"]["authentication"]
            assert auth["type"] == "scram-sha-512"
            ref = auth["password"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": n.kafka_user_secret(name), "key": n.PASSWORD_KEY}
            acls = user["spec"]["authorization"]["acls"]
            assert len(acls) == len(table[name]) > 0
            for rule, acl in zip(acls, table[name], strict=True):
                assert rule["resource"]["name"] == acl.name
                assert rule["operations"] == list(acl.operations)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_mirror_maker_reads_its_sources_and_writes_only_its_own_kafka(stack: str) -> None:
    for _spec, plan in _regions(stack):
        (mirror,) = _kafka_objects(plan, "KafkaMirrorMaker2")
        clusters = {c["alias"]: c for c in mirror["spec"]["clusters"]}
        own = clusters.pop(plan.region.name)
        assert own["authentication"]["username"] == n.KAFKA_MIRROR_TARGET_USER
        assert own["bootstrapServers"].endswith(f":{n.KAFKA_PORTS['tls']}")
        assert clusters
        for cluster in clusters.values():
            assert cluster["authentication"]["username"] == n.KAFKA_MIRROR_SOURCE_USER
            secret = cluster["authentication"]["passwordSecret"]["secretName"]
            assert secret == n.kafka_user_secret(n.KAFKA_MIRROR_SOURCE_USER)
        for flow in mirror["spec"]["mirrors"]:
            # Offset syncs would otherwise be written into the source.
            assert flow["sourceConnector"]["config"]["offset-syncs.topic.location"] == "target"
            assert flow["checkpointConnector"]["config"]["offset-syncs.topic.location"] == "target"


def test_the_acl_table_is_least_privilege() -> None:
    peers = ("us-east",)
    own, mirrored = n.MESSAGE_TOPIC, f"us-east.{n.MESSAGE_TOPIC}"

    def may(user: str, resource: str, name: str, operation: str) -> bool:
        return _may(user, resource, name, operation, peers)

    # The gateway produces the messages and nothing else.
    assert may(n.KAFKA_GATEWAY_USER, "topic", own, "Write")
    assert not may(n.KAFKA_GATEWAY_USER, "topic", own, "Read")
    assert not may(n.KAFKA_GATEWAY_USER, "topic", DLQ_TOPIC, "Write")
    # The dispatcher consumes its own group only and cannot produce messages.
    assert may(n.KAFKA_DISPATCHER_USER, "topic", own, "Read")
    assert may(n.KAFKA_DISPATCHER_USER, "topic", mirrored, "Read")
    assert may(n.KAFKA_DISPATCHER_USER, "group", "im-dispatcher.eu-central", "Read")
    assert not may(n.KAFKA_DISPATCHER_USER, "group", "im-dispatcher.us-east", "Read")
    assert not may(n.KAFKA_DISPATCHER_USER, "topic", own, "Write")
    assert may(n.KAFKA_DISPATCHER_USER, "topic", DLQ_TOPIC, "Write")
    assert may(n.KAFKA_DISPATCHER_USER, "topic", n.DELIVERIES_TOPIC, "Write")
    # The relay reads the peers' deliveries and writes only its own.
    assert may(n.KAFKA_RELAY_USER, "topic", f"us-east.{n.DELIVERIES_TOPIC}", "Read")
    assert may(n.KAFKA_RELAY_USER, "topic", n.DELIVERIES_TOPIC, "Write")
    assert not may(n.KAFKA_RELAY_USER, "topic", own, "Write")
    # MirrorMaker reads the source and writes nothing there.
    for topic in n.MIRRORED_TOPICS:
        assert may(n.KAFKA_MIRROR_SOURCE_USER, "topic", topic, "Read")
    for acl in kafka_acls("eu-central", peers)[n.KAFKA_MIRROR_SOURCE_USER]:
        assert not set(acl.operations) & set(WRITES), acl
    # ... and on its own Kafka writes the peers' copies, never this region's topics.
    assert may(n.KAFKA_MIRROR_TARGET_USER, "topic", mirrored, "Write")
    for topic in (own, n.DELIVERIES_TOPIC, DLQ_TOPIC):
        assert not may(n.KAFKA_MIRROR_TARGET_USER, "topic", topic, "Write"), topic
    # Nobody but the super user has "All", and no rule names every topic for a write.
    for user, acls in kafka_acls("eu-central", peers).items():
        for acl in acls:
            assert "All" not in acl.operations
            if acl.name == "*" or (acl.prefix and acl.name == ""):
                assert not set(acl.operations) & set(WRITES), user


@pytest.mark.parametrize("stack", STACKS)
def test_kafka_the_app_dials_is_tls_with_a_certificate_it_trusts_and_its_own_logins(
    stack: str,
) -> None:
    for spec, plan in _regions(stack):
        certs = {
            o["metadata"]["name"]: o
            for o in plan.component("pki").objects
            if o["kind"] == "Certificate"
        }
        cert = certs[n.KAFKA_TLS_SECRET]
        values = chart_values(spec, plan.region)["kafka"]
        host, port = values["bootstrap"].rsplit(":", 1)
        assert int(port) == n.KAFKA_PORTS["tls"]
        assert any(fnmatch.fnmatch(host, name) for name in cert["spec"]["dnsNames"])
        ca = certs[values["caSecret"]]
        assert ca["spec"]["issuerRef"] == cert["spec"]["issuerRef"]
        multi = len(spec.regions) > 1
        assert values["auth"] == {
            "gatewaySecret": n.kafka_user_secret(n.KAFKA_GATEWAY_USER),
            "dispatcherSecret": n.kafka_user_secret(n.KAFKA_DISPATCHER_USER),
            "relaySecret": n.kafka_user_secret(n.KAFKA_RELAY_USER) if multi else "",
        }
