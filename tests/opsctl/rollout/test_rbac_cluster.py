"""opsctl rollout works with exactly the Role in infra/rbac/opsctl-rollout.yaml, and fails with
a clear message, before changing anything, without it. The kwok API server runs with
--authorization-mode=Node,RBAC (kwokctl's --kube-authorization defaults to true), so these
are real authorization decisions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.client import CoreV1Api

from opsctl.cluster import find_tools
from opsctl.errors import ExitCode
from opsctl.paths import REPO_ROOT
from tests.opsctl.rollout.conftest import Gateway
from tests.opsctl.rollout.harness import NEW_IMAGE, OLD_IMAGE, MetricsLab
from tests.opsctl.rollout.test_canary_cluster import start_args
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration
MANIFEST = REPO_ROOT / "infra" / "rbac" / "opsctl-rollout.yaml"


def token_kubeconfig(gateway: Gateway, account: str, path: Path) -> Path:
    """A kubeconfig whose only credential is a ServiceAccount token, context kwok-local."""
    with gateway.cluster.api_client() as client:
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        }
        issued = CoreV1Api(client).create_namespaced_service_account_token(
            account, gateway.namespace, request
        )
    admin = yaml.safe_load(gateway.cluster.kubeconfig.read_text())
    context = gateway.cluster.context
    cluster = next(c for c in admin["clusters"] if c["name"] == context)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": issued.status.token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": account}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def kubectl(gateway: Gateway, *args: str) -> None:
    binary = find_tools(("kubectl",))["kubectl"]
    command = [str(binary), "--kubeconfig", str(gateway.cluster.kubeconfig)]
    command += ["--context", gateway.cluster.context, "-n", gateway.namespace, *args]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def with_kubeconfig(args: list[str], kubeconfig: Path) -> list[str]:
    args[args.index("--kubeconfig") + 1] = str(kubeconfig)
    return args


def test_the_shipped_role_is_enough(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, lab: MetricsLab, tmp_path: Path
) -> None:
    kubectl(gateway, "apply", "-f", str(MANIFEST))
    kubeconfig = token_kubeconfig(gateway, "opsctl-rollout", tmp_path / "sa.kubeconfig")
    result = opsctl_rollout(*with_kubeconfig(start_args(gateway, lab.url), kubeconfig))
    assert result.exit_code == ExitCode.OK, result.stderr
    assert json.loads(result.stdout)["phase"] == "succeeded"
    assert gateway.image() == NEW_IMAGE
    common = [*gateway.target(kubeconfig), "-o", "json"]
    assert opsctl_rollout("rollout", "status", *common).exit_code == ExitCode.OK
    assert opsctl_rollout("rollout", "undo", *common).exit_code == ExitCode.OK
    assert gateway.image() == OLD_IMAGE


def test_without_the_role_it_fails_clearly_and_changes_nothing(
    opsctl_rollout: OpsctlRunner, gateway: Gateway, tmp_path: Path
) -> None:
    kubectl(gateway, "create", "serviceaccount", "nobody")
    kubeconfig = token_kubeconfig(gateway, "nobody", tmp_path / "nobody.kubeconfig")
    before = gateway.deployment()
    assert before is not None
    args = with_kubeconfig(start_args(gateway, "http://127.0.0.1:9"), kubeconfig)
    result = opsctl_rollout(*args)
    assert result.exit_code == ExitCode.FAILED, result.stderr
    assert "lacks permissions" in result.stderr
    assert "patch deployments" in result.stderr
    assert "infra/rbac/opsctl-rollout.yaml" in result.stderr
    after = gateway.deployment()
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert gateway.configmap() is None
    status = opsctl_rollout("rollout", "status", *gateway.target(kubeconfig))
    assert status.exit_code == ExitCode.FAILED
    assert "forbidden" in status.stderr
