"""The multi-region local stack (the staging spec) without processes: its components, start and
stop order, per-region settings, rendered configs, and the input it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opsctl.errors import UserInputError
from opsctl.local import PORT_BLOCK_SIZE, LocalStack, _components, resolve_config
from opsctl.local._components import Phase, StopGroup, build_components, migrations
from opsctl.local._config import LocalConfig, SpecValues, stack_sites
from opsctl.local._render import (
    render_cassandra_rackdc,
    render_cassandra_yaml,
    render_mirrormaker_properties,
    render_prometheus_yml,
)
from opsctl.local._stack import read_recorded
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit

STAGING = SpecValues.from_spec(load_stack(DEFAULT_INFRA_DIR, "staging"), "staging")
REGIONS = ["eu-central", "us-east"]
BASE = 20000


def _config(tmp_path: Path, **kwargs: object) -> LocalConfig:
    return resolve_config(
        state_dir=tmp_path,
        base_port=BASE,
        spec_stack="staging",
        regions=2,
        env={},
        **kwargs,  # type: ignore[arg-type]
    )


def _components_of(tmp_path: Path, **kwargs: object) -> dict[str, _components.Component]:
    return {c.name: c for c in build_components(_config(tmp_path, **kwargs), STAGING)}


def test_staging_is_two_regions_with_replication_factor_one() -> None:
    assert STAGING.multi_region
    assert STAGING.region_names == REGIONS
    assert (STAGING.kafka_replication_factor, STAGING.cassandra_replication_factor) == (1, 1)
    assert [r.kafka_partitions for r in STAGING.regions] == [12, 12]


def test_prod_has_more_regions_than_one_machine_runs() -> None:
    with pytest.raises(UserInputError, match="stack 'prod' has 3 regions") as caught:
        SpecValues.from_spec(load_stack(DEFAULT_INFRA_DIR, "prod"), "prod")
    assert "staging" in (caught.value.hint or "")


def test_a_multi_region_stack_defaults_to_one_gateway_per_region(tmp_path: Path) -> None:
    assert _config(tmp_path).gateways == 1
    assert _config(tmp_path, gateways=2).gateways == 2
    assert resolve_config(state_dir=tmp_path, env={}).gateways == 2  # one region: as before


def test_each_region_has_its_own_port_block(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.region_ports(0) == config.ports
    assert config.region_ports(1).redis == BASE + PORT_BLOCK_SIZE
    with pytest.raises(UserInputError, match="out of range"):
        resolve_config(base_port=65535 - PORT_BLOCK_SIZE, regions=2, env={})


def test_every_region_runs_its_own_processes_and_one_mirrormaker(tmp_path: Path) -> None:
    components = _components_of(tmp_path)
    for region in REGIONS:
        for part in (
            "redis",
            "kafka",
            "cassandra",
            "dispatcher",
            "relay",
            "gw-1",
            "redis-exporter",
        ):
            assert components[f"{region}/{part}"].region == region
    assert components["witness/cassandra"].region == "witness"
    assert {"mirrormaker", "prometheus", "alertmanager"} <= set(components)
    assert "eu-central/gw-2" not in components
    # Cassandra: one node per DC on its own loopback address, the same port.
    nodes = [components[f"{dc}/cassandra"] for dc in [*REGIONS, "witness"]]
    assert [node.host for node in nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert len({node.port for node in nodes}) == 1
    # Kafka: a port block each.
    assert components["us-east/kafka"].port - components["eu-central/kafka"].port == (
        PORT_BLOCK_SIZE
    )


def test_the_jvms_start_one_at_a_time_and_mirrormaker_before_the_dispatchers(
    tmp_path: Path,
) -> None:
    components = list(_components_of(tmp_path).values())
    infra = [c for c in components if c.phase is Phase.INFRA]
    jvms = [c for c in infra if c.stop_group is StopGroup.JVM_STORES]
    assert [c.name for c in jvms] == [
        "eu-central/cassandra",
        "us-east/cassandra",
        "witness/cassandra",
        "eu-central/kafka",
        "us-east/kafka",
    ]
    waves = [c.wave for c in jvms]
    assert len(set(waves)) == len(waves)  # never two JVMs starting together
    assert waves == sorted(waves)
    by_name = {c.name: c for c in components}
    mirror = by_name["mirrormaker"]
    assert mirror.phase is Phase.IM  # after the migrations created the topics
    for region in REGIONS:
        assert by_name[f"{region}/dispatcher"].wave > mirror.wave
        assert by_name[f"{region}/relay"].wave > mirror.wave
        assert by_name[f"{region}/gw-1"].wave == mirror.wave


def test_down_stops_dependents_first(tmp_path: Path) -> None:
    components = _components_of(tmp_path)
    order = [
        components["us-east/gw-1"].stop_group,
        components["us-east/dispatcher"].stop_group,
        components["us-east/relay"].stop_group,
        components["mirrormaker"].stop_group,
        components["prometheus"].stop_group,
        components["eu-central/kafka"].stop_group,
        components["witness/cassandra"].stop_group,
        components["eu-central/redis"].stop_group,
    ]
    assert order == sorted(order)
    assert components["mirrormaker"].stop_group is StopGroup.MIRROR
    assert components["mirrormaker"].stop_group < components["us-east/kafka"].stop_group


def test_region_processes_use_their_region(tmp_path: Path) -> None:
    components = _components_of(tmp_path)
    for i, region in enumerate(REGIONS):
        env = components[f"{region}/dispatcher"].env
        ports = _config(tmp_path).region_ports(i)
        assert env["IMGW_REGION"] == env["IMGW_CASSANDRA_DATACENTER"] == region
        assert env["IMGW_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{ports.kafka}"
        assert env["IMGW_REDIS_URL"] == f"rediss://127.0.0.1:{ports.redis}/0"
        assert env["IMGW_CASSANDRA_HOSTS"] == f"127.0.0.{i + 1}:{BASE + 3}"
        assert env["IMGW_KAFKA_PARTITIONS"] == "12"
        assert env["IMGW_KAFKA_REPLICATION_FACTOR"] == "1"
        assert env["IMGW_CASSANDRA_REPLICATION_FACTOR"] == "1"
        # One secret: a token works in every region.
        assert env["IMGW_JWT_HS256_SECRET_FILE"] == str(tmp_path / "secrets" / "jwt-hs256.key")


@pytest.mark.parametrize("declared", [True, False])
def test_imgw_regions_only_when_the_gateway_declares_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: bool
) -> None:
    # The gateway refuses unknown IMGW_* variables (gateway/config.py).
    monkeypatch.setattr(_components, "gateway_declares", lambda setting: declared)
    env = _components_of(tmp_path)["us-east/dispatcher"].env
    if declared:
        assert env["IMGW_REGIONS"] == "eu-central,us-east"
    else:
        assert "IMGW_REGIONS" not in env


def test_gateway_declares_reads_the_gateway_config() -> None:
    from gateway.config import Config

    assert _components.gateway_declares("region")
    assert _components.gateway_declares("regions") == ("regions" in Config.model_fields)
    assert not _components.gateway_declares("no_such_setting")


def test_migrations_run_per_region_then_the_witness_dc(tmp_path: Path) -> None:
    config = _config(tmp_path)
    runs = migrations(config, STAGING, _components.Layout(tmp_path))
    assert [run.name for run in runs] == [
        "eu-central/migrate",
        "us-east/migrate",
        "witness/migrate",
    ]
    assert [run.env["IMGW_CASSANDRA_DATACENTER"] for run in runs] == [*REGIONS, "witness"]
    # Every run knows the stack's regions (the shard map's first homes are over them).
    if _components.gateway_declares("regions"):
        assert {run.env["IMGW_REGIONS"] for run in runs} == {"eu-central,us-east"}
    assert runs[2].argv[-2:] == ["--only", "cql"]  # the witness has no Kafka
    assert runs[2].env["IMGW_REGION"] == "eu-central"  # a DC, not a region
    assert runs[1].env["IMGW_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{config.region_ports(1).kafka}"


def test_cassandra_nodes_gossip_their_dc(tmp_path: Path) -> None:
    config = _config(tmp_path)
    seeds = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    documents = [
        yaml.safe_load(render_cassandra_yaml(config, tmp_path, host=host, seeds=seeds, token=i))
        for i, host in enumerate(seeds)
    ]
    for host, document in zip(seeds, documents, strict=True):
        assert document["endpoint_snitch"] == "GossipingPropertyFileSnitch"
        assert document["listen_address"] == document["rpc_address"] == host
        assert document["native_transport_port"] == BASE + 3
        assert document["seed_provider"][0]["parameters"][0]["seeds"] == ",".join(
            f"{seed}:{BASE + 4}" for seed in seeds
        )
    assert len({document["initial_token"] for document in documents}) == 3
    assert render_cassandra_rackdc("us-east") == "dc=us-east\nrack=rack1\n"
    node = _components_of(tmp_path)["us-east/cassandra"]
    assert any(arg.startswith("-Dcassandra-rackdc.properties=file:") for arg in node.argv)


def test_mirrormaker_mirrors_every_direction_with_the_default_policy() -> None:
    rendered = render_mirrormaker_properties(
        [("eu-central", "127.0.0.1:1"), ("us-east", "127.0.0.1:2")]
    )
    # As java.util.Properties reads them: a doubled backslash is one backslash.
    props = {
        key: value.replace("\\\\", "\\")
        for key, value in (line.split(" = ", 1) for line in rendered.splitlines())
    }
    assert "\\." not in rendered.replace("\\\\.", "")  # no single backslash before a dot
    # Checkpoints of the source region's dispatcher group only, as the builders configure.
    assert props["eu-central->us-east.groups"] == r"im-dispatcher\.eu-central"
    assert props["us-east->eu-central.groups"] == r"im-dispatcher\.us-east"
    assert "groups" not in props
    for alias in ("eu-central", "us-east"):
        assert props[f"{alias}.scheduled.rebalance.max.delay.ms"] == "0"
    assert props["clusters"] == "eu-central, us-east"
    assert props["eu-central->us-east.enabled"] == props["us-east->eu-central.enabled"] == "true"
    assert props["replication.policy.class"].endswith(".DefaultReplicationPolicy")
    assert props["topics"] == r"im\.messages|im\.deliveries"
    assert props["emit.checkpoints.enabled"] == "true"
    assert props["sync.group.offsets.enabled"] == "false"
    for key in (
        "replication.factor",
        "checkpoints.topic.replication.factor",
        "heartbeats.topic.replication.factor",
        "offset-syncs.topic.replication.factor",
        "offset.storage.replication.factor",
        "status.storage.replication.factor",
        "config.storage.replication.factor",
    ):
        assert props[key] == "1", key


def test_mirrormaker_runs_the_connect_mirror_jars(tmp_path: Path) -> None:
    mirror = _components_of(tmp_path)["mirrormaker"]
    assert "org.apache.kafka.connect.mirror.MirrorMaker" in mirror.argv
    classpath = mirror.argv[mirror.argv.index("-cp") + 1]
    assert "/jars/connect-mirror-" in classpath
    assert "-Xmx256m" in mirror.argv
    assert "eu-central.im.messages" in mirror.health.describe()
    assert "us-east.im.messages" in mirror.health.describe()


def test_prometheus_labels_every_target_with_its_region(tmp_path: Path) -> None:
    config = _config(tmp_path)
    document = yaml.safe_load(
        render_prometheus_yml(config, STAGING, None, stack_sites(config, STAGING))
    )
    regions: dict[str, set[str]] = {}
    for job in document["scrape_configs"]:
        for group in job["static_configs"]:
            assert group["labels"]["region"], (job["job_name"], group)
            assert group["labels"]["stack"] == "staging"
            regions.setdefault(job["job_name"], set()).add(group["labels"]["region"])
    for job in ("im-gateway", "im-dispatcher", "im-relay", "kafka", "redis"):
        assert regions[job] == set(REGIONS), job
    assert regions["cassandra"] == {*REGIONS, "witness"}
    assert "mirrormaker" in regions
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    cassandra = [group["targets"][0] for group in jobs["cassandra"]["static_configs"]]
    assert cassandra == [f"127.0.0.{i}:{BASE + 27}" for i in (1, 2, 3)]


def test_the_recorded_multi_region_stack_round_trips(tmp_path: Path) -> None:
    stack = LocalStack(_config(tmp_path / "state"), spec=STAGING)
    stack._prepare_state_dir()
    recorded = read_recorded(stack.config.state_dir)
    assert recorded == (stack.config, STAGING)
    again = LocalStack.recorded(stack.config.state_dir)
    assert again.names() == stack.names()
    assert [r.name for r in again.info.regions] == REGIONS
    assert again.info.region("us-east").cassandra_host == "127.0.0.2"
    assert again.imgw_env("us-east")["IMGW_REGION"] == "us-east"
    with pytest.raises(UserInputError, match="no region 'ap-east'"):
        again.imgw_env("ap-east")


@pytest.mark.parametrize(
    ("stack", "message"),
    [("prod", "stack 'prod' has 3 regions"), ("nope", "stack 'nope' not found")],
)
def test_cli_refuses_bad_stacks_before_starting_anything(
    tmp_path: Path, opsctl: OpsctlRunner, stack: str, message: str
) -> None:
    state = tmp_path / "state"
    result = opsctl("local", "up", "--stack", stack, "--state-dir", str(state))
    assert result.exit_code == 2
    assert message in result.stderr
    assert not state.exists()
