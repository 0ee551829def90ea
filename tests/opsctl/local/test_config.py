"""The local stack's config: port layout, precedence, validation and rendered config files."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
import yaml

from opsctl.errors import UserInputError
from opsctl.local import (
    DEFAULT_BASE_PORT,
    DEFAULT_STATE_DIR,
    PORT_BLOCK_SIZE,
    Ports,
    parse_port_overrides,
    resolve_config,
)
from opsctl.local._components import Layout, StopGroup, build_components, imgw_env
from opsctl.local._config import PORT_OFFSETS, jvm_versions
from opsctl.local._health import _parse_metadata_v4
from opsctl.local._render import (
    render_alertmanager_yml,
    render_cassandra_yaml,
    render_kafka_properties,
    render_prometheus_yml,
    render_redis_conf,
)
from opsctl.paths import REPO_ROOT
from tests.opsctl.local.expected import IM_COMPONENTS, INFRA_COMPONENTS, SPEC

pytestmark = pytest.mark.unit
# Every IMGW_* variable the contract lists for migrate, the dispatcher and the gateways.
CONTRACT_VARS = {
    "IMGW_LISTEN_HOST",
    "IMGW_KAFKA_BOOTSTRAP",
    "IMGW_KAFKA_TOPIC",
    "IMGW_KAFKA_PARTITIONS",
    "IMGW_KAFKA_REPLICATION_FACTOR",
    "IMGW_REDIS_URL",
    "IMGW_REDIS_USERNAME",
    "IMGW_REDIS_PASSWORD_FILE",
    "IMGW_REDIS_CA_FILE",
    "IMGW_CASSANDRA_HOSTS",
    "IMGW_CASSANDRA_USERNAME",
    "IMGW_CASSANDRA_PASSWORD_FILE",
    "IMGW_CASSANDRA_CA_FILE",
    "IMGW_CASSANDRA_KEYSPACE",
    "IMGW_CASSANDRA_REPLICATION_FACTOR",
    "IMGW_JWT_HS256_SECRET_FILE",
    "IMGW_JWT_ISSUER",
    "IMGW_JWT_AUDIENCE",
    "IMGW_DRAIN_WINDOW_S",
    "IMGW_MAX_CONNECTIONS_PER_IP",
    "IMGW_REGION",
}


def test_defaults_use_the_19xxx_block_and_the_repo_state_dir() -> None:
    config = resolve_config(env={})
    assert config.state_dir == DEFAULT_STATE_DIR
    assert config.ports.redis == DEFAULT_BASE_PORT == 19100
    assert config.ports.gateway(0) == 19110
    assert config.gateways == 2


def test_every_port_is_base_plus_its_offset() -> None:
    ports = Ports.from_base(25000)
    for name, offset in PORT_OFFSETS.items():
        assert getattr(ports, name) == 25000 + offset
    assert [ports.gateway(i) for i in range(3)] == [25010, 25011, 25012]


def test_flag_beats_env_beats_default(tmp_path: Path) -> None:
    env = {
        "OPSCTL_LOCAL_STATE_DIR": str(tmp_path / "from-env"),
        "OPSCTL_LOCAL_BASE_PORT": "23000",
        "OPSCTL_LOCAL_GATEWAYS": "3",
    }
    from_env = resolve_config(env=env)
    assert (from_env.state_dir, from_env.ports.redis, from_env.gateways) == (
        tmp_path / "from-env",
        23000,
        3,
    )
    from_flags = resolve_config(state_dir=tmp_path / "flag", base_port=24000, gateways=1, env=env)
    assert (from_flags.state_dir, from_flags.ports.redis, from_flags.gateways) == (
        tmp_path / "flag",
        24000,
        1,
    )


def test_single_port_override() -> None:
    config = resolve_config(base_port=24000, port_overrides={"kafka": 24999}, env={})
    assert config.ports.kafka == 24999
    assert config.ports.redis == 24000


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"base_port": 80}, {}, "base port 80 is out of range"),
        ({"base_port": 65530}, {}, "out of range"),
        ({}, {"OPSCTL_LOCAL_BASE_PORT": "abc"}, "OPSCTL_LOCAL_BASE_PORT='abc': not an integer"),
        ({}, {"OPSCTL_LOCAL_GATEWAYS": "many"}, "OPSCTL_LOCAL_GATEWAYS"),
        ({"gateways": 0}, {}, "gateways"),
        ({"gateways": 99}, {}, "gateways"),
        ({"port_overrides": {"kafka": 19100}}, {}, "port 19100 is used by both redis and kafka"),
        ({"port_overrides": {"kafka": 80}}, {}, "kafka"),
        ({"port_overrides": {"zookeeper": 20000}}, {}, "unknown port name"),
        ({"port_overrides": {"dispatcher": 19110}}, {}, "gateway 1"),
    ],
)
def test_bad_input_is_a_user_error_naming_the_problem(
    kwargs: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(UserInputError) as caught:
        resolve_config(env=env, **kwargs)  # type: ignore[arg-type]
    assert message in caught.value.message


def test_parse_port_overrides() -> None:
    assert parse_port_overrides(["kafka=20001", "kafka-controller=20002"]) == {
        "kafka": 20001,
        "kafka_controller": 20002,
    }
    for bad in ("kafka", "kafka=", "kafka=x", "=1"):
        with pytest.raises(UserInputError, match="NAME=PORT"):
            parse_port_overrides([bad])


def test_versions_come_from_the_one_versions_file() -> None:
    versions = jvm_versions()
    assert versions["KAFKA_VERSION"].split(".")[0] in {"3", "4"}
    assert versions["CASSANDRA_VERSION"].startswith("5.0.")


def test_the_port_block_fits_the_largest_stack() -> None:
    config = resolve_config(base_port=30000, gateways=16, env={})
    used = {getattr(config.ports, name) for name in PORT_OFFSETS}
    used |= {config.ports.gateway(i) for i in range(16)}
    assert max(used) < 30000 + PORT_BLOCK_SIZE


# ---- rendered config files -----------------------------------------------------------------


def test_redis_keeps_data_across_restarts(tmp_path: Path) -> None:
    conf = render_redis_conf(20000, tmp_path)
    assert "appendonly yes" in conf.splitlines()
    assert "bind 127.0.0.1" in conf.splitlines()
    assert f"dir {tmp_path}" in conf.splitlines()


def test_kafka_is_a_single_kraft_node_on_its_ports(tmp_path: Path) -> None:
    config = resolve_config(base_port=20000, env={})
    props = dict(
        line.split("=", 1)
        for line in render_kafka_properties(config, tmp_path).splitlines()
        if line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:20002"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:20001"
    assert props["log.dirs"] == str(tmp_path)
    assert props["auto.create.topics.enable"] == "false"


def test_kafka_overrides_win(tmp_path: Path) -> None:
    config = resolve_config(base_port=20000, env={}).model_copy(
        update={"kafka_overrides": {"num.io.threads": "4"}}
    )
    assert "num.io.threads=4\n" in render_kafka_properties(config, tmp_path)


def test_cassandra_yaml(tmp_path: Path) -> None:
    config = resolve_config(base_port=20000, env={})
    document = yaml.safe_load(render_cassandra_yaml(config, tmp_path))
    assert document["native_transport_port"] == 20003
    assert document["storage_port"] == 20004
    assert document["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:20004"
    assert document["num_tokens"] == 1
    assert document["data_file_directories"] == [str(tmp_path / "data")]


def test_the_local_cassandra_checks_passwords_and_speaks_tls_as_prod(tmp_path: Path) -> None:
    from opsctl.spec import parse_spec
    from opsctl.stack import build_stack
    from tests.support import shipped_spec

    config = resolve_config(state_dir=tmp_path, base_port=20000, env={})
    components = {c.name: c for c in build_components(config, SPEC)}
    prepare = components["cassandra"].prepare
    assert prepare is not None
    prepare()
    local = yaml.safe_load((tmp_path / "cassandra" / "conf" / "cassandra.yaml").read_text())
    plan = build_stack(parse_spec(shipped_spec("prod"))).regions[0]
    (dc,) = [o for o in plan.component("cassandra").objects if o["kind"] == "CassandraDatacenter"]
    prod = dc["spec"]["config"]["cassandra-yaml"]
    for key in ("authenticator", "authorizer"):
        assert local[key] == prod[key]
    for key in ("enabled", "optional", "ssl_context_factory", "require_client_auth"):
        assert local["client_encryption_options"][key] == prod["client_encryption_options"][key]
    # The keystore is the local CA's server key and certificate in one PEM.
    keystore = Path(local["client_encryption_options"]["keystore"])
    assert keystore == tmp_path / "secrets" / "server-combined.pem"
    assert "PRIVATE KEY" in keystore.read_text()
    assert keystore.stat().st_mode & 0o077 == 0


def test_prometheus_scrapes_every_gateway_and_alerts_to_the_local_alertmanager() -> None:
    config = resolve_config(base_port=20000, gateways=3, env={})
    document = yaml.safe_load(render_prometheus_yml(config, SPEC))
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    gateway_targets = [group["targets"][0] for group in jobs["im-gateway"]["static_configs"]]
    assert gateway_targets == ["127.0.0.1:20010", "127.0.0.1:20011", "127.0.0.1:20012"]
    assert [g["labels"]["node"] for g in jobs["im-gateway"]["static_configs"]] == [
        "gw-1",
        "gw-2",
        "gw-3",
    ]
    assert jobs["im-dispatcher"]["static_configs"][0]["targets"] == ["127.0.0.1:20008"]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:20005"]
    alertmanagers = document["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["127.0.0.1:20006"]
    assert document["global"]["scrape_interval"] == "2s"
    assert document["rule_files"] == [
        str(REPO_ROOT / "alerts/rules/*.yaml"),
        str(REPO_ROOT / "alerts/build/*.yaml"),
    ]


def test_rule_globs_are_configurable(tmp_path: Path) -> None:
    config = resolve_config(rule_globs=(str(tmp_path / "*.yml"), "x/*.yaml"), env={})
    document = yaml.safe_load(render_prometheus_yml(config, SPEC))
    assert document["rule_files"] == [str(tmp_path / "*.yml"), str(REPO_ROOT / "x/*.yaml")]


def test_alertmanager_posts_to_the_webhook() -> None:
    document = yaml.safe_load(render_alertmanager_yml("http://127.0.0.1:20007/alerts"))
    receiver = document["receivers"][0]
    assert document["route"]["receiver"] == receiver["name"]
    assert receiver["webhook_configs"][0]["url"] == "http://127.0.0.1:20007/alerts"


def test_im_processes_get_every_contract_variable_from_the_spec(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, env={})
    env = imgw_env(config, SPEC, Layout(tmp_path))
    assert set(env) == CONTRACT_VARS
    assert env["IMGW_KAFKA_PARTITIONS"] == str(SPEC.kafka_partitions) == "6"
    assert env["IMGW_KAFKA_REPLICATION_FACTOR"] == "1"
    assert env["IMGW_CASSANDRA_REPLICATION_FACTOR"] == "1"
    # Redis over TLS as an ACL user whose password stays in its file (only paths in env).
    assert env["IMGW_REDIS_URL"] == "rediss://127.0.0.1:20000/0"
    assert env["IMGW_REDIS_USERNAME"] == "gateway"
    assert env["IMGW_REDIS_PASSWORD_FILE"] == str(tmp_path / "secrets" / "redis-gateway.password")
    assert env["IMGW_REDIS_CA_FILE"] == str(tmp_path / "secrets" / "ca.crt")
    # Cassandra: tools and tests run as migrate, the owner of what it creates.
    assert env["IMGW_CASSANDRA_USERNAME"] == "migrate"
    assert env["IMGW_CASSANDRA_PASSWORD_FILE"] == str(
        tmp_path / "secrets" / "cassandra-migrate.password"
    )
    assert env["IMGW_CASSANDRA_CA_FILE"] == str(tmp_path / "secrets" / "ca.crt")
    assert env["IMGW_CASSANDRA_HOSTS"] == "127.0.0.1:20003"
    assert env["IMGW_JWT_HS256_SECRET_FILE"] == str(tmp_path / "secrets" / "jwt-hs256.key")
    # The region names the dispatcher's consumer group, as the chart's region value does.
    assert env["IMGW_REGION"] == SPEC.region


def test_components_follow_the_contract(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, gateways=2, env={})
    components = {c.name: c for c in build_components(config, SPEC)}
    assert list(components) == [*INFRA_COMPONENTS, *IM_COMPONENTS]
    assert components["gw-2"].argv[1:] == ["-m", "gateway.server"]
    assert components["gw-2"].env["IMGW_NODE_ID"] == "gw-2"
    assert components["gw-2"].env["IMGW_LISTEN_PORT"] == "20011"
    assert components["dispatcher"].argv[1:] == ["-m", "gateway.dispatcher"]
    # Each IM process logs in to Redis as its own identity.
    assert components["gw-2"].env["IMGW_REDIS_USERNAME"] == "gateway"
    assert components["dispatcher"].env["IMGW_REDIS_USERNAME"] == "dispatcher"
    assert (
        components["dispatcher"]
        .env["IMGW_REDIS_PASSWORD_FILE"]
        .endswith("secrets/redis-dispatcher.password")
    )
    assert "--cluster.listen-address=" in components["alertmanager"].argv
    # IM processes stop before what they depend on.
    assert components["gw-1"].stop_group < components["dispatcher"].stop_group
    assert components["dispatcher"].stop_group < components["kafka"].stop_group
    assert components["kafka"].stop_group < components["redis"].stop_group
    assert components["gw-1"].stop_group is StopGroup.GATEWAYS
    assert components["redis"].stop_group is StopGroup.REDIS


def test_infra_only_has_no_im_processes(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, im=False, env={})
    names = [c.name for c in build_components(config, SPEC)]
    assert names == INFRA_COMPONENTS


def test_kafka_metadata_response_parsing() -> None:
    host = b"127.0.0.1"
    payload = struct.pack(">ii", 1, 0)  # correlation id, throttle
    payload += struct.pack(">i", 1) + struct.pack(">ih", 1, len(host)) + host
    payload += struct.pack(">ih", 19101, -1)  # port, null rack
    payload += struct.pack(">h", 3) + b"abc"  # cluster id
    payload += struct.pack(">i", 1)  # controller id
    assert _parse_metadata_v4(payload) == ([("127.0.0.1", 19101)], 1)


def test_kafka_cluster_ids_never_start_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage tool would read such an id as an option; 1 random id in 64 starts so."""
    from opsctl.local import _components

    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64url: "-A..."
    drawn = iter([dashed, dashed, uuid.UUID(int=7)])
    monkeypatch.setattr(_components.uuid, "uuid4", lambda: next(drawn))
    cluster_id = _components.kafka_cluster_id(tmp_path / "kafka" / "cluster-id")
    assert not cluster_id.startswith("-")
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAABw"
    # Kept for the state dir: the same id on the next start.
    assert _components.kafka_cluster_id(tmp_path / "kafka" / "cluster-id") == cluster_id
