"""The chart in a multi-region stack: IMGW_REGIONS, the relay Deployment and its guard rails.

`helm template` with the pinned helm (no cluster), then an install on the session's kwok
cluster under the `restricted` Pod Security profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi, PolicyV1Api

from gateway import config as gateway_config
from opsctl.spec import parse_spec
from opsctl.stack._gateway import chart_values
from tests.charts.helmkit import (
    RELEASE,
    Helm,
    HelmFailed,
    component_name,
    find,
    scenario_file,
    wait_rolled_out,
)
from tests.charts.test_im_gateway_install import (
    assert_pods_running_and_ready,
    create_jwks_secret,
    network_policy_names,
)
from tests.charts.test_im_gateway_render import container_env, find_container, stand_in_files
from tests.support import shipped_spec

pytestmark = pytest.mark.integration

MULTI = scenario_file("multi-region")


def _env(
    objects: list[dict[str, Any]], component: str, tmp_path: Path | None = None
) -> dict[str, str]:
    """The container's env; with ``tmp_path`` its mounted files stood in (for the loader)."""
    workload = find(objects, "Deployment", component_name(component))
    pod = workload["spec"]["template"]["spec"]
    container = find_container(pod, component)
    env = container_env(objects, workload, container)
    if tmp_path is not None:
        (tmp_path / component).mkdir(exist_ok=True)
        stand_in_files(objects, pod, container, env, tmp_path / component)
    return env


def _named(objects: list[dict[str, Any]], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


def test_multi_region_scenario_runs_the_relay_with_every_region(helm: Helm, tmp_path: Path) -> None:
    objects = helm.render(values=[MULTI])
    relay = find(objects, "Deployment", component_name("relay"))
    pod = relay["spec"]["template"]["spec"]
    container = find_container(pod, "relay")
    assert container["command"] == ["python", "-m", "gateway.relay"]
    # The dispatcher's image (the same gateway package) unless relay.image is set.
    dispatcher = find(objects, "Deployment", component_name("dispatcher"))
    assert (
        container["image"]
        == find_container(dispatcher["spec"]["template"]["spec"], "dispatcher")["image"]
    )
    for component in ("gateway", "dispatcher", "relay"):
        env = _env(objects, component, tmp_path)
        assert env["IMGW_REGION"] == "eu-central", component
        assert env["IMGW_REGIONS"] == "eu-central,us-east", component
    relay_env = _env(objects, "relay", tmp_path)
    loaded = gateway_config.load("relay", relay_env)
    assert loaded.peers == ["us-east"]
    assert loaded.relay_group == "im-relay.eu-central"
    assert loaded.listen_port == container["ports"][0]["containerPort"]
    assert f"us-east.{loaded.kafka_deliveries_topic}" == "us-east.im.deliveries"
    dispatcher_config = gateway_config.load("dispatcher", _env(objects, "dispatcher", tmp_path))
    assert dispatcher_config.consumer_group == "im-dispatcher.eu-central"
    assert dispatcher_config.peers == ["us-east"]


def test_the_relay_gets_the_guard_rails_of_the_other_workloads(helm: Helm) -> None:
    objects = helm.render(values=[MULTI])
    name = component_name("relay")
    policy = find(objects, "NetworkPolicy", name)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # Only Prometheus reaches it (its metrics port); it reaches DNS, Kafka, Redis, Cassandra.
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": 9101, "protocol": "TCP"}]
    assert "namespaceSelector" in ingress["from"][0]
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == sorted([53, 53, 9093, 6379, 9042])  # no plaintext Kafka port
    pdb = find(objects, "PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "relay"
    monitor = find(objects, "ServiceMonitor", name)
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = find(objects, "Service", f"{name}-metrics")
    assert service["metadata"]["labels"]["im.platform/job"] == "im-relay"
    assert service["spec"]["clusterIP"] == "None"


def test_one_region_installs_have_no_relay_and_no_regions(helm: Helm) -> None:
    for values in ([], [scenario_file("production")]):
        objects = helm.render(values=values)
        assert component_name("relay") not in _named(objects, "Deployment")
        assert not any("relay" in n for n in _named(objects, "NetworkPolicy"))
        assert "IMGW_REGIONS" not in _env(objects, "dispatcher")


def test_relay_image_and_explicit_switch(helm: Helm) -> None:
    objects = helm.render(
        values=[MULTI],
        sets={"relay.image.repository": "registry.example/im/relay", "relay.image.tag": "1.2.3"},
    )
    relay = find(objects, "Deployment", component_name("relay"))
    container = find_container(relay["spec"]["template"]["spec"], "relay")
    assert container["image"] == "registry.example/im/relay:1.2.3"
    off = helm.render(values=[MULTI], sets={"relay.enabled": "false"})
    assert component_name("relay") not in _named(off, "Deployment")


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        ({"relay.enabled": "true"}, "relay.enabled is true but regions lists no peer"),
        ({"regions": "{eu-central,us-east}"}, "set region too"),
        ({"region": "ap-east", "regions": "{eu-central,us-east}"}, "must include region"),
    ],
)
def test_inconsistent_regions_are_refused(helm: Helm, sets: dict[str, str], words: str) -> None:
    with pytest.raises(HelmFailed) as failed:
        helm.render(values=[scenario_file("minimal")], sets=sets)
    assert words in str(failed.value)


def test_builder_values_give_every_pod_the_specs_regions(helm: Helm, tmp_path: Path) -> None:
    spec = parse_spec(shipped_spec("staging"))
    names = ",".join(r.name for r in spec.regions)
    for region in spec.regions:
        values = tmp_path / f"{region.name}.yaml"
        values.write_text(yaml.safe_dump(chart_values(spec, region)))
        objects = helm.render(values=[values])
        for component in ("gateway", "dispatcher", "relay"):
            env = _env(objects, component)
            assert env["IMGW_REGIONS"] == names, (region.name, component)
            assert env["IMGW_REGION"] == region.name
    one = parse_spec(shipped_spec("local"))
    values = tmp_path / "local.yaml"
    values.write_text(yaml.safe_dump(chart_values(one, one.regions[0])))
    objects = helm.render(values=[values])
    assert component_name("relay") not in _named(objects, "Deployment")


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_multi_region_install_runs_the_relay(
    cluster_helm: Helm, kube_api: ApiClient, restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    create_jwks_secret(kube_api, namespace)
    cluster_helm.deploy("install", namespace, [MULTI])
    wait_rolled_out(kube_api, namespace, component_name("relay"), replicas=2)
    assert_pods_running_and_ready(kube_api, namespace, "relay", 2)
    assert component_name("relay") in network_policy_names(kube_api, namespace)
    pdbs = PolicyV1Api(kube_api).list_namespaced_pod_disruption_budget(namespace).items
    assert component_name("relay") in {p.metadata.name for p in pdbs}
    monitors = CustomObjectsApi(kube_api).list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "servicemonitors"
    )["items"]
    assert f"{RELEASE}-relay" in {m["metadata"]["name"] for m in monitors}
