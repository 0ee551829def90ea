"""The pure builders: every region gets every part, sized and wired from the spec."""

from __future__ import annotations

from typing import Any

import pytest

from opsctl.errors import InvalidInputFile
from opsctl.spec import StackSpec, parse_spec
from opsctl.stack import (
    COMPONENT_ORDER,
    DASHBOARD_LABEL,
    RegionPlan,
    build_stack,
    cassandra_replication,
    dashboard_configmaps,
)
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

STACKS = ("local", "staging", "prod")


def _spec(stack: str) -> StackSpec:
    return parse_spec(shipped_spec(stack))


def _objects(plan: RegionPlan, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in plan.objects() if obj["kind"] == kind]


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[StackSpec, list[RegionPlan]]:
    spec = _spec(request.param)
    return spec, list(build_stack(spec).regions)


def test_every_region_gets_every_part_in_dependency_order(
    stack: tuple[StackSpec, list[RegionPlan]],
) -> None:
    spec, plans = stack
    assert [p.region.name for p in plans] == [r.name for r in spec.regions]
    for plan in plans:
        names = [c.name for c in plan.components]
        assert tuple(names) == COMPONENT_ORDER
        for index, component in enumerate(plan.components):
            # A part only depends on parts applied before it.
            assert set(component.depends_on) <= set(names[:index]), component.name


def test_operators_are_pinned_helm_releases(stack: tuple[StackSpec, list[RegionPlan]]) -> None:
    _, plans = stack
    for plan in plans:
        charts = {release.chart: release for release in plan.releases()}
        assert set(charts) == {
            "cert-manager",
            "strimzi-kafka-operator",
            "cass-operator",
            "redis-operator",
            "kube-prometheus-stack",
        }
        for release in charts.values():
            assert release.version
            assert release.version[0] in "v0123456789"
            assert release.repo.startswith("https://")


def test_namespaces_come_first_and_data_namespaces_deny_by_default(
    stack: tuple[StackSpec, list[RegionPlan]],
) -> None:
    _, plans = stack
    for plan in plans:
        platform = plan.component("platform")
        assert platform.objects[0]["kind"] == "Namespace"
        denies = [
            o for o in _objects(plan, "NetworkPolicy") if o["metadata"]["name"] == "default-deny"
        ]
        assert {d["metadata"]["namespace"] for d in denies} == {"im", "im-data"}
        for deny in denies:
            assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_kafka_is_kraft_with_node_pools_and_topic_from_spec(
    stack: tuple[StackSpec, list[RegionPlan]],
) -> None:
    spec, plans = stack
    for region, plan in zip(spec.regions, plans, strict=True):
        (kafka,) = _objects(plan, "Kafka")
        assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
        config = kafka["spec"]["kafka"]["config"]
        assert config["min.insync.replicas"] == region.kafka.min_insync_replicas
        assert config["default.replication.factor"] == region.kafka.replication_factor
        pools = _objects(plan, "KafkaNodePool")
        brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
        assert brokers == region.kafka.brokers
        assert any("controller" in p["spec"]["roles"] for p in pools)
        for pool in pools:
            assert pool["spec"]["storage"]["volumes"][0]["size"] in {region.kafka.storage, "10Gi"}
        topic = next(
            t for t in _objects(plan, "KafkaTopic") if t["spec"]["topicName"] == "im.messages"
        )
        assert topic["spec"]["partitions"] == region.kafka.message_partitions
        assert topic["spec"]["replicas"] == region.kafka.replication_factor
        assert topic["spec"]["config"]["min.insync.replicas"] == region.kafka.min_insync_replicas


def test_mirror_maker_pulls_every_other_region(stack: tuple[StackSpec, list[RegionPlan]]) -> None:
    spec, plans = stack
    for region, plan in zip(spec.regions, plans, strict=True):
        mirrors = _objects(plan, "KafkaMirrorMaker2")
        peers = {r.name for r in spec.regions} - {region.name}
        if not peers:
            assert mirrors == []
            continue
        (mirror,) = mirrors
        assert mirror["spec"]["connectCluster"] == region.name
        assert {m["sourceCluster"] for m in mirror["spec"]["mirrors"]} == peers
        assert all(m["targetCluster"] == region.name for m in mirror["spec"]["mirrors"])
        assert all(
            m["topicsPattern"] == r"im\.messages|im\.deliveries" for m in mirror["spec"]["mirrors"]
        )


def test_cassandra_replicates_per_datacenter_as_the_spec_says(
    stack: tuple[StackSpec, list[RegionPlan]],
) -> None:
    spec, plans = stack
    replication = cassandra_replication(spec)
    assert replication["class"] == "NetworkTopologyStrategy"
    assert {k: v for k, v in replication.items() if k != "class"} == {
        r.name: r.cassandra.replication_factor for r in spec.regions
    }
    for region, plan in zip(spec.regions, plans, strict=True):
        (dc,) = _objects(plan, "CassandraDatacenter")
        assert dc["metadata"]["name"] == region.name  # the DC name NTS refers to
        assert dc["spec"]["size"] == region.cassandra.nodes
        racks = dc["spec"]["racks"]
        assert len(racks) == min(region.cassandra.nodes, len(region.zones))
        seeds = set(dc["spec"].get("additionalSeeds", []))
        assert len(seeds) == len(spec.regions) - 1
        keyspace_maps = _objects(plan, "ConfigMap")
        cql = [m for m in keyspace_maps if m["metadata"]["name"] == "im-cassandra-keyspace"]
        if region.role == "primary":
            (config,) = cql
            for name, factor in replication.items():
                if name != "class":
                    assert f"'{name}': '{factor}'" in config["data"]["keyspace.cql"]
        else:
            assert cql == []


def test_redis_kind_follows_the_sizing(stack: tuple[StackSpec, list[RegionPlan]]) -> None:
    spec, plans = stack
    for region, plan in zip(spec.regions, plans, strict=True):
        (redis,) = plan.component("redis").objects[:1]
        if region.redis.shards > 1:
            assert redis["kind"] == "RedisCluster"
            assert redis["spec"]["clusterSize"] == region.redis.shards
            followers = redis["spec"]["redisFollower"]["replicas"]
            assert followers == region.redis.shards * region.redis.replicas_per_shard
        elif region.redis.replicas_per_shard:
            assert redis["kind"] == "RedisReplication"
        else:
            assert redis["kind"] == "Redis"


def test_gateway_values_point_at_what_the_builders_create(
    stack: tuple[StackSpec, list[RegionPlan]],
) -> None:
    spec, plans = stack
    for region, plan in zip(spec.regions, plans, strict=True):
        (chart,) = plan.component("gateway").charts
        values = chart.values
        (kafka,) = _objects(plan, "Kafka")
        (dc,) = _objects(plan, "CassandraDatacenter")
        redis = plan.component("redis").objects[0]
        # Strimzi names the bootstrap Service <kafka>-kafka-bootstrap; cass-operator names the
        # client Service <cluster>-<dc>-service; the redis operator names it after the resource.
        assert values["kafka"]["bootstrap"].startswith(
            f"{kafka['metadata']['name']}-kafka-bootstrap.im-data."
        )
        assert values["cassandra"]["hosts"].startswith(
            f"{dc['spec']['clusterName']}-{dc['metadata']['name']}-service.im-data."
        )
        assert values["cassandra"]["datacenter"] == dc["metadata"]["name"]
        assert f"//{redis['metadata']['name']}" in values["redis"]["url"]
        # A sharded Redis is a Redis Cluster, and the gateway is told to speak its protocol.
        assert values["redis"]["cluster"] is (redis["kind"] == "RedisCluster")
        assert values["redis"]["cluster"] is (region.redis.shards > 1)
        assert values["region"] == region.name
        gateway = values["gateway"]
        assert gateway["autoscaling"]["minReplicas"] == region.gateway.replicas
        assert gateway["autoscaling"]["maxReplicas"] == region.gateway.max_replicas
        assert gateway["autoscaling"]["connectionsPerPod"] == region.gateway.connections_per_pod
        assert gateway["limits"]["maxConnections"] > region.gateway.connections_per_pod
        assert 30 <= gateway["drainWindowSeconds"] <= 600
        assert values["dispatcher"]["replicas"] == region.dispatcher.replicas
        assert f"{gateway['image']['repository']}:{gateway['image']['tag']}" == spec.images.gateway


def test_secondary_regions_copy_the_primary_root_ca(
    stack: tuple[StackSpec, list[RegionPlan]],
) -> None:
    spec, plans = stack
    for region, plan in zip(spec.regions, plans, strict=True):
        pki = plan.component("pki")
        roots = [o for o in pki.objects if o["kind"] == "Certificate" and o["spec"].get("isCA")]
        if region.role == "primary":
            assert len(roots) == 1
            assert pki.secret_copies == ()
        else:
            assert roots == []
            (copy,) = pki.secret_copies
            assert copy.source_region == spec.primary.name


def test_prometheus_rules_and_alertmanager_come_from_opsctl_alerts() -> None:
    from opsctl.alerts import alertmanager_config

    spec = _spec("prod")
    plan = build_stack(spec).regions[0]
    rules = _objects(plan, "PrometheusRule")
    assert rules
    assert all(r["metadata"]["namespace"] == "monitoring" for r in rules)
    (release,) = plan.component("monitoring").releases
    assert release.values["alertmanager"]["config"] == alertmanager_config(spec)
    assert release.values["prometheus"]["prometheusSpec"]["retention"] == "15d"


def test_dashboard_hook_makes_sidecar_configmaps() -> None:
    spec = _spec("local")
    dashboard = {"uid": "im-Gateway", "title": "Gateway", "panels": [{"type": "stat"}]}
    (config_map,) = dashboard_configmaps(spec, spec.regions[0], [dashboard])
    assert config_map["metadata"]["labels"][DASHBOARD_LABEL] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["name"] == "im-dashboard-im-gateway"
    (text,) = config_map["data"].values()
    assert '"uid": "im-Gateway"' in text
    plan = build_stack(spec, dashboards=[dashboard]).regions[0]
    assert config_map in list(plan.component("monitoring").objects)


def test_dashboard_without_uid_is_rejected() -> None:
    from opsctl.errors import UserInputError

    spec = _spec("local")
    with pytest.raises(UserInputError, match="no 'uid'"):
        dashboard_configmaps(spec, spec.regions[0], [{"title": "x"}])


def test_two_redis_shards_cannot_be_built_and_name_the_field() -> None:
    data = shipped_spec("prod")
    data["regions"][1]["redis"]["shards"] = 2
    with pytest.raises(InvalidInputFile) as caught:
        build_stack(parse_spec(data))
    assert [p.path for p in caught.value.problems] == ["regions[1].redis.shards"]
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("field", "change", "path"),
    [
        ("cassandra", {"replicationFactor": 10}, "regions[0].cassandra.replicationFactor"),
        ("kafka", {"messagePartitions": 8}, "regions[0].kafka.messagePartitions"),
    ],
)
def test_unsatisfiable_specs_fail_in_the_shared_loader(
    field: str, change: dict[str, int], path: str
) -> None:
    # The same loader the Pulumi program uses; nothing is built.
    data = shipped_spec("prod")
    data["regions"][0][field].update(change)
    with pytest.raises(InvalidInputFile) as caught:
        parse_spec(data)
    assert path in [p.path for p in caught.value.problems]
