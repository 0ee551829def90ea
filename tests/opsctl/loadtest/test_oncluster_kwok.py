"""On-cluster runs against a real kube-apiserver (kwok), in two real halves:

- the manifests are created with strict field validation, by opsctl holding only the Role it
  documents (``OPERATOR_RULES``);
- the pods' exact command lines and environment run as local processes against the local
  stack (tests/opsctl/loadtest/kubelet.py), the master publishing through its own
  ServiceAccount token to the kwok API server, and opsctl collecting the verdict from there.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from opsctl.errors import CheckFailed
from opsctl.loadtest.oncluster import (
    JWT_SECRET_NAME,
    ClusterRun,
    ClusterTarget,
    RunShape,
    apply_manifests,
    build_manifests,
    cluster_target,
    operator_role,
)
from opsctl.loadtest.profiles import load_profile
from opsctl.loadtest.session import Outcome, execute_on_cluster
from opsctl.loadtest.sizing import size_run
from opsctl.paths import DEFAULT_INFRA_DIR
from tests.loadtests.conftest import write_profile
from tests.opsctl.loadtest.kubelet import ProcessKubelet, without_job_completion

pytestmark = pytest.mark.integration

QUIET = {"reconnect": {"rate_per_user_s": 0.0}, "offline_sync": {"rate_per_user_s": 0.0}}


def test_the_manifests_pass_strict_validation(kube_cluster, kube_namespace) -> None:
    from kubernetes.client import CoreV1Api, RbacAuthorizationV1Api

    profile = load_profile("smoke")
    manifests = build_manifests(
        run="lt-kwoktest",
        profile_text="name: smoke\n",
        target_urls=["ws://gateway.local.local.im.internal/ws"],
        image="registry.im.internal/im/loadtest:0.1.0",
        sizing=size_run(profile, workers=2),
        shape=RunShape.of(profile),
        namespace=kube_namespace,
    )
    with kube_cluster.api_client() as client:
        created = apply_manifests(client, kube_namespace, manifests)
        assert created[-2:] == ["job/lt-kwoktest-master", "job/lt-kwoktest-worker"]
        role = RbacAuthorizationV1Api(client).read_namespaced_role(
            "lt-kwoktest-master", kube_namespace
        )
        assert role.rules[0].resource_names == ["lt-kwoktest-results"]
        service = CoreV1Api(client).read_namespaced_service("lt-kwoktest-master", kube_namespace)
        assert service.spec.ports[0].port == 5557


def _operator_client(admin: Any, namespace: str) -> Any:
    """An API client holding only the Role opsctl documents, through a ServiceAccount."""
    from kubernetes.client import (
        ApiClient,
        AuthenticationV1TokenRequest,
        Configuration,
        CoreV1Api,
        RbacAuthorizationV1Api,
        V1TokenRequestSpec,
    )

    core, rbac = CoreV1Api(admin), RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "opsctl"}})
    rbac.create_namespaced_role(namespace, operator_role(namespace))
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "opsctl-loadtest"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "opsctl-loadtest",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "opsctl", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "opsctl", namespace, AuthenticationV1TokenRequest(spec=V1TokenRequestSpec(audiences=[]))
    ).status.token
    config = Configuration()
    config.host = admin.configuration.host
    config.ssl_ca_cert = admin.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    return lambda: ApiClient(config)


def _target(kube_cluster, namespace: str, local_stack, admin: Any) -> ClusterTarget:
    from kubernetes.client import CoreV1Api

    info = local_stack.info
    CoreV1Api(admin).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": JWT_SECRET_NAME},
            "stringData": {"secret": info.jwt_secret_file.read_text().strip()},
        },
    )
    target = cluster_target(
        DEFAULT_INFRA_DIR,
        "local",
        None,
        target_urls=list(info.gateway_ws_urls),
        namespace=namespace,
        kubeconfig=kube_cluster.kubeconfig,
        issuer=info.jwt_issuer,
        audience=info.jwt_audience,
    )
    target.api_client_factory = _operator_client(admin, namespace)
    return target


def _run_with_kubelet(
    kube_cluster, namespace: str, cluster_run: ClusterRun, tmp_path: Path, during=None
) -> tuple[Outcome | None, BaseException | None, ProcessKubelet]:
    """opsctl's run in a thread; this thread plays kubelet for its pods."""
    created = threading.Event()
    cluster_run.on_created = lambda _run: created.set()
    done: dict[str, Any] = {}

    def opsctl_side() -> None:
        try:
            done["outcome"] = execute_on_cluster(cluster_run, show=False)
        except BaseException as error:
            done["error"] = error

    thread = threading.Thread(target=opsctl_side, daemon=True)
    with kube_cluster.api_client() as admin, without_job_completion(admin, namespace):
        thread.start()
        assert created.wait(60), done
        with ProcessKubelet(admin, namespace, cluster_run.run, tmp_path / "pods") as kubelet:
            if during is not None:
                during(kubelet)
            thread.join(timeout=240)
            assert not thread.is_alive(), "opsctl did not return"
            assert not kubelet.errors, kubelet.errors
    return done.get("outcome"), done.get("error"), kubelet


def _two_worker_run(
    kube_cluster, kube_namespace: str, local_stack, profile_file: Path, tmp_path: Path
) -> ClusterRun:
    """A run of ``profile_file`` with two workers against the local stack, results in
    ``tmp_path / "out"``."""
    profile = load_profile(str(profile_file))
    with kube_cluster.api_client() as admin:
        target = _target(kube_cluster, kube_namespace, local_stack, admin)
    return ClusterRun(
        target=target,
        profile=profile,
        profile_file=profile_file,
        sizing=size_run(profile, workers=2),
        shape=RunShape.of(profile),
        out_dir=tmp_path / "out",
    )


def test_a_distributed_run_returns_its_verdict_through_the_api(
    kube_cluster, kube_namespace, local_stack, tmp_path: Path
) -> None:
    from kubernetes.client import BatchV1Api

    profile_file = write_profile(
        tmp_path, users=12, duration_s=8, behaviours=QUIET, storms=[{"at_s": 4, "share_pct": 50}]
    )
    cluster_run = _two_worker_run(kube_cluster, kube_namespace, local_stack, profile_file, tmp_path)
    started = time.monotonic()
    outcome, error, kubelet = _run_with_kubelet(kube_cluster, kube_namespace, cluster_run, tmp_path)
    assert error is None, f"{error}\nmaster log:\n{kubelet.log(kubelet.pods('master')[0])}"
    assert outcome is not None
    summary = outcome.result.summary
    checks = {c.name: c.status.value for c in outcome.verdict.checks}
    # The latency and timing checks are at the mercy of this shared machine's load; the
    # protocol's guarantees are not, and the exit code is the verdict's, as for a local run.
    for name in ("lost messages", "duplicated messages", "out-of-order messages"):
        assert checks[name] == "pass", checks
    assert checks["storm 0 at 4 s (50 %): connect success"] == "pass", checks
    assert (
        outcome.verdict.exit_code
        == {"pass": 0, "fail": 1, "unreliable": 3}[outcome.verdict.status.value]
    )
    assert summary["on_cluster"]["workers_seen"] == kubelet.pods("worker")
    assert summary["delivery"]["count"] > 20
    assert summary["counters"]["final_synced_users"] >= 10
    storm = summary["storms"][0]
    assert storm["dropped"] >= 3
    assert storm["reconnected"] == storm["dropped"]
    assert storm["all_back_ms"] is not None
    for name in ("summary.json", "verdict.csv", "timeline.csv", "report.html"):
        assert (tmp_path / "out" / name).is_file()
    collection = summary["on_cluster"]["collection"]
    print(f"collection: {collection}, wall {time.monotonic() - started:.1f} s, storm {storm}")
    with kube_cluster.api_client() as admin:  # cleaned up
        jobs = BatchV1Api(admin).list_namespaced_job(
            kube_namespace, label_selector=f"app.kubernetes.io/instance={cluster_run.run}"
        )
        assert jobs.items == []


def test_a_killed_worker_fails_the_run_naming_it(
    kube_cluster, kube_namespace, local_stack, tmp_path: Path
) -> None:
    profile_file = write_profile(tmp_path, users=8, duration_s=20, behaviours=QUIET)
    cluster_run = _two_worker_run(kube_cluster, kube_namespace, local_stack, profile_file, tmp_path)
    killed: list[str] = []

    def kill_one(kubelet: ProcessKubelet) -> None:
        deadline = time.monotonic() + 60
        while len(kubelet.pods("worker")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(6)  # mid-run
        killed.append(kubelet.pods("worker")[1])
        kubelet.kill(killed[0])

    outcome, error, _ = _run_with_kubelet(
        kube_cluster, kube_namespace, cluster_run, tmp_path, during=kill_one
    )
    assert outcome is None
    assert isinstance(error, CheckFailed), error
    assert int(error.exit_code) == 1
    assert killed[0] in error.message
    others = [p for p in _pod_names(error.message) if p != killed[0]]
    assert not others, error.message


def _pod_names(message: str) -> list[str]:
    return [word.rstrip(":;,") for word in message.split() if "-worker-" in word]
