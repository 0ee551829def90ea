"""The Pulumi program through the real engine (pinned pulumi CLI and Kubernetes provider), on
per-region kwok clusters, through `opsctl infra` exactly as a user runs it.

One journey per shipped simulated stack (local: 1 region, staging: 2): preview (per-region
JSON, --expect-no-changes gate), up, the cross-region root CA copy, a second up with no
changes, refresh, destroy; on the last stack also drift after an out-of-band edit (reported
per region, exit 1) and up repairing it. Both stacks run ``operators: external``: the program
installs the operators' pinned CRDs, and kwok's Stages (opsctl/cluster/stages/) play
cert-manager (Certificates get a Secret with a real key pair, then Ready) and the cloud
(LoadBalancer addresses).

The clusters are shared by the session (one kwok cluster per region of both stacks); each
journey has its own file backend and a copy of the stack files (the passphrase provider
writes its salt there).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsctl.cluster._plan import plan_clusters
from opsctl.cluster._tools import find_tools
from opsctl.errors import ExitCode, ToolMissing
from opsctl.infra import Operation, find_pulumi, pulumi_home, resolve_config
from opsctl.infra._driver import _check_provider
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration

# `make test` runs the local journey. The staging journey (two regions) runs with
# OPSCTL_ENGINE_TEST_STACKS=local,staging: about 14 min on idle cores; its preview, up, root CA
# copy and second up pass, and its refresh still reports the read of the primary's root CA
# Secret as an update. The out-of-band edit, drift report and repair run on the last stack
# given (the same engine paths for one region or two; staging also names the region).
STACKS = tuple(os.environ.get("OPSCTL_ENGINE_TEST_STACKS", "local").split(","))
DRIFT_STACK = STACKS[-1]
GATEWAY_CONFIGMAP = ("im", "im-gateway-gateway")  # (namespace, name), from our chart


@dataclass(frozen=True)
class Clusters:
    kubeconfig: Path
    clusters: Any  # KwokClusters

    def core(self, context: str) -> Any:
        from kubernetes.client import CoreV1Api
        from kubernetes.config import new_client_from_config

        client = new_client_from_config(config_file=str(self.kubeconfig), context=context)
        return CoreV1Api(client)


@pytest.fixture(scope="session")
def stack_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    """One kwok cluster per region of every stack in STACKS, for the whole session."""
    try:
        tools = find_tools()
        find_pulumi(build=None)
        _check_provider(pulumi_home(), None)
    except ToolMissing as missing:
        pytest.fail(f"{missing.message}; {missing.hint or ''}", pytrace=False)
    from opsctl.cluster.kwok import KwokClusters

    plans = [plan for stack in STACKS for plan in plan_clusters(DEFAULT_INFRA_DIR, stack)]
    clusters = KwokClusters(tmp_path_factory.mktemp("kwok-infra"), tools=tools)
    try:
        clusters.up(plans, nodes_per_zone=2)
        yield Clusters(kubeconfig=clusters.kubeconfig_path, clusters=clusters)
    finally:
        clusters.down()


@pytest.fixture
def infra_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project and stack files, a private file backend, a passphrase."""
    infra = tmp_path / "infra"
    infra.mkdir()
    for name in ["Pulumi.yaml", *(f"Pulumi.{stack}.yaml" for stack in STACKS)]:
        shutil.copy(DEFAULT_INFRA_DIR / name, infra / name)
    monkeypatch.setenv("OPSCTL_PULUMI_BACKEND_URL", (tmp_path / "state").as_uri())
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "engine-tests")
    monkeypatch.setenv("OPSCTL_NO_TOOL_BUILD", "1")  # the session fixture checked the tools
    monkeypatch.delenv("OPSCTL_PULUMI_BIN", raising=False)
    return infra


def _infra(opsctl: OpsctlRunner, infra: Path, clusters: Clusters, *args: str) -> Any:
    return opsctl(
        "infra", *args, "--infra-dir", str(infra), "--kubeconfig", str(clusters.kubeconfig)
    )


def _json(result: Any) -> dict[str, Any]:
    assert result.stdout, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _check_root_ca(clusters: Clusters, contexts: dict[str, str], primary: str) -> None:
    """The CA Secret the kwok 'issuer' wrote in the primary is a real CA key pair, and every
    other region holds a byte-identical copy written by the program."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    source = clusters.core(contexts[primary]).read_namespaced_secret("im-root-ca", "cert-manager")
    data = dict(source.data)
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.PEM
    assert key.public_key().public_bytes(encoding, public) == cert.public_key().public_bytes(
        encoding, public
    )
    for region, context in contexts.items():
        if region == primary:
            continue
        copy = clusters.core(context).read_namespaced_secret("im-root-ca", "cert-manager")
        assert dict(copy.data) == data, f"{region}: the root CA copy differs from {primary}'s"
        assert copy.metadata.annotations["im.platform/copied-from"] == primary


@pytest.mark.timeout(1800)  # about 9 engine runs; staging's take minutes on 2 shared cores
@pytest.mark.parametrize("stack", STACKS)
def test_engine_journey(
    stack: str, stack_clusters: Clusters, infra_env: Path, opsctl: OpsctlRunner
) -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, stack)
    regions = [region.name for region in spec.regions]
    contexts = {region.name: region.kube_context for region in spec.regions}
    run = lambda *args: _infra(opsctl, infra_env, stack_clusters, *args, "--stack", stack)  # noqa: E731

    # preview: a per-region change summary for CI; --expect-no-changes makes it exit 1
    preview = run("preview", "-o", "json", "--expect-no-changes")
    assert preview.exit_code == ExitCode.FAILED, preview.stderr
    assert "changes pending" in preview.stderr
    summary = _json(preview)
    assert summary["pending"] > 0
    for region in regions:
        assert summary["regions"][region]["changes"].get("create", 0) > 10, region

    # up, then the cross-region root CA copy for real
    up = run("up", "-o", "json")
    assert up.exit_code == ExitCode.OK, up.stderr
    assert _json(up)["changes"]["create"] == summary["changes"]["create"]
    _check_root_ca(stack_clusters, contexts, spec.primary.name)

    # a second up changes nothing
    again = run("up", "-o", "json")
    assert again.exit_code == ExitCode.OK, again.stderr
    assert _json(again)["pending"] == 0, _json(again)["regions"]

    # refresh agrees with the clusters
    refresh = run("refresh", "-o", "json")
    assert refresh.exit_code == ExitCode.OK, refresh.stderr
    assert _json(refresh)["pending"] == 0, _json(refresh)["regions"]

    if stack == DRIFT_STACK:
        _drift_and_repair(stack_clusters, contexts, run)

    # destroy removes what the stack made (the operators' CRDs stay: retain_on_delete)
    destroyed = run("destroy", "--yes", "-o", "json")
    assert destroyed.exit_code == ExitCode.OK, destroyed.stderr
    assert _json(destroyed)["changes"]["delete"] > 0
    for region in regions:
        namespaces = {
            item.metadata.name
            for item in stack_clusters.core(contexts[region]).list_namespace().items
            if item.status.phase == "Active"
        }
        assert "im" not in namespaces, region


def _drift_and_repair(clusters: Clusters, contexts: dict[str, str], run: Any) -> None:
    """Someone edits a live object: drift names it under its region (exit 1), up puts it back."""
    regions = list(contexts)
    edited = regions[-1]
    namespace, name = GATEWAY_CONFIGMAP
    core = clusters.core(contexts[edited])
    core.patch_namespaced_config_map(name, namespace, {"data": {"IMGW_MAX_CONNECTIONS": "1"}})
    drift = run("drift", "-o", "json")
    assert drift.exit_code == ExitCode.FAILED, drift.stderr
    report = _json(drift)
    assert report["drifted"] == 1
    drifted = report["regions"][edited]["resources"]
    assert [resource["name"] for resource in drifted] == [f"{edited}/im-gateway:im/{name}"]
    for region in regions:
        if region != edited:
            assert report["regions"][region]["resources"] == []

    repaired = run("up")
    assert repaired.exit_code == ExitCode.OK, repaired.stderr
    live = core.read_namespaced_config_map(name, namespace).data["IMGW_MAX_CONNECTIONS"]
    assert live != "1"
    assert run("drift").exit_code == ExitCode.OK

    outputs = run("outputs", "-o", "json")
    assert outputs.exit_code == ExitCode.OK
    assert sorted(_json(outputs)["outputs"]["regions"]) == sorted(regions)


@pytest.mark.timeout(600)
def test_a_read_secret_refreshes_unchanged_until_its_source_changes(
    stack_clusters: Clusters, infra_env: Path
) -> None:
    """The cross-region root CA copy reads the primary's Secret (infra/imstack read_secret).
    Right after up, refresh and drift find the read unchanged; an edit of the source shows.
    (With a bare Secret.get, every refresh and drift check reported the read as an update.)"""
    import pulumi
    import pulumi_kubernetes as k8s
    from kubernetes.client import V1Namespace, V1ObjectMeta, V1Secret

    from infra.imstack.program import read_secret
    from opsctl.infra._driver import open_stack, prepare
    from opsctl.infra._events import pending, summary_counts

    stack = STACKS[0]
    context = load_stack(DEFAULT_INFRA_DIR, stack).primary.kube_context
    core = stack_clusters.core(context)
    namespace, name = "engine-read-check", "source"
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)))
    data = {"ca.crt": base64.b64encode(b"not a real CA").decode()}
    core.create_namespaced_secret(namespace, V1Secret(metadata=V1ObjectMeta(name=name), data=data))

    def program() -> None:
        provider = k8s.Provider("read-check", context=context)
        source = read_secret(
            "read-check/source",
            namespace=namespace,
            name=name,
            opts=pulumi.ResourceOptions(provider=provider, additional_secret_outputs=["data"]),
        )
        pulumi.export("keys", pulumi.Output.unsecret(source.data).apply(sorted))

    config = resolve_config(stack=stack, infra_dir=infra_env, kubeconfig=stack_clusters.kubeconfig)
    checked = open_stack(config, prepare(config, Operation.up), program)
    try:
        assert checked.up().outputs["keys"].value == ["ca.crt"]
        refreshed = summary_counts(checked.refresh().summary.resource_changes)
        assert pending(refreshed) == 0, refreshed
        drift = summary_counts(checked.preview_refresh().change_summary)
        assert pending(drift) == 0, drift

        core.patch_namespaced_secret(name, namespace, {"data": {"extra": data["ca.crt"]}})
        drift = summary_counts(checked.preview_refresh().change_summary)
        assert drift.get("update") == 1, drift
    finally:
        checked.destroy()
        core.delete_namespace(namespace)


def test_a_python_policy_pack_is_refused_with_the_engines_reason(
    infra_env: Path, opsctl: OpsctlRunner, tmp_path: Path
) -> None:
    """The engine needs pulumi-language-python to run a Python pack; the Go module proxy refuses
    that module, so opsctl says exactly that (exit 2), before any resource is touched."""
    from tests.infra._mocks import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", ["kwok-local"])
    result = opsctl(
        "infra",
        "preview",
        "--stack",
        "local",
        "--infra-dir",
        str(infra_env),
        "--kubeconfig",
        str(kubeconfig),
        "--policy-pack",
        str(DEFAULT_INFRA_DIR / "policy"),
    )
    assert result.exit_code == ExitCode.BAD_INPUT, result.stderr
    assert "cannot run a Python policy pack" in result.stderr
    assert "no language plugin 'pulumi-language-python' found" in result.stderr
    assert "Traceback" not in result.stderr
