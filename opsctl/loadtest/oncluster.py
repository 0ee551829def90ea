"""``--on-cluster``: the Locust master and workers as Kubernetes Jobs in a region's cluster.

Objects (all labelled app.kubernetes.io/name=im-loadtest, instance=<run id>):
- ConfigMap <run>-profile: the profile YAML, mounted at /etc/loadtest/profile.yaml;
- Service <run>-master: the master's ZeroMQ port for the workers;
- Job <run>-master (1 pod) and Job <run>-worker (parallelism = completions = workers).
The image holds this repository (``loadtest`` image, same registry as the gateway image). The
HS256 secret is read from the Secret ``im-loadtest-jwt`` (key ``secret``), never passed inline.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from opsctl.errors import CheckFailed, UserInputError
from opsctl.loadtest.profiles import Profile
from opsctl.loadtest.targets import GATEWAY_URL_CONVENTION
from opsctl.poll import WaitTimeout, wait_until

NAMESPACE = "im-loadtest"
JWT_SECRET_NAME = "im-loadtest-jwt"
MASTER_PORT = 5557
_LABEL = "app.kubernetes.io"
_CPU_PER_WORKER = "1"
_MEMORY_PER_WORKER = "2Gi"


def loadtest_image(gateway_image: str) -> str:
    """registry/im/gateway:0.1.0 -> registry/im/loadtest:0.1.0 (same registry and version)."""
    repository, _, tag = gateway_image.rpartition(":")
    base = repository.rsplit("/", 1)[0]
    return f"{base}/loadtest:{tag or 'latest'}"


def _labels(run: str, component: str) -> dict[str, str]:
    return {
        f"{_LABEL}/name": "im-loadtest",
        f"{_LABEL}/instance": run,
        f"{_LABEL}/component": component,
        f"{_LABEL}/managed-by": "opsctl",
    }


def _pod_template(
    run: str, component: str, image: str, args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    return {
        "metadata": {"labels": _labels(run, component)},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": component,
                    "image": image,
                    "command": ["python", "-m", "locust"],
                    "args": args,
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                    "ports": [{"containerPort": MASTER_PORT, "name": "locust"}]
                    if component == "master"
                    else [],
                    "resources": {
                        "requests": {"cpu": _CPU_PER_WORKER, "memory": _MEMORY_PER_WORKER},
                        "limits": {"memory": _MEMORY_PER_WORKER},
                    },
                    "volumeMounts": [
                        {
                            "name": "profile",
                            "mountPath": "/etc/loadtest/profile.yaml",
                            "subPath": "profile.yaml",
                        },
                        {"name": "jwt", "mountPath": "/etc/loadtest/jwt", "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "profile", "configMap": {"name": f"{run}-profile"}},
                {"name": "jwt", "secret": {"secretName": JWT_SECRET_NAME}},
            ],
        },
    }


def build_manifests(
    *,
    run: str,
    profile: Profile,
    profile_text: str,
    target_urls: list[str],
    image: str,
    workers: int,
    issuer: str | None = None,
    audience: str | None = None,
) -> list[dict[str, Any]]:
    env = {
        "LOADTEST_PROFILE": "/etc/loadtest/profile.yaml",
        "LOADTEST_TARGETS": ",".join(target_urls),
        "LOADTEST_JWT_SECRET_FILE": "/etc/loadtest/jwt/secret",
        "LOADTEST_JWT_ISSUER": issuer or "",
        "LOADTEST_JWT_AUDIENCE": audience or "",
        "LOADTEST_RUN_ID": run.replace("-", ""),
        "LOADTEST_OUT": "/tmp",
        "LOADTEST_WORKERS": str(workers),
    }
    locustfile = ["-f", "loadtests/locustfile.py", "--skip-log-setup"]
    master_args = [
        *locustfile,
        "--master",
        "--headless",
        f"--master-bind-port={MASTER_PORT}",
        f"--expect-workers={workers}",
        f"--users={profile.users}",
        f"--spawn-rate={profile.spawn_rate}",
        f"--run-time={int(profile.run_time_s + 2.999)}s",
        "--stop-timeout=1",
        "--csv=/tmp/locust",
        "--exit-code-on-error=0",
        "--only-summary",
    ]
    worker_args = [
        *locustfile,
        "--worker",
        f"--master-host={run}-master",
        f"--master-port={MASTER_PORT}",
    ]
    deadline = int(profile.run_time_s + 600)

    def meta(name: str, component: str) -> dict[str, Any]:
        return {"name": name, "namespace": NAMESPACE, "labels": _labels(run, component)}

    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{run}-profile", "profile"),
            "data": {"profile.yaml": profile_text},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(f"{run}-master", "master"),
            "spec": {
                "selector": _labels(run, "master"),
                "ports": [{"name": "locust", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta(f"{run}-master", "master"),
            "spec": {
                "completions": 1,
                "parallelism": 1,
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": 86400,
                "template": _pod_template(run, "master", image, master_args, env),
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta(f"{run}-worker", "worker"),
            "spec": {
                "completions": workers,
                "parallelism": workers,
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": 86400,
                "template": _pod_template(run, "worker", image, worker_args, env),
            },
        },
    ]


def apply_manifests(api_client: Any, namespace: str, manifests: list[dict[str, Any]]) -> list[str]:
    """Create the objects in ``namespace``; returns kind/name of each."""
    from kubernetes.client import BatchV1Api, CoreV1Api

    core, batch = CoreV1Api(api_client), BatchV1Api(api_client)
    created = []
    for manifest in manifests:
        body: Any = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
        kind = manifest["kind"]
        if kind == "ConfigMap":
            core.create_namespaced_config_map(namespace, body)
        elif kind == "Service":
            core.create_namespaced_service(namespace, body)
        elif kind == "Job":
            batch.create_namespaced_job(namespace, body)
        else:
            raise ValueError(f"unexpected kind {kind}")
        created.append(f"{kind.lower()}/{manifest['metadata']['name']}")
    return created


def wait_for_jobs(api_client: Any, namespace: str, run: str, timeout_s: float) -> dict[str, str]:
    """Job name -> 'succeeded' or 'failed' once both Jobs finished."""
    from kubernetes.client import BatchV1Api

    batch = BatchV1Api(api_client)
    selector = f"{_LABEL}/instance={run}"

    def finished() -> dict[str, str]:
        """Every Job's final state, or nothing while one is still running."""
        jobs: list[Any] = batch.list_namespaced_job(namespace, label_selector=selector).items
        states: dict[str, str] = {}
        for job in jobs:
            status = job.status
            if (status.failed or 0) > 0:
                states[job.metadata.name] = "failed"
            elif (status.succeeded or 0) >= (job.spec.completions or 1):
                states[job.metadata.name] = "succeeded"
        return states if jobs and len(states) == len(jobs) else {}

    try:
        return wait_until(f"the load-test Jobs of {run}", finished, timeout=timeout_s, interval=1.0)
    except WaitTimeout:
        raise CheckFailed(
            f"load-test Jobs of {run} did not finish within {timeout_s:.0f} s"
        ) from None


def launch_on_cluster(
    infra_dir: Path,
    stack: str,
    region: str | None,
    profile: Profile,
    profile_file: Path,
    *,
    workers: int,
    target_urls: list[str] | None,
    namespace: str = NAMESPACE,
    kubeconfig: Path | None = None,
) -> list[str]:
    from kubernetes import config

    from opsctl.spec import load_stack

    spec = load_stack(infra_dir, stack)
    regions = {r.name: r for r in spec.regions}
    chosen = regions.get(region) if region else (spec.regions[0] if len(regions) == 1 else None)
    if chosen is None:
        raise UserInputError(
            "--on-cluster needs --region", hint=f"regions of '{stack}': {', '.join(regions)}"
        )
    urls = target_urls or [
        GATEWAY_URL_CONVENTION.format(region=chosen.name, environment=spec.environment)
    ]
    run = f"lt-{uuid.uuid4().hex[:8]}"
    manifests = build_manifests(
        run=run,
        profile=profile,
        profile_text=profile_file.read_text(encoding="utf-8"),
        target_urls=urls,
        image=loadtest_image(spec.images.gateway),
        workers=workers,
    )
    client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig) if kubeconfig else None, context=chosen.kube_context
    )
    with client:
        return apply_manifests(client, namespace, manifests)
