"""`opsctl render` output against real tools: the pinned helm and the kwok test cluster.

The built-in kinds of the local stack's render are applied server-side to the test cluster,
dry run first and then for real; every custom resource of the prod render (cert-manager,
Strimzi, cass-operator, redis-operator, Prometheus Operator) is dry-run validated against the
upstream CRDs of the pinned operator releases.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from opsctl.cluster._tools import find_tools
from opsctl.errors import ToolMissing
from opsctl.spec import parse_spec
from opsctl.stack import COMPONENT_ORDER, build_stack
from opsctl.stack.policies import check_all
from opsctl.stack.render import manifests_in, render
from tests.support import shipped_spec, wait_for

if TYPE_CHECKING:
    from opsctl.cluster.pytest_plugin import KubeCluster

pytestmark = pytest.mark.integration

BUILT_IN_GROUPS = {"", "apps", "batch", "policy", "autoscaling"}
# Kinds every region's render holds (the namespaces' guard rails and the chart's workloads).
WORKLOAD_KINDS = ("NetworkPolicy", "ResourceQuota", "Deployment", "Service", "ConfigMap")
WORKLOAD_KINDS += ("PodDisruptionBudget", "HorizontalPodAutoscaler")


def _tool(name: str) -> Path:
    try:
        return find_tools((name,))[name]
    except ToolMissing as missing:
        pytest.fail(f"{missing.message}; {missing.hint or ''}", pytrace=False)


def _group(manifest: dict[str, Any]) -> str:
    api = str(manifest["apiVersion"])
    return api.split("/", maxsplit=1)[0] if "/" in api else ""


def _built_in(manifest: dict[str, Any]) -> bool:
    group = _group(manifest)
    return group in BUILT_IN_GROUPS or group.endswith(".k8s.io")


@pytest.fixture(scope="module")
def prod_render(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _tool("helm")
    out = tmp_path_factory.mktemp("render-prod")
    render(build_stack(parse_spec(shipped_spec("prod"))), out)
    return out


def test_prod_render_has_every_component_of_every_region(prod_render: Path) -> None:
    spec = parse_spec(shipped_spec("prod"))
    for region in spec.regions:
        folders = sorted(p.name for p in (prod_render / region.name).iterdir() if p.is_dir())
        assert [f.split("-", 1)[1] for f in folders] == list(COMPONENT_ORDER)
        releases = sorted((prod_render / region.name).glob("*/release-*.yaml"))
        assert len(releases) == 5
        for path in releases:
            release = yaml.safe_load(path.read_text())
            assert {"chart", "repo", "version", "values"} <= release.keys()
        chart = list(
            yaml.safe_load_all(
                (prod_render / region.name / "06-gateway" / "chart-im-gateway.yaml").read_text()
            )
        )
        kinds = {(o["kind"], o["metadata"]["name"]) for o in chart}
        assert ("Deployment", "im-gateway-gateway") in kinds
        assert ("Deployment", "im-gateway-dispatcher") in kinds
        hpa = next(
            o
            for o in chart
            if o["kind"] == "HorizontalPodAutoscaler" and "gateway-gateway" in o["metadata"]["name"]
        )
        assert hpa["spec"]["minReplicas"] == region.gateway.replicas
        assert hpa["spec"]["maxReplicas"] == region.gateway.max_replicas
        gateway = next(
            o
            for o in chart
            if o["metadata"]["name"] == "im-gateway-gateway" and o["kind"] == "Deployment"
        )
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        assert container["image"] == spec.images.gateway
        assert all(o["metadata"]["namespace"] == "im" for o in chart)


def test_rendered_prod_objects_and_chart_comply_with_every_policy(prod_render: Path) -> None:
    for region in ("ap-east", "eu-central", "us-east"):
        assert check_all(manifests_in(prod_render / region)) == []


def _kubectl_command(cluster: KubeCluster, *args: str) -> list[str]:
    kubectl = str(_tool("kubectl"))
    return [kubectl, "--kubeconfig", str(cluster.kubeconfig), "--context", cluster.context, *args]


def _kubectl(cluster: KubeCluster, *args: str, stdin: str | None = None) -> str:
    command = _kubectl_command(cluster, *args)
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def _apply(cluster: KubeCluster, manifests: list[dict[str, Any]], *, dry_run: bool) -> str:
    args = ["apply", "--server-side", "--field-manager=opsctl-test", "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return _kubectl(cluster, *args, stdin=yaml.safe_dump_all(manifests))


def _delete_namespaces(cluster: KubeCluster, names: list[str]) -> None:
    delete = ("delete", "namespace", "--wait=false", "--ignore-not-found", *names)
    subprocess.run(
        _kubectl_command(cluster, *delete), capture_output=True, timeout=120, check=False
    )


def test_local_render_applies_to_the_test_cluster(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    _tool("helm")
    render(build_stack(parse_spec(shipped_spec("local"))), tmp_path)
    manifests = list(manifests_in(tmp_path / "local"))
    built_in = [m for m in manifests if _built_in(m)]
    namespaces = [m for m in built_in if m["kind"] == "Namespace"]
    rest = [m for m in built_in if m["kind"] != "Namespace"]
    kinds = {m["kind"] for m in rest}
    assert {"LimitRange", *WORKLOAD_KINDS} <= kinds
    try:
        _apply(kube_cluster, namespaces, dry_run=True)
        _apply(kube_cluster, namespaces, dry_run=False)
        _apply(kube_cluster, rest, dry_run=True)
        applied = _apply(kube_cluster, rest, dry_run=False)
        assert applied.count("serverside-applied") == len(rest)

        # Quota, LimitRange and the restricted PodSecurity level all admit the chart's pods.
        def both_admitted() -> bool:
            names = _kubectl(kube_cluster, "get", "pods", "-n", "im", "-o", "name").split()
            gateway = any("gateway-gateway" in name for name in names)
            return gateway and any("dispatcher" in name for name in names)

        try:
            wait_for("gateway and dispatcher pods admitted", both_admitted, timeout=90, interval=1)
        except AssertionError as timed_out:
            events = _kubectl(kube_cluster, "get", "events", "-n", "im")
            raise AssertionError(f"{timed_out}\n{events}") from None
    finally:
        _delete_namespaces(kube_cluster, [m["metadata"]["name"] for m in namespaces])


def _install_crds_for(cluster: KubeCluster, objects: list[dict[str, Any]]) -> None:
    """Install, from every registered project, the CRDs of the kinds ``objects`` use; fails
    naming any (group, kind) no pinned upstream CRD defines."""
    from opsctl.cluster.crds import CRD_SOURCES, crd_set, install_crds, load_crds

    used = {(_group(m), str(m["kind"])) for m in objects}
    kinds_by_project: dict[str, set[str]] = {}
    try:
        for project in CRD_SOURCES:
            for crd in load_crds(crd_set(project)):
                key = (crd["spec"]["group"], crd["spec"]["names"]["kind"])
                if key in used:
                    kinds_by_project.setdefault(project, set()).add(key[1])
                    used.discard(key)
        assert not used, f"no pinned upstream CRD defines {sorted(used)}"
        with cluster.api_client() as client:
            for project, kinds in kinds_by_project.items():
                install_crds(client, [project], kinds=kinds)
    except ToolMissing as missing:
        pytest.fail(f"{missing.message}; {missing.hint or ''}", pytrace=False)


def _custom_resources(region_dir: Path, namespace: str) -> list[dict[str, Any]]:
    """The region's non-built-in objects, namespaced ones moved to ``namespace`` (the schemas do
    not depend on it, and a server-side dry run stores nothing, so regions cannot collide)."""
    objects = [m for m in manifests_in(region_dir) if not _built_in(m)]
    for manifest in objects:
        if "namespace" in manifest["metadata"]:
            manifest["metadata"]["namespace"] = namespace
    return objects


# Two server-side dry runs with strict field validation, as each catches what the other lets by:
# server-side apply refuses a value of the wrong type in the typed patch, but silently prunes an
# unknown field below a free-form (x-kubernetes-preserve-unknown-fields) object; a strict create
# refuses every unknown field it would prune.
DRY_RUNS = {
    "apply": ("apply", "--server-side", "--field-manager=opsctl-test"),
    "create": ("create",),
}
DRY_RUN_DONE = {
    "apply": "serverside-applied (server dry run)",
    "create": "created (server dry run)",
}


def _validate(cluster: KubeCluster, manifests: list[dict[str, Any]]) -> list[str]:
    """The errors of both dry runs of ``manifests`` (nothing is stored); [] when all pass."""
    errors: list[str] = []
    for name, verb in DRY_RUNS.items():
        strict_dry_run = ("--dry-run=server", "--validate=strict", "-f", "-")
        command = _kubectl_command(cluster, *verb, *strict_dry_run)
        done = subprocess.run(
            command,
            input=yaml.safe_dump_all(manifests),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        accepted = done.stdout.count(DRY_RUN_DONE[name])
        if done.returncode != 0 or accepted != len(manifests):
            lines = [line for line in done.stderr.splitlines() if not line.startswith("Warning:")]
            errors.append(f"{name}: {accepted}/{len(manifests)} accepted: {lines}")
    return errors


def test_every_custom_resource_of_the_prod_render_validates_against_the_pinned_upstream_crds(
    kube_cluster: KubeCluster, kube_namespace: str, prod_render: Path
) -> None:
    regions = sorted(p for p in prod_render.iterdir() if p.is_dir())
    by_region = {region.name: _custom_resources(region, kube_namespace) for region in regions}
    every = [m for objects in by_region.values() for m in objects]
    assert {_group(m) for m in every} == {
        "cert-manager.io",
        "kafka.strimzi.io",
        "cassandra.datastax.com",
        "redis.redis.opstreelabs.in",
        "monitoring.coreos.com",
    }
    _install_crds_for(kube_cluster, every)
    rejected = {region: _validate(kube_cluster, objects) for region, objects in by_region.items()}
    assert rejected == {region: [] for region in by_region}


def test_every_built_in_object_of_the_prod_render_passes_strict_server_validation(
    kube_cluster: KubeCluster, kube_namespace: str, prod_render: Path
) -> None:
    """The Kubernetes schema of the pinned API server, for every region's built-in objects
    (our chart's included). Namespaced objects move to the test namespace; cluster-scoped ones
    get a prefixed name, so a create dry run cannot collide with objects of other tests."""
    rejected = {}
    for region in sorted(p for p in prod_render.iterdir() if p.is_dir()):
        objects = [m for m in manifests_in(region) if _built_in(m)]
        kinds = {m["kind"] for m in objects}
        assert {"Namespace", *WORKLOAD_KINDS} <= kinds
        for manifest in objects:
            metadata = manifest["metadata"]
            if "namespace" in metadata:
                metadata["namespace"] = kube_namespace
            else:
                metadata["name"] = f"{kube_namespace}-{metadata['name']}"[:63]
        rejected[region.name] = _validate(kube_cluster, objects)
    assert rejected == {name: [] for name in rejected}


# Where a misspelled field goes: the spec, except for CassandraDatacenter, whose spec upstream
# keeps free-form (x-kubernetes-preserve-unknown-fields, for the server config).
MISSPELLED_UNDER = {"CassandraDatacenter": ("spec", "storageConfig")}


def test_a_misspelled_field_in_any_custom_resource_is_rejected(
    kube_cluster: KubeCluster, kube_namespace: str, prod_render: Path
) -> None:
    objects = _custom_resources(prod_render / "eu-central", kube_namespace)
    one_per_group = list({_group(m): m for m in objects}.values())
    assert len(one_per_group) == 5
    _install_crds_for(kube_cluster, one_per_group)
    for manifest in one_per_group:
        assert _validate(kube_cluster, [manifest]) == []
        path = MISSPELLED_UNDER.get(manifest["kind"], ("spec",))
        parent = manifest
        for key in path:
            parent = parent[key]
        parent["replicaz"] = 3
        field = ".".join((*path, "replicaz"))
        errors = "\n".join(_validate(kube_cluster, [manifest]))
        assert f'unknown field "{field}"' in errors, f"{manifest['kind']} accepted {field}"


def _cli(*args: str) -> int:
    """The render command on its own app, errors mapped to exit codes as opsctl.cli.run does."""
    import typer

    from opsctl.cli import render as render_cli
    from opsctl.errors import OpsctlError

    app = typer.Typer()
    app.command("render")(render_cli.render)
    app.command("noop")(lambda: None)  # keeps "render" a subcommand
    try:
        typer.main.get_command(app).main(list(args), prog_name="opsctl", standalone_mode=False)
    except OpsctlError as error:
        return int(error.exit_code)
    return 0


def test_render_cli_writes_one_region_and_rejects_unknown_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("OPSCTL_CONFIG", "/nonexistent/opsctl-config.toml")
    _tool("helm")
    code = _cli(
        "render", "--stack", "prod", "--region", "eu-central", "--out", str(tmp_path), "-o", "json"
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in summary["regions"]] == ["eu-central"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eu-central"]
    assert _cli("render", "--stack", "prod", "--region", "mars", "--out", str(tmp_path)) == 2
