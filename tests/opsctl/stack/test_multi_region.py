"""The builders' cross-region objects match docs/multi-region.md and what the IM processes
read: MirrorMaker 2's topics, replication policy and checkpoints; the topics that must exist."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.config import Config
from opsctl.errors import InvalidInputFile
from opsctl.local._render import MIRRORED_TOPICS as LOCAL_MIRRORED_TOPICS
from opsctl.spec import Region, StackSpec, parse_spec
from opsctl.stack import _names as n
from opsctl.stack import build_stack
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

DESIGN = "docs/multi-region.md"


def _objects(spec: StackSpec, region: Region, kind: str) -> list[dict[str, Any]]:
    plan = build_stack(spec, regions=[region.name], dashboards=[]).regions[0]
    return [obj for obj in plan.objects() if obj["kind"] == kind]


def _gateway_config(spec: StackSpec, region: Region) -> Config:
    """What the IM processes of ``region`` derive from IMGW_REGION / IMGW_REGIONS."""
    return Config(region=region.name, regions=",".join(r.name for r in spec.regions))


@pytest.fixture(scope="module", params=("staging", "prod"))
def spec(request: pytest.FixtureRequest) -> StackSpec:
    return parse_spec(shipped_spec(request.param))


def test_the_design_names_the_topics_the_builders_mirror() -> None:
    from opsctl.paths import REPO_ROOT

    design = (REPO_ROOT / DESIGN).read_text()
    for topic in n.MIRRORED_TOPICS:
        assert f"`{topic}`" in design or f"{topic}`" in design, topic
    # The local stack mirrors the same topics as the clusters.
    assert LOCAL_MIRRORED_TOPICS.split("|") == [t.replace(".", r"\.") for t in n.MIRRORED_TOPICS]


def test_mirror_maker_mirrors_what_the_dispatcher_and_relay_consume(spec: StackSpec) -> None:
    for region in spec.regions:
        (mirror,) = _objects(spec, region, "KafkaMirrorMaker2")
        config = _gateway_config(spec, region)
        by_source = {m["sourceCluster"]: m for m in mirror["spec"]["mirrors"]}
        assert sorted(by_source) == sorted(config.peers)
        for peer in config.peers:
            spec_mirror = by_source[peer]
            pattern = re.compile(spec_mirror["topicsPattern"])
            # Every topic the design mirrors, and nothing else (the DLQ stays home).
            for topic in (config.kafka_topic, config.kafka_deliveries_topic):
                assert pattern.fullmatch(topic), (peer, topic)
            for other in ("im.messages.dlq", "im.events", "xim.messages", "__consumer_offsets"):
                assert not pattern.fullmatch(other), other
            # DefaultReplicationPolicy with "." : the names the processes subscribe to.
            for connector in ("sourceConnector", "checkpointConnector"):
                settings = spec_mirror[connector]["config"]
                assert settings["replication.policy.class"] == (
                    "org.apache.kafka.connect.mirror.DefaultReplicationPolicy"
                )
                assert settings["replication.policy.separator"] == "."
            peer_region = spec.region(peer)
            assert n.mirrored_topic(peer_region, config.kafka_topic) == f"{peer}.im.messages"
            assert n.mirrored_topic(peer_region, config.kafka_deliveries_topic) == (
                f"{peer}.im.deliveries"
            )


def test_checkpoints_cover_exactly_the_peer_dispatcher_group(spec: StackSpec) -> None:
    for region in spec.regions:
        (mirror,) = _objects(spec, region, "KafkaMirrorMaker2")
        for spec_mirror in mirror["spec"]["mirrors"]:
            peer = spec_mirror["sourceCluster"]
            groups = re.compile(spec_mirror["groupsPattern"])
            peer_group = _gateway_config(spec, spec.region(peer)).consumer_group
            assert peer_group == f"im-dispatcher.{peer}"
            assert groups.fullmatch(peer_group)
            own = _gateway_config(spec, region)
            for other in (own.consumer_group, own.relay_group, "im-dispatcher", "im-dispatcherX"):
                assert not groups.fullmatch(other), other
            checkpoint = spec_mirror["checkpointConnector"]["config"]
            assert checkpoint["emit.checkpoints.enabled"] == "true"
            assert 0 < checkpoint["emit.checkpoints.interval.seconds"] <= 60
            # Translated offsets are never written into this region's groups.
            assert checkpoint["sync.group.offsets.enabled"] == "false"
            source = spec_mirror["sourceConnector"]["config"]
            assert source["offset.lag.max"] <= 100
            assert source["replication.factor"] == region.kafka.replication_factor


def test_every_topic_the_processes_use_exists_since_auto_create_is_off(spec: StackSpec) -> None:
    for region in spec.regions:
        (kafka,) = _objects(spec, region, "Kafka")
        assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
        names = {t["spec"]["topicName"] for t in _objects(spec, region, "KafkaTopic")}
        config = _gateway_config(spec, region)
        assert {config.kafka_topic, config.kafka_deliveries_topic} <= names


def test_chart_values_carry_the_specs_regions_and_the_relay() -> None:
    from opsctl.stack._gateway import chart_values

    for stack in ("local", "staging", "prod"):
        spec = parse_spec(shipped_spec(stack))
        multi = len(spec.regions) > 1
        for region in spec.regions:
            values = chart_values(spec, region)
            assert values["region"] == region.name
            assert values["regions"] == ([r.name for r in spec.regions] if multi else [])
            assert values["relay"]["enabled"] is multi
            assert values["kafka"]["deliveriesTopic"] == Config().kafka_deliveries_topic


def test_the_app_quota_leaves_room_for_the_relay() -> None:
    from opsctl.stack import _sizing

    spec = parse_spec(shipped_spec("staging"))
    for region in spec.regions:
        (quota,) = [
            q for q in _objects(spec, region, "ResourceQuota") if q["metadata"]["namespace"] == "im"
        ]
        without = _sizing.app_totals(region, relay=False)
        assert int(quota["spec"]["hard"]["pods"]) > without.pods
        assert int(quota["spec"]["hard"]["pods"]) == _sizing.app_totals(region).pods


def _keyspace_job(spec: StackSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    primary = next(r for r in spec.regions if r.role == "primary")
    (config,) = [
        c
        for c in _objects(spec, primary, "ConfigMap")
        if c["metadata"]["name"] == "im-cassandra-keyspace"
    ]
    (job,) = _objects(spec, primary, "Job")
    return config, job


def test_keyspace_job_creates_the_control_keyspace_in_every_dc(spec: StackSpec) -> None:
    from opsctl.stack import cassandra_replication

    assert n.CASSANDRA_CONTROL_KEYSPACE == Config().cassandra_control_keyspace == "im_control"
    config, _ = _keyspace_job(spec)
    cql = config["data"]["keyspace.cql"]
    strategy = cassandra_replication(spec)
    assert set(strategy) - {"class"} == {r.name for r in spec.regions}
    literal = "{" + ", ".join(f"'{k}': '{v}'" for k, v in strategy.items()) + "}"
    for keyspace in ("im", "im_control"):
        assert f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {literal};" in cql
        # ALTER too: a keyspace gateway.migrate created first (its own DC only) gets every DC.
        assert f"ALTER KEYSPACE {keyspace} WITH replication = {literal};" in cql


def test_keyspace_job_applies_the_gateways_control_migrations(spec: StackSpec) -> None:
    from opsctl.paths import REPO_ROOT

    config, job = _keyspace_job(spec)
    migrations = sorted((REPO_ROOT / "gateway" / "migrations" / "control").glob("*.cql"))
    assert migrations, "gateway/migrations/control has no migration"
    for path in migrations:
        text = config["data"][f"control-{path.name}"]
        assert text == path.read_text()
        # Idempotent, so gateway.migrate may apply (and record) them again.
        statements = [s for s in re.split(r";\s*", re.sub(r"--.*", "", text)) if s.strip()]
        assert statements
        assert all("IF NOT EXISTS" in s.upper() for s in statements), path.name
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = container["command"][2]
    assert container["command"][:2] == ["sh", "-c"]
    assert script.startswith("set -e\n")
    lines = script.splitlines()
    keyspace_line = next(i for i, line in enumerate(lines) if "-f /cql/keyspace.cql" in line)
    control_line = next(i for i, line in enumerate(lines) if "-k im_control" in line)
    assert keyspace_line < control_line
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/cql"]]["configMap"]["name"] == config["metadata"]["name"]
    # Credentials from the superuser Secret, never inline.
    assert '-p "$CQL_PASSWORD"' in script
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["CQL_PASSWORD"]["valueFrom"]


def test_grafana_admin_comes_from_a_secret_never_a_default_password() -> None:
    import json

    for stack in ("local", "staging", "prod"):
        spec = parse_spec(shipped_spec(stack))
        for plan in build_stack(spec, dashboards=[]).regions:
            (release,) = [r for r in plan.releases() if r.chart == "kube-prometheus-stack"]
            grafana = release.values["grafana"]
            assert grafana["admin"] == {
                "existingSecret": "grafana-admin",
                "userKey": "admin-user",
                "passwordKey": "admin-password",
            }
            # Cleared, so even without the Secret the chart could not fall back to its default.
            assert grafana["adminPassword"] == ""
            assert "prom-operator" not in json.dumps(release.values)


def test_the_specs_jwks_and_claims_reach_the_chart() -> None:
    from opsctl.stack._gateway import chart_values

    raw = shipped_spec("staging")
    raw["auth"] = {
        "jwksSecretRef": "idp-jwks",
        "issuer": "https://auth.example/",
        "audience": "im-gateway",
    }
    spec = parse_spec(raw)
    for region in spec.regions:
        assert chart_values(spec, region)["auth"] == {
            "existingSecret": "idp-jwks",
            "jwksUrl": "",
            "issuer": "https://auth.example/",
            "audience": "im-gateway",
        }
    # The IdP's URL instead: the chart mounts no Secret (its default one is cleared).
    raw["auth"] = {
        "jwksUrl": "https://auth.example/jwks.json",
        "issuer": "https://auth.example/",
        "audience": "im-gateway",
    }
    by_url = parse_spec(raw)
    assert chart_values(by_url, by_url.regions[0])["auth"] == {
        "existingSecret": "",
        "jwksUrl": "https://auth.example/jwks.json",
        "issuer": "https://auth.example/",
        "audience": "im-gateway",
    }


def test_every_shipped_spec_gives_the_gateways_a_jwks_and_its_claims() -> None:
    """Without them the chart refuses to render (a JWKS without iss/aud never starts)."""
    from opsctl.stack._gateway import chart_values

    for stack in ("local", "staging", "prod"):
        spec = parse_spec(shipped_spec(stack))
        auth = chart_values(spec, spec.regions[0])["auth"]
        assert auth["existingSecret"] or auth["jwksUrl"], stack
        assert auth["issuer"], stack
        assert auth["audience"], stack
    raw = shipped_spec("staging")
    del raw["auth"]
    with pytest.raises(InvalidInputFile) as refused:
        parse_spec(raw)
    problems = [(p.path, p.message) for p in refused.value.problems]
    assert len(problems) == 1
    assert problems[0][0] == "auth"
    assert "required" in problems[0][1]
