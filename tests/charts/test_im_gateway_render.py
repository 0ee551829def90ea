"""Assertions on the objects `helm template` renders: security defaults, grace period, checksums.

Runs the pinned helm, no cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway import config as gateway_config
from tests.charts.helmkit import (
    CHART,
    SCENARIOS,
    Helm,
    HelmFailed,
    component_name,
    find,
    kube_version,
    scenario_file,
)

pytestmark = pytest.mark.integration

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def scenario_values(scenario: str) -> list[Path]:
    return [] if scenario == "defaults" else [scenario_file(scenario)]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in WORKLOADS
    ]


@pytest.mark.parametrize("scenario", ["defaults", *SCENARIOS])
def test_every_pod_runs_with_the_security_defaults(helm: Helm, scenario: str) -> None:
    objects = helm.render(values=scenario_values(scenario))
    specs = pod_specs(objects)
    # Both Deployments (and the relay's with peer regions), plus the helm test Job and the
    # schema migration's hook Job.
    assert {name.split("/")[0] for name, _ in specs} == {"Deployment", "Job"}
    assert len(specs) == (5 if scenario == "multi-region" else 4)
    for name, spec in specs:
        assert spec["automountServiceAccountToken"] is False, name
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert pod_context["runAsUser"] != 0, name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), (name, flag)
        assert all("hostPath" not in volume for volume in spec.get("volumes", [])), name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name} container {container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context["capabilities"].get("add"), where
            assert "ports" not in container or all(
                "hostPort" not in port for port in container["ports"]
            ), where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where
    account = find(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("scenario", "sets", "drain", "margin"),
    [
        # drain and margin as the values files set them
        ("defaults", {}, 30, 15),
        ("production", {}, 60, 15),
        (
            "minimal",
            {
                "gateway.preStopSleepSeconds": "7",
                "gateway.drainWindowSeconds": "45",
                "gateway.terminationGraceMarginSeconds": "9",
            },
            45,
            9,
        ),
    ],
)
def test_gateway_grace_period_covers_prestop_drain_and_margin(
    helm: Helm, scenario: str, sets: dict[str, str], drain: int, margin: int
) -> None:
    objects = helm.render(values=scenario_values(scenario), sets=sets)
    gateway = find(objects, "Deployment", component_name("gateway"))
    pod = gateway["spec"]["template"]["spec"]
    container = find_container(pod, "gateway")
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The drain window the process reads: IMGW_DRAIN_WINDOW_S from the ConfigMap it loads.
    config = find(objects, "ConfigMap", component_name("gateway"))
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    assert int(config["data"]["IMGW_DRAIN_WINDOW_S"]) == drain
    assert pod["terminationGracePeriodSeconds"] == pre_stop + drain + margin
    if "gateway.preStopSleepSeconds" in sets:
        assert pre_stop == int(sets["gateway.preStopSleepSeconds"])


def find_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def pod_annotations(objects: list[dict[str, Any]]) -> dict[str, str]:
    gateway = find(objects, "Deployment", component_name("gateway"))
    annotations: dict[str, str] = gateway["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_checksum_annotations_follow_config_and_key(helm: Helm) -> None:
    minimal = [scenario_file("minimal")]
    base = pod_annotations(helm.render(values=minimal))
    again = pod_annotations(helm.render(values=minimal))
    limit = pod_annotations(
        helm.render(values=minimal, sets={"gateway.limits.rateLimitPerSecond": "75"})
    )
    key = pod_annotations(helm.render(values=minimal, sets={"auth.hs256Secret": "rotated-key"}))
    assert again == base
    assert limit["checksum/config"] != base["checksum/config"]
    assert limit["checksum/auth"] == base["checksum/auth"]
    assert key["checksum/auth"] != base["checksum/auth"]
    assert key["checksum/config"] == base["checksum/config"]


# -- the env contract with the gateway's own config loader -----------------------------------


def container_env(
    objects: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    """The IMGW_* environment the container would see, resolved from the rendered objects."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config = find(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(config["data"])
    pod_name = f"{workload['metadata']['name']}-5d8f7c9b6-x2x4q"
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable["valueFrom"]:
            # Only a login's user name comes from a Secret as a variable (docs/security.md).
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["key"] == "username", variable
            env[variable["name"]] = ref["name"]
        else:
            assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[variable["name"]] = pod_name
    return env


def mounted_key(
    objects: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[str, str]:
    """(Secret name, key) that a file path inside the container comes from."""
    directory, _, key = path.rpartition("/")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume["secret"]["secretName"], key


def stand_in_files(
    objects: list[dict[str, Any]],
    pod: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Every IMGW_*_FILE comes from a mounted Secret's key; the loader checks the file is
    readable, so each is replaced by a stand-in file."""
    for variable in [name for name in env if name.endswith("_FILE")]:
        secret_name, key = mounted_key(objects, pod, container, env[variable])
        if variable == "IMGW_JWT_JWKS_FILE":
            # An existing Secret the operator creates; the README documents its key.
            assert key == "jwks.json"
        elif variable == "IMGW_JWT_HS256_SECRET_FILE":
            assert key in find(objects, "Secret", secret_name)["data"]
        else:  # a backend login's password or CA: an existing Secret (docs/security.md)
            assert key in ("password", "ca.crt"), (variable, key)
        stand_in = tmp_path / f"{variable}-{key}"
        stand_in.write_text("{}")
        env[variable] = str(stand_in)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_env_satisfies_the_gateway_config_loader(
    helm: Helm, scenario: str, tmp_path: Path
) -> None:
    """The chart and gateway/config.py agree: every IMGW_* variable is known and valid."""
    objects = helm.render(values=[scenario_file(scenario)])
    roles: tuple[gateway_config.Role, ...] = ("gateway", "dispatcher")
    if scenario == "multi-region":
        roles += ("relay",)
    for role in roles:
        workload = find(objects, "Deployment", component_name(role))
        pod = workload["spec"]["template"]["spec"]
        container = find_container(pod, role)
        env = container_env(objects, workload, container)
        stand_in_files(objects, pod, container, env, tmp_path)
        loaded = gateway_config.load(role, env)
        assert loaded.listen_port == container["ports"][0]["containerPort"]
        assert loaded.node_id.startswith(workload["metadata"]["name"])
        if role == "gateway":
            assert loaded.jwt_hs256_secret_file or loaded.jwt_jwks_file


def test_both_auth_sources_at_once_are_refused(helm: Helm) -> None:
    with pytest.raises(HelmFailed) as failed:
        helm.render(sets={"auth.hs256Secret": "local-key"})
    assert "auth.hs256Secret is set but so is auth.existingSecret" in str(failed.value)


def test_a_jwks_without_the_token_claims_is_refused(helm: Helm) -> None:
    """The chart's default key source is a JWKS; without iss and aud the gateway would refuse
    to start, so the render does (the defaults alone are not an install)."""
    args = ["template", "im", str(CHART), "--kube-version", kube_version()]
    result = helm.run(*args, check=False)
    assert result.returncode != 0
    assert "auth.issuer and auth.audience are required with a JWKS" in result.output
    with pytest.raises(HelmFailed) as failed:
        helm.render(sets={"auth.audience": ""})
    assert "auth.issuer and auth.audience are required" in str(failed.value)


def test_a_jwks_url_reaches_the_gateway_without_a_mounted_secret(
    helm: Helm, tmp_path: Path
) -> None:
    url = "https://idp.im.internal/.well-known/jwks.json"
    sets = {"auth.existingSecret": "", "auth.jwksUrl": url}
    objects = helm.render(sets=sets)
    workload = find(objects, "Deployment", component_name("gateway"))
    pod = workload["spec"]["template"]["spec"]
    container = find_container(pod, "gateway")
    env = container_env(objects, workload, container)
    assert env["IMGW_JWT_JWKS_URL"] == url
    assert "IMGW_JWT_JWKS_FILE" not in env
    assert all(volume["name"] != "auth" for volume in pod["volumes"])
    stand_in_files(objects, pod, container, env, tmp_path)
    loaded = gateway_config.load("gateway", env)
    assert loaded.jwt_jwks_url == url
    # Only the gateway may leave the cluster, and only to 443 (the IdP).
    policy = find(objects, "NetworkPolicy", component_name("gateway"))
    outside = [rule for rule in policy["spec"]["egress"] if "ipBlock" in rule["to"][0]]
    assert outside == [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    ]
    dispatcher = find(objects, "NetworkPolicy", component_name("dispatcher"))
    assert all("ipBlock" not in rule["to"][0] for rule in dispatcher["spec"]["egress"])
    with pytest.raises(HelmFailed) as failed:
        helm.render(sets={"auth.jwksUrl": url})  # the default existingSecret too
    assert "auth.jwksUrl is set but so is auth.existingSecret" in str(failed.value)


def test_region_names_the_dispatchers_consumer_group(helm: Helm, tmp_path: Path) -> None:
    """One region's dispatchers must never share a consumer group with another region's."""
    objects = helm.render(values=[scenario_file(SCENARIOS[0])], sets={"region": "eu-west"})
    workload = find(objects, "Deployment", component_name("dispatcher"))
    pod = workload["spec"]["template"]["spec"]
    container = find_container(pod, "dispatcher")
    env = container_env(objects, workload, container)
    stand_in_files(objects, pod, container, env, tmp_path)
    assert env["IMGW_REGION"] == "eu-west"
    assert gateway_config.load("dispatcher", env).consumer_group == "im-dispatcher.eu-west"
