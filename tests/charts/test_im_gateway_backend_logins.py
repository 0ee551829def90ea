"""The chart's backend logins and its schema migration (issue 14), rendered with the pinned
helm from the values the builders give (opsctl.stack._gateway.chart_values).

- every workload logs in to Redis and Cassandra as its own identity: the username from that
  identity's Secret, the password and the CA as mounted files (no secret value in any env);
- the identities are the ones the local stack runs each process as (opsctl.local), and the
  login variables the rendered chart gives equal the ones the local stack gives;
- the migration is a pre-install/pre-upgrade hook Job with the migrate role's login only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config as gateway_config
from opsctl.local import resolve_config
from opsctl.local._components import (
    IM_CASSANDRA_ROLES,
    IM_REDIS_USERS,
    Layout,
    build_components,
)
from opsctl.local._config import SpecValues
from opsctl.spec import parse_spec
from opsctl.stack import _names as n
from opsctl.stack._certs import GATEWAY_TLS_SECRET
from opsctl.stack._gateway import chart_values
from tests.charts.helmkit import Helm, component_name, find
from tests.support import shipped_spec

pytestmark = pytest.mark.integration

LOGIN_VARIABLES = {
    f"IMGW_{kind}_{what}"
    for kind in ("REDIS", "CASSANDRA")
    for what in ("USERNAME", "PASSWORD_FILE", "CA_FILE")
}
# Which local process each workload is (the relay runs as the dispatcher).
WORKLOADS = {"gateway": "gateway", "dispatcher": "dispatcher", "relay": "relay"}


def _builder_values(tmp_path: Path, stack: str) -> Path:
    """The values the builders give the chart for the stack's first region, plus the JWT
    settings a render needs."""
    spec = parse_spec(shipped_spec(stack))
    values = chart_values(spec, spec.regions[0])
    values.setdefault("auth", {}).update(
        {"issuer": "https://auth.im.internal/", "audience": "im-gateway"}
    )
    path = tmp_path / f"{stack}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _pod(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return find(objects, kind, name)["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def _mounted(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret, key) a file path in the container comes from."""
    directory, _, key = path.rpartition("/")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    items = {item["path"]: item["key"] for item in volume["secret"].get("items", [])}
    return volume["secret"]["secretName"], items.get(key, key)


def _check_login(
    pod: dict[str, Any],
    container: dict[str, Any],
    kind: str,
    secret: str,
    ca_secret: str,
) -> None:
    env = _env(container)
    prefix = f"IMGW_{kind.upper()}"
    assert env[f"{prefix}_USERNAME"]["valueFrom"] == {
        "secretKeyRef": {"name": secret, "key": n.USERNAME_KEY}
    }
    password = env[f"{prefix}_PASSWORD_FILE"]["value"]
    assert _mounted(pod, container, password) == (secret, n.PASSWORD_KEY)
    ca = env[f"{prefix}_CA_FILE"]["value"]
    assert _mounted(pod, container, ca) == (ca_secret, n.CA_CERT_KEY)


@pytest.mark.parametrize("stack", ["local", "staging"])
def test_each_workload_logs_in_as_its_own_identity_from_mounted_secrets(
    helm: Helm, tmp_path: Path, stack: str
) -> None:
    objects = helm.render(values=[_builder_values(tmp_path, stack)])
    workloads = ["gateway", "dispatcher"] + (["relay"] if stack == "staging" else [])
    for workload in workloads:
        pod = _pod(objects, "Deployment", component_name(workload))
        container = pod["containers"][0]
        process = WORKLOADS[workload]
        _check_login(
            pod,
            container,
            "redis",
            n.redis_user_secret(IM_REDIS_USERS[process]),
            GATEWAY_TLS_SECRET,
        )
        _check_login(
            pod,
            container,
            "cassandra",
            n.cassandra_role_secret(IM_CASSANDRA_ROLES[process]),
            GATEWAY_TLS_SECRET,
        )
        # Kafka: each process its own SCRAM user (the relay too: its own ACLs).
        _check_login(pod, container, "kafka", n.kafka_user_secret(process), GATEWAY_TLS_SECRET)
        # Only the password key and ca.crt are mounted; no env carries a secret's value.
        for variable in container["env"]:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref["key"] == n.USERNAME_KEY, variable


def test_the_login_variables_equal_what_the_local_stack_runs(helm: Helm, tmp_path: Path) -> None:
    """The rendered chart and the local stack give each process the same login variables,
    as the same identity (a missing credential on either side fails here)."""
    objects = helm.render(values=[_builder_values(tmp_path, "local")])
    config = resolve_config(state_dir=tmp_path / "state", base_port=20000, env={})
    spec = SpecValues.from_spec(parse_spec(shipped_spec("local")))
    local = {c.name: c.env for c in build_components(config, spec)}
    Layout(tmp_path / "state").secrets.ensure()
    for workload, local_name in (("gateway", "gw-1"), ("dispatcher", "dispatcher")):
        container = _pod(objects, "Deployment", component_name(workload))["containers"][0]
        chart_env = _env(container)
        chart_logins = LOGIN_VARIABLES & set(chart_env)
        local_logins = LOGIN_VARIABLES & set(local[local_name])
        assert chart_logins == local_logins == LOGIN_VARIABLES, workload
        for kind in ("REDIS", "CASSANDRA"):
            ref = chart_env[f"IMGW_{kind}_USERNAME"]["valueFrom"]["secretKeyRef"]["name"]
            identity = local[local_name][f"IMGW_{kind}_USERNAME"]
            named = n.redis_user_secret if kind == "REDIS" else n.cassandra_role_secret
            assert ref == named(identity), (workload, kind)
        # Both speak TLS to Redis.
        assert chart_env["IMGW_REDIS_URL"]["value"].startswith("rediss://")
        assert local[local_name]["IMGW_REDIS_URL"].startswith("rediss://")


def test_the_migration_is_a_hook_job_with_only_the_migrate_role(helm: Helm, tmp_path: Path) -> None:
    objects = helm.render(values=[_builder_values(tmp_path, "staging")])
    job = find(objects, "Job", component_name("migrate"))
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod  # the chart's own does not exist yet at install
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "gateway.migrate", "--only", "cql"]
    _check_login(
        pod, container, "cassandra", n.cassandra_role_secret("migrate"), GATEWAY_TLS_SECRET
    )
    env = _env(container)
    assert not {"IMGW_REDIS_USERNAME", "IMGW_REDIS_PASSWORD_FILE"} & set(env)
    # The gateway's config loader accepts the Job's environment (files stood in).
    plain: dict[str, str] = {}
    for name, variable in env.items():
        if "value" in variable:
            plain[name] = variable["value"]
        elif "secretKeyRef" in variable["valueFrom"]:
            plain[name] = "migrate"
        else:
            plain[name] = "im-gateway-migrate-x2x4q"
    for name in ("IMGW_CASSANDRA_PASSWORD_FILE", "IMGW_CASSANDRA_CA_FILE"):
        stand_in = tmp_path / name
        stand_in.write_text("x")
        plain[name] = str(stand_in)
    loaded = gateway_config.load("migrate", plain)
    assert loaded.cassandra_username == "migrate"
    # Its network policy: DNS and Cassandra, nothing else, no ingress.
    policy = find(objects, "NetworkPolicy", component_name("migrate"))
    assert "ingress" not in policy["spec"]
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, n.CASSANDRA_CQL_PORT}


def test_the_migration_can_be_turned_off(helm: Helm, tmp_path: Path) -> None:
    objects = helm.render(
        values=[_builder_values(tmp_path, "local")], sets={"migration.enabled": "false"}
    )
    assert not [o for o in objects if o["kind"] == "Job" and "migrate" in o["metadata"]["name"]]


# Where the rendered chart and the local stack may differ, and why; any other variable set
# on one side only fails (a credential the chart forgets, a setting the stack never tests).
CHART_ONLY = {
    # The builders' DC for NetworkTopologyStrategy; the one-region local keyspace is
    # SimpleStrategy (the multi-region local stack sets it per region).
    "IMGW_CASSANDRA_DATACENTER": "dc",
    # Explicit in the chart, the loader's default locally (checked equal below).
    "IMGW_KAFKA_DELIVERIES_TOPIC": "default",
    "IMGW_REDIS_CLUSTER": "default",
    # The local Kafka does not speak SCRAM over TLS yet (issue 14's next step).
    "IMGW_KAFKA_USERNAME": "kafka",
    "IMGW_KAFKA_PASSWORD_FILE": "kafka",
    "IMGW_KAFKA_CA_FILE": "kafka",
}
GATEWAY_CHART_ONLY = {
    **CHART_ONLY,
    # prod verifies the IdP's RS256 keys; the local stack mints HS256 test tokens.
    "IMGW_JWT_JWKS_FILE": "jwt",
    # The chart's per-pod sizing; the local stack runs the loader's defaults.
    "IMGW_MAX_CONNECTIONS": "sizing",
    "IMGW_MAX_FRAME_BYTES": "default",
    "IMGW_RATE_LIMIT_PER_S": "default",
    "IMGW_SEND_QUEUE_MAX": "default",
    "IMGW_MAX_PENDING_HELLOS": "default",
    "IMGW_MAX_SESSIONS_PER_USER": "default",
}
# migrate's inputs, which every local process shares; in prod the topics and keyspaces come
# from the builders (KafkaTopics, the keyspace Job).
LOCAL_ONLY = {
    "IMGW_KAFKA_PARTITIONS",
    "IMGW_KAFKA_REPLICATION_FACTOR",
    "IMGW_CASSANDRA_REPLICATION_FACTOR",
}
GATEWAY_LOCAL_ONLY = {*LOCAL_ONLY, "IMGW_JWT_HS256_SECRET_FILE"}
# The local stack gives the dispatcher the gateway's settings too; it ignores them.
DISPATCHER_LOCAL_ONLY = {
    *GATEWAY_LOCAL_ONLY,
    "IMGW_DRAIN_WINDOW_S",
    "IMGW_MAX_CONNECTIONS_PER_IP",
    "IMGW_JWT_ISSUER",
    "IMGW_JWT_AUDIENCE",
}


def _chart_env(objects: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    """Every IMGW_* variable of a workload: its env and its ConfigMap's."""
    container = _pod(objects, "Deployment", component_name(workload))["containers"][0]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for name, variable in _env(container).items():
        env[name] = variable.get("value", variable.get("valueFrom"))
    return {name: value for name, value in env.items() if name.startswith("IMGW_")}


def test_the_chart_and_the_local_stack_set_the_same_variables(helm: Helm, tmp_path: Path) -> None:
    objects = helm.render(values=[_builder_values(tmp_path, "local")])
    config = resolve_config(state_dir=tmp_path / "state", base_port=20000, env={})
    spec = SpecValues.from_spec(parse_spec(shipped_spec("local")))
    local = {c.name: c.env for c in build_components(config, spec)}
    cases = [
        ("gateway", "gw-1", GATEWAY_CHART_ONLY, GATEWAY_LOCAL_ONLY),
        ("dispatcher", "dispatcher", CHART_ONLY, DISPATCHER_LOCAL_ONLY),
    ]
    defaults = gateway_config.Config.model_fields
    for workload, local_name, chart_only, local_only in cases:
        chart = _chart_env(objects, workload)
        mine = {k: v for k, v in local[local_name].items() if k.startswith("IMGW_")}
        assert sorted(set(chart) - set(mine)) == sorted(chart_only), workload
        assert sorted(set(mine) - set(chart)) == sorted(local_only), workload
        for name, why in chart_only.items():
            if why == "default":
                field = name.removeprefix("IMGW_").lower()
                parsed = gateway_config.Config.model_validate({field: chart[name]})
                assert getattr(parsed, field) == defaults[field].default, name
        # Shared settings agree where the spec decides them.
        for name in ("IMGW_KAFKA_TOPIC", "IMGW_CASSANDRA_KEYSPACE", "IMGW_REGION"):
            assert chart[name] == mine[name], (workload, name)
