"""The exporters' wiring (no processes): agents, ports, scrape jobs, Redis limits, kubeconfig."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from opsctl.errors import UserInputError
from opsctl.local import Ports, resolve_config
from opsctl.local._components import StopGroup, build_components
from opsctl.local._config import PORT_OFFSETS
from opsctl.local._exporters import (
    exporter_metrics_urls,
    jmx_agent_jar,
    jmx_exporter_config,
    render_ksm_kubeconfig,
)
from opsctl.local._render import render_prometheus_yml, render_redis_conf
from opsctl.local._secrets import LocalSecrets
from opsctl.paths import REPO_ROOT
from opsctl.stack._redis import REDIS_ACL, password_hash
from tests.opsctl.local.expected import SPEC

pytestmark = pytest.mark.unit


def _kubeconfig(path: Path, contexts: tuple[str, ...] = ("kwok-local",)) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:1", "certificate-authority": "ca.crt"},
            }
        ],
        "users": [
            {"name": "u", "user": {"client-key": "/abs/key.pem", "client-certificate": "c.pem"}}
        ],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u"}} for name in contexts],
        "current-context": contexts[0] if contexts else "",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_exporter_ports_follow_the_gateway_block() -> None:
    ports = resolve_config(base_port=20000, env={}).ports
    assert (ports.kafka_metrics, ports.cassandra_metrics) == (20026, 20027)
    assert (ports.redis_replica, ports.redis_exporter, ports.redis_replica_exporter) == (
        20028,
        20029,
        20030,
    )
    assert (ports.kube_state_metrics, ports.kube_state_metrics_telemetry) == (20031, 20032)


def test_the_jmx_agent_is_attached_to_the_broker_and_cassandra(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, im=False, env={})
    components = {c.name: c for c in build_components(config, SPEC)}
    jar = jmx_agent_jar(config)
    assert re.fullmatch(r"jmx_prometheus_javaagent-1\.\d+\.\d+\.jar", jar.name)
    kafka_agent = f"-javaagent:{jar}=127.0.0.1:20026:{REPO_ROOT}/alerts/exporters/kafka-jmx.yaml"
    cassandra_agent = (
        f"-javaagent:{jar}=127.0.0.1:20027:{REPO_ROOT}/alerts/exporters/cassandra-jmx.yaml"
    )
    kafka_argv = components["kafka"].argv
    assert kafka_argv.count(kafka_agent) == 1
    assert kafka_argv.index(kafka_agent) < kafka_argv.index("kafka.Kafka")
    assert cassandra_agent in components["cassandra"].argv


def test_the_kafka_storage_format_step_runs_without_the_agent(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, im=False, env={})
    kafka = next(c for c in build_components(config, SPEC) if c.name == "kafka")
    assert kafka.prepare is not None
    first_start = kafka.prepare()  # no meta.properties yet: format, then exec the broker
    assert first_start is not None
    script = first_start[-1]
    format_step, broker = script.split(" && exec ")
    assert "StorageTool" in format_step
    assert "-javaagent:" + str(jmx_agent_jar(config)) not in (format_step)
    assert "jmx_prometheus_javaagent" in broker


def test_the_bare_stack_has_no_exporters(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, exporters=False, env={})
    components = build_components(config, SPEC)
    names = [c.name for c in components]
    assert "redis-replica" not in names
    assert "redis-exporter" not in names
    assert not any("jmx_prometheus" in arg for c in components for arg in c.argv)
    jobs = yaml.safe_load(render_prometheus_yml(config, SPEC))["scrape_configs"]
    assert {job["job_name"] for job in jobs} == {
        "prometheus",
        "alertmanager",
        "im-gateway",
        "im-dispatcher",
    }


def test_prometheus_scrapes_the_exporters_under_the_rules_job_names(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, env={})
    jobs = {
        job["job_name"]: job
        for job in yaml.safe_load(render_prometheus_yml(config, SPEC))["scrape_configs"]
    }
    targets = {name: [g["targets"][0] for g in job["static_configs"]] for name, job in jobs.items()}
    assert targets["kafka"] == ["127.0.0.1:20026"]
    assert targets["cassandra"] == ["127.0.0.1:20027"]
    assert targets["redis"] == ["127.0.0.1:20029", "127.0.0.1:20030"]
    roles = [g["labels"]["role"] for g in jobs["redis"]["static_configs"]]
    assert roles == ["primary", "replica"]
    assert all(g["labels"]["region"] == "local" for g in jobs["redis"]["static_configs"])
    assert "kube-state-metrics" not in jobs  # no cluster attached
    assert exporter_metrics_urls(config)["redis"] == (
        "http://127.0.0.1:20029/metrics",
        "http://127.0.0.1:20030/metrics",
    )


def test_redis_has_a_maxmemory_and_evicts_only_keys_with_a_ttl(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, env={})
    components = {c.name: c for c in build_components(config, SPEC)}
    for name in ("redis", "redis-replica"):
        prepare = components[name].prepare
        assert prepare is not None
        prepare()
    primary = (tmp_path / "redis" / "conf" / "redis.conf").read_text().splitlines()
    replica = (tmp_path / "redis-replica" / "conf" / "redis.conf").read_text().splitlines()
    for lines in (primary, replica):
        assert "maxmemory 256mb" in lines
        assert "maxmemory-policy volatile-lru" in lines
    assert "replicaof 127.0.0.1 20000" in replica
    assert "repl-diskless-sync-delay 0" in primary  # the replica syncs at once
    assert not any(line.startswith("replicaof") for line in primary)
    assert "tls-port 20028" in replica
    assert f"dir {tmp_path / 'redis-replica' / 'data'}" in replica
    # The old signature still renders a plain primary.
    plain = render_redis_conf(20000, tmp_path).splitlines()
    assert not any(line.startswith(("maxmemory", "replicaof")) for line in plain)


def test_the_redis_exporters_point_at_their_redis(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, env={})
    components = {c.name: c for c in build_components(config, SPEC)}
    argv = components["redis-exporter"].argv
    assert "--redis.addr=rediss://127.0.0.1:20000" in argv
    assert "--web.listen-address=127.0.0.1:20029" in argv
    assert "--redis.addr=rediss://127.0.0.1:20028" in components["redis-replica-exporter"].argv
    # Its own ACL user, the local CA, the password from a file and no CONFIG GET.
    assert "--redis.user=exporter" in argv
    assert f"--tls-ca-cert-file={tmp_path / 'secrets' / 'ca.crt'}" in argv
    assert "--config-command=-" in argv
    assert not any(arg.startswith("--redis.password=") for arg in argv)
    # Exporters stop before the Redis they watch.
    assert components["redis-exporter"].stop_group < components["redis"].stop_group
    assert components["redis-exporter"].stop_group is StopGroup.MONITORING


def test_kube_state_metrics_only_with_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", ("other", "kwok-local"))
    config = resolve_config(
        state_dir=tmp_path / "state",
        base_port=20000,
        kubeconfig=kubeconfig,
        kube_context="kwok-local",
        env={},
    )
    components = {c.name: c for c in build_components(config, SPEC)}
    ksm = components["kube-state-metrics"]
    assert "--port=20031" in ksm.argv
    assert "--telemetry-port=20032" in ksm.argv
    assert any(
        arg.startswith("--resources=") and "horizontalpodautoscalers" in arg for arg in ksm.argv
    )
    assert ksm.prepare is not None
    ksm.prepare()
    written = yaml.safe_load((tmp_path / "state/kube-state-metrics/conf/kubeconfig").read_text())
    assert written["current-context"] == "kwok-local"
    jobs = {
        job["job_name"]: job
        for job in yaml.safe_load(render_prometheus_yml(config, SPEC))["scrape_configs"]
    }
    assert jobs["kube-state-metrics"]["static_configs"][0]["targets"] == ["127.0.0.1:20031"]
    assert jobs["kube-state-metrics"]["honor_labels"] is True


def test_env_vars_attach_a_cluster(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig")
    config = resolve_config(env={"OPSCTL_LOCAL_KUBECONFIG": str(kubeconfig)})
    assert config.kubeconfig == kubeconfig
    assert config.watches_cluster


def test_the_ksm_kubeconfig_makes_relative_files_absolute(tmp_path: Path) -> None:
    source = _kubeconfig(tmp_path / "kubeconfig")
    document = yaml.safe_load(render_ksm_kubeconfig(source, None))
    assert document["clusters"][0]["cluster"]["certificate-authority"] == str(tmp_path / "ca.crt")
    assert document["users"][0]["user"]["client-certificate"] == str(tmp_path / "c.pem")
    assert document["users"][0]["user"]["client-key"] == "/abs/key.pem"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "cannot read it"),
        ("garbage", "not valid YAML"),
        ("no-context", "context 'nope' not found"),
        ("context-only", "--context needs --kubeconfig"),
    ],
)
def test_bad_kubeconfig_input_is_a_user_error(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "kubeconfig"
    kwargs: dict[str, object] = {"kubeconfig": path}
    if setup == "garbage":
        path.write_text("clusters: [unclosed\n")
    elif setup == "no-context":
        _kubeconfig(path)
        kwargs["kube_context"] = "nope"
    elif setup == "context-only":
        kwargs = {"kube_context": "kwok-local"}
    with pytest.raises(UserInputError) as caught:
        resolve_config(env={}, **kwargs)  # type: ignore[arg-type]
    assert message in caught.value.message


def test_the_jmx_mappings_read_only_named_beans_and_convert_latency_to_seconds() -> None:
    """Wildcards make Cassandra scrapes slow (every timer computes snapshots); the live tests
    prove the emitted names against real JVMs."""
    config = resolve_config(env={})
    for component in ("kafka", "cassandra"):
        mapping = yaml.safe_load(jmx_exporter_config(config, component).read_text())
        assert mapping["lowercaseOutputName"] is True
        assert mapping["includeObjectNames"]
        assert not [bean for bean in mapping["includeObjectNames"] if "*" in bean]
    cassandra = yaml.safe_load(jmx_exporter_config(config, "cassandra").read_text())
    latency = [
        r for r in cassandra["rules"] if r["name"] == "cassandra_clientrequest_latency_seconds"
    ]
    assert latency
    assert all(r["valueFactor"] == 0.000001 for r in latency)
    assert any("(95|99)thPercentile" in r["pattern"] for r in latency)


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def test_the_go_exporters_are_pinned_and_match_the_kubernetes_client_libraries() -> None:
    tools = REPO_ROOT / "tools" / "go"
    versions = _env_file(tools / "versions.env")
    redis_mod = (tools / "redis-exporter" / "go.mod").read_text()
    assert f"github.com/oliver006/redis_exporter {versions['REDIS_EXPORTER_VERSION']}" in redis_mod
    ksm_mod = (tools / "kube-state-metrics" / "go.mod").read_text()
    assert f"k8s.io/kube-state-metrics/v2 {versions['KUBE_STATE_METRICS_VERSION']}" in ksm_mod
    # Same k8s.io client libraries as the simulated clusters' Kubernetes (v1.Y.Z -> v0.Y.*).
    minor = versions["KUBERNETES_VERSION"].split(".")[1]
    client_go = re.search(r"k8s\.io/client-go (v0\.(\d+)\.\d+)", ksm_mod)
    assert client_go is not None
    assert client_go.group(2) == minor, client_go.group(1)
    jars = _env_file(REPO_ROOT / "scripts" / "setup" / "jars" / "versions.env")
    assert jars["JMX_EXPORTER_VERSION"].startswith("1.")


def test_a_stack_recorded_before_the_exporters_still_loads() -> None:
    old = {name: 20000 + offset for name, offset in PORT_OFFSETS.items() if offset < 26}
    old["gateway_first"] = 20010
    ports = Ports.model_validate(old)
    assert ports.kafka_metrics == 20026
    assert ports.kube_state_metrics_telemetry == 20032


def test_redis_is_tls_only_with_acl_users_and_no_password_in_its_config(tmp_path: Path) -> None:
    config = resolve_config(state_dir=tmp_path, base_port=20000, env={})
    components = {c.name: c for c in build_components(config, SPEC)}
    for name in ("redis", "redis-replica", "redis-exporter"):
        prepare = components[name].prepare
        assert prepare is not None
        prepare()
    secrets = LocalSecrets.of(tmp_path)
    primary = (tmp_path / "redis" / "conf" / "redis.conf").read_text()
    replica = (tmp_path / "redis-replica" / "conf" / "redis.conf").read_text()
    lines = primary.splitlines()
    assert "port 0" in lines  # no plaintext listener
    assert "tls-port 20000" in lines
    assert f"tls-cert-file {secrets.server_cert}" in lines
    assert "user default reset" in lines  # the default user is off, without a password
    for user in REDIS_ACL:
        assert secrets.redis_password(user) not in primary  # the hash, never the password
        rule = f"user {user} reset on {password_hash(secrets.redis_password(user))} "
        assert rule in primary
    gateway = next(line for line in lines if line.startswith("user gateway "))
    assert "~im:* &im:*" in gateway
    assert "-@dangerous" in gateway
    assert "masteruser replica" in replica.splitlines()
    assert "tls-replication yes" in replica.splitlines()
    for path in (
        tmp_path / "redis" / "conf" / "redis.conf",
        tmp_path / "redis-replica" / "conf" / "redis.conf",
        tmp_path / "redis-exporter" / "conf" / "redis-passwords.json",
        secrets.server_key,
        secrets.ca_key,
        secrets.redis_password_file("gateway"),
    ):
        assert path.stat().st_mode & 0o077 == 0, path


def test_local_secrets_are_generated_once_and_the_certificate_verifies(tmp_path: Path) -> None:
    import ssl

    secrets = LocalSecrets.of(tmp_path)
    secrets.ensure()
    first = [secrets.redis_password(user) for user in REDIS_ACL], secrets.ca_cert.read_bytes()
    secrets.ensure()
    assert ([secrets.redis_password(user) for user in REDIS_ACL], secrets.ca_cert.read_bytes()) == (
        first
    )
    assert len(set(first[0])) == len(REDIS_ACL)  # one password per identity
    # The server certificate chains to the CA and names every local address.
    context = ssl.create_default_context(cafile=str(secrets.ca_cert))
    context.load_cert_chain(secrets.server_cert, secrets.server_key)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(secrets.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert addresses == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
