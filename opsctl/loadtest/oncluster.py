"""``--on-cluster``: the Locust master and workers as Jobs in a region's cluster, with a verdict.

One run, all objects labelled app.kubernetes.io/name=im-loadtest, instance=<run id>:

- ConfigMap <run>-profile: the profile YAML, mounted at /etc/loadtest/profile.yaml;
- ConfigMap <run>-results: created empty by opsctl; the master patches progress into it while
  it runs and its summary and timeline when it quits (loadtests/kube.py);
- ServiceAccount, Role and RoleBinding <run>-master: the master may ``get`` and ``patch`` that
  one ConfigMap, nothing else. Workers run with no API token at all;
- Service <run>-master: the master's ZeroMQ port for the workers;
- Job <run>-master (1 pod) and Job <run>-worker (parallelism = completions = workers).

Why a ConfigMap the master writes, not the API server's proxy to the master: the proxy needs
the master to serve HTTP and opsctl to hold ``pods/proxy`` or ``services/proxy`` (which reach
any port of any pod or Service in the namespace), and the results would die with the master
pod; a ConfigMap needs one narrowly scoped grant, outlives the pod (``--keep``), and is read
with an ordinary ``get``.

The image is the ``loadtest`` image (loadtests/Dockerfile), same registry and tag as the spec's
gateway image (``loadtest_image``). The users' HS256 secret is the Secret ``im-loadtest-jwt``
(key ``secret``), mounted, never passed inline. ``OPERATOR_RULES`` is what opsctl itself needs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl import console
from opsctl.errors import CheckFailed, UserInputError
from opsctl.loadtest.profiles import Profile
from opsctl.loadtest.runner import Progress, RunOptions, RunResult, collect, new_run_dir
from opsctl.loadtest.sizing import Sizing
from opsctl.loadtest.targets import GATEWAY_URL_CONVENTION, Target, check_url

NAMESPACE = "im-loadtest"
JWT_SECRET_NAME = "im-loadtest-jwt"
MASTER_PORT = 5557
APP_DIR = "/opt/app"  # the image's working directory (loadtests/Dockerfile)
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WORKERS_WAIT_S = 300  # image pulls and scheduling: how long the master waits for every worker
RESULTS_GRACE_S = 60.0  # after the master pod ended, for its results to show
POLL_S = 1.0
# A worker the master marks missing (3 s without heartbeat) may be only starved for a moment;
# Locust takes it back when its heartbeats resume. Missing this long more, it is lost.
MISSING_GRACE_S = 10.0
UID = 10001
_LABEL = "app.kubernetes.io"
_BAD_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}


def _rule(api_group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    """One RBAC PolicyRule."""
    return {"apiGroups": [api_group], "resources": resources, "verbs": verbs}


# What opsctl itself needs in the run's namespace (and nothing cluster-wide, except preflight's
# read of nodes and pods). Rendered by `opsctl loadtest manifests --operator-role`; the kwok
# test runs a whole on-cluster run with exactly these rules.
OPERATOR_RULES: list[dict[str, Any]] = [
    _rule("", ["configmaps", "services", "serviceaccounts"], ["create", "get", "delete"]),
    # Granting the master `patch` on its ConfigMap needs opsctl to hold it (RBAC escalation
    # check): opsctl itself never patches.
    _rule("", ["configmaps"], ["patch"]),
    _rule("rbac.authorization.k8s.io", ["roles", "rolebindings"], ["create", "delete"]),
    _rule("batch", ["jobs"], ["create", "get", "delete"]),
    _rule("", ["pods"], ["list"]),
    _rule("", ["pods/log"], ["get"]),
    _rule("", ["resourcequotas"], ["list"]),
]
# preflight --on-cluster only: node allocatable and what is already requested on each node.
PREFLIGHT_CLUSTER_RULES: list[dict[str, Any]] = [
    _rule("", ["nodes"], ["list"]),
    _rule("", ["pods"], ["list"]),
]


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


@dataclass(frozen=True)
class RunShape:
    """What one distributed run does: a whole profile, or a capacity step's override."""

    users: int
    spawn_rate: float
    run_time_s: float  # Locust --run-time: sending window, drain, worker start slack
    duration_s: float | None = None  # LOADTEST_DURATION_S (capacity steps)
    measure_from_s: float | None = None  # LOADTEST_MEASURE_FROM_S (capacity steps)

    @classmethod
    def of(
        cls, profile: Profile, users: int | None = None, duration_s: float | None = None
    ) -> RunShape:
        from opsctl.loadtest.runner import run_shape

        n, rate, run_time = run_shape(profile, users, duration_s)
        return cls(users=n, spawn_rate=rate, run_time_s=run_time, duration_s=duration_s)


def _container(
    component: str,
    *,
    image: str,
    args: list[str],
    env: list[dict[str, Any]],
    cpu_milli: int,
    memory_mib: int,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": component,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "workingDir": APP_DIR,
        "command": ["python", "-m", "locust"],
        "args": args,
        "env": env,
        "ports": [{"containerPort": MASTER_PORT, "name": "locust"}]
        if component == "master"
        else [],
        # No CPU limit: throttling would show up as generator lag, not as gateway latency.
        "resources": {
            "requests": {"cpu": f"{cpu_milli}m", "memory": f"{memory_mib}Mi"},
            "limits": {"memory": f"{memory_mib}Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }


def build_manifests(
    *,
    run: str,
    profile_text: str,
    target_urls: list[str],
    image: str,
    sizing: Sizing,
    shape: RunShape,
    issuer: str | None = None,
    audience: str | None = None,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Every object of one run, in creation order."""
    workers = sizing.workers
    common_env = {
        "LOADTEST_PROFILE": "/etc/loadtest/profile.yaml",
        "LOADTEST_TARGETS": ",".join(target_urls),
        "LOADTEST_JWT_SECRET_FILE": "/etc/loadtest/jwt/secret",
        "LOADTEST_JWT_ISSUER": issuer or "",
        "LOADTEST_JWT_AUDIENCE": audience or "",
        "LOADTEST_RUN_ID": run.replace("-", ""),
        "LOADTEST_OUT": "/tmp",
        "LOADTEST_WORKERS": str(workers),
        "LOADTEST_DURATION_S": "" if shape.duration_s is None else f"{shape.duration_s:g}",
        "LOADTEST_MEASURE_FROM_S": (
            "" if shape.measure_from_s is None else f"{shape.measure_from_s:g}"
        ),
    }
    master_env = {
        **common_env,
        "LOADTEST_RESULTS_CONFIGMAP": f"{run}-results",
        "LOADTEST_KUBE_CREDENTIALS": SA_DIR,
    }

    def env(values: dict[str, str]) -> list[dict[str, Any]]:
        pod = {
            "name": "LOADTEST_POD_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }
        return [*({"name": k, "value": v} for k, v in sorted(values.items())), pod]

    locustfile = ["-f", "loadtests/locustfile.py", "--skip-log-setup"]
    master_args = [
        *locustfile,
        "--master",
        "--headless",
        "--master-bind-host=0.0.0.0",
        f"--master-bind-port={MASTER_PORT}",
        f"--expect-workers={workers}",
        f"--expect-workers-max-wait={WORKERS_WAIT_S}",
        f"--users={shape.users}",
        f"--spawn-rate={shape.spawn_rate:g}",
        f"--run-time={int(shape.run_time_s + 0.999)}s",
        "--stop-timeout=1",
        "--csv=/tmp/locust",
        "--exit-code-on-error=0",
        "--only-summary",
    ]
    worker_args = [
        *locustfile,
        "--worker",
        f"--master-host={run}-master.{namespace}.svc",
        f"--master-port={MASTER_PORT}",
    ]
    deadline = int(shape.run_time_s + WORKERS_WAIT_S + 300)
    mounts: list[dict[str, Any]] = [
        {"name": "profile", "mountPath": "/etc/loadtest/profile.yaml", "subPath": "profile.yaml"},
        {"name": "jwt", "mountPath": "/etc/loadtest/jwt", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes = [
        {"name": "profile", "configMap": {"name": f"{run}-profile"}},
        {"name": "jwt", "secret": {"secretName": JWT_SECRET_NAME}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    pod_security = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    def job(component: str, count: int, template_spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta(f"{run}-{component}", component),
            "spec": {
                "completions": count,
                "parallelism": count,
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": 86400,
                "template": {
                    "metadata": {"labels": _labels(run, component)},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": pod_security,
                        "terminationGracePeriodSeconds": 10,
                        **template_spec,
                        "volumes": volumes,
                    },
                },
            },
        }

    def meta(name: str, component: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": _labels(run, component)}

    master_pod = {
        "serviceAccountName": f"{run}-master",
        "automountServiceAccountToken": True,
        "containers": [
            _container(
                "master",
                image=image,
                args=master_args,
                env=env(master_env),
                cpu_milli=sizing.master_cpu_milli,
                memory_mib=sizing.master_memory_mib,
                mounts=mounts,
            )
        ],
    }
    worker_pod = {
        "automountServiceAccountToken": False,  # workers never talk to the API
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": _labels(run, "worker")},
            }
        ],
        "containers": [
            _container(
                "worker",
                image=image,
                args=worker_args,
                env=env(common_env),
                cpu_milli=sizing.worker_cpu_milli,
                memory_mib=sizing.worker_memory_mib,
                mounts=mounts,
            )
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{run}-profile", "profile"),
            "data": {"profile.yaml": profile_text},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{run}-results", "results"),
            "data": {"phase": "pending"},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(f"{run}-master", "master"),
            "automountServiceAccountToken": False,  # only the master pod mounts it
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(f"{run}-master", "master"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [f"{run}-results"],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(f"{run}-master", "master"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{run}-master",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": f"{run}-master", "namespace": namespace}
            ],
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
        job("master", 1, master_pod),
        job("worker", workers, worker_pod),
    ]


def operator_role(namespace: str = NAMESPACE) -> dict[str, Any]:
    """The Role opsctl needs in the run's namespace (bind it to whoever runs opsctl)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "opsctl-loadtest", "namespace": namespace},
        "rules": OPERATOR_RULES,
    }


# ---- the Kubernetes side -----------------------------------------------------------------


def _create(api_client: Any, namespace: str, manifest: dict[str, Any]) -> None:
    from kubernetes.client import BatchV1Api, CoreV1Api, RbacAuthorizationV1Api

    core, batch, rbac = (
        CoreV1Api(api_client),
        BatchV1Api(api_client),
        RbacAuthorizationV1Api(api_client),
    )
    body: Any = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    create: dict[str, Callable[..., Any]] = {
        "ConfigMap": core.create_namespaced_config_map,
        "Service": core.create_namespaced_service,
        "ServiceAccount": core.create_namespaced_service_account,
        "Job": batch.create_namespaced_job,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
    }
    # Strict: the API server rejects unknown or duplicated fields instead of dropping them.
    create[manifest["kind"]](namespace, body, field_validation="Strict")


def apply_manifests(api_client: Any, namespace: str, manifests: list[dict[str, Any]]) -> list[str]:
    """Create the objects in ``namespace`` (strict field validation); returns kind/name of
    each. A refusal is a CheckFailed naming the object and the API server's reason."""
    from kubernetes.client.exceptions import ApiException

    created = []
    for manifest in manifests:
        name = f"{manifest['kind'].lower()}/{manifest['metadata']['name']}"
        try:
            _create(api_client, namespace, manifest)
        except ApiException as error:
            raise CheckFailed(
                f"the API server refused {name} in {namespace}: {error.status} {error.reason}",
                hint=_api_message(error),
            ) from None
        created.append(name)
    return created


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message"))
    except (TypeError, ValueError, AttributeError):
        return str(error.body)[:500]


def delete_run(api_client: Any, namespace: str, manifests: list[dict[str, Any]]) -> None:
    """Delete every object of the run (Jobs with their pods); missing ones are fine."""
    from kubernetes.client import BatchV1Api, CoreV1Api, RbacAuthorizationV1Api
    from kubernetes.client.exceptions import ApiException

    core, batch, rbac = (
        CoreV1Api(api_client),
        BatchV1Api(api_client),
        RbacAuthorizationV1Api(api_client),
    )
    delete: dict[str, Callable[..., Any]] = {
        "ConfigMap": core.delete_namespaced_config_map,
        "Service": core.delete_namespaced_service,
        "ServiceAccount": core.delete_namespaced_service_account,
        "Job": batch.delete_namespaced_job,
        "Role": rbac.delete_namespaced_role,
        "RoleBinding": rbac.delete_namespaced_role_binding,
    }
    for manifest in reversed(manifests):
        try:
            delete[manifest["kind"]](
                manifest["metadata"]["name"], namespace, propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                console.warn(
                    f"could not delete {manifest['kind']}/{manifest['metadata']['name']}: "
                    f"{error.status} {error.reason}"
                )


def pod_problems(pods: list[Any]) -> list[str]:
    """'<pod>: <what went wrong>' for every pod of the run that failed or cannot start."""
    problems = []
    for pod in pods:
        name, status = pod.metadata.name, pod.status
        phase = status.phase if status else None
        why: str | None = None
        if status is not None and status.reason == "Evicted":
            why = f"evicted ({status.message or 'no message'})"
        elif phase == "Failed":
            why = f"failed ({status.reason or _terminated(status) or 'no reason given'})"
        else:
            for container in (status.container_statuses or []) if status else []:
                state = container.state
                if state and state.waiting and state.waiting.reason in _BAD_WAITING:
                    why = f"{state.waiting.reason} ({state.waiting.message or ''})".strip()
                elif state and state.terminated and state.terminated.exit_code not in (0, None):
                    why = f"exited {state.terminated.exit_code} ({state.terminated.reason})"
        if why is None and phase == "Pending" and status is not None:
            for condition in status.conditions or []:
                unschedulable = condition.type == "PodScheduled" and condition.reason == (
                    "Unschedulable"
                )
                if unschedulable and condition.status == "False" and _older_than(pod, 60):
                    why = f"unschedulable ({condition.message})"
        if why is not None:
            problems.append(f"{name}: {why}")
    return problems


def _terminated(status: Any) -> str | None:
    for container in status.container_statuses or []:
        if container.state and container.state.terminated:
            term = container.state.terminated
            return f"exit {term.exit_code}, {term.reason}"
    return None


def _older_than(pod: Any, seconds: float) -> bool:
    created = pod.metadata.creation_timestamp
    return created is not None and time.time() - created.timestamp() > seconds


# ---- one run -------------------------------------------------------------------------------


@dataclass
class ClusterTarget:
    """Where a distributed run goes: the region's cluster and the gateway URLs inside it."""

    stack: str
    region: str
    kube_context: str
    namespace: str
    image: str
    urls: tuple[str, ...]
    gateways: int
    target: Target
    kubeconfig: Path | None = None
    api_client_factory: Callable[[], Any] | None = None  # tests: a client with other credentials

    @contextmanager
    def api_client(self) -> Iterator[Any]:
        if self.api_client_factory is not None:
            client = self.api_client_factory()
        else:
            from kubernetes import config

            client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig) if self.kubeconfig else None,
                context=self.kube_context,
            )
        try:
            yield client
        finally:
            client.close()


def cluster_target(
    infra_dir: Path,
    stack: str,
    region: str | None,
    *,
    target_urls: list[str] | None,
    namespace: str | None = None,
    kubeconfig: Path | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> ClusterTarget:
    from opsctl.loadtest.slo import StackSlos
    from opsctl.spec import load_stack

    spec = load_stack(infra_dir, stack)
    regions = {r.name: r for r in spec.regions}
    if region is not None and region not in regions:
        raise UserInputError(
            f"region '{region}' is not in stack '{stack}'", hint=f"regions: {', '.join(regions)}"
        )
    chosen = regions[region] if region else (spec.regions[0] if len(regions) == 1 else None)
    if chosen is None:
        raise UserInputError(
            "--on-cluster needs --region", hint=f"regions of '{stack}': {', '.join(regions)}"
        )
    urls = tuple(check_url(u) for raw in target_urls or [] for u in raw.split(",") if u) or (
        GATEWAY_URL_CONVENTION.format(region=chosen.name, environment=spec.environment),
    )
    gateways = chosen.gateway.replicas if not target_urls else len(urls)
    target = Target(
        urls=urls,
        jwt_secret_file=Path(f"/etc/loadtest/jwt/secret (Secret {JWT_SECRET_NAME})"),
        jwt_issuer=issuer,
        jwt_audience=audience,
        gateways=gateways,
        source=f"stack {stack}, region {chosen.name}, from its cluster ({chosen.kube_context})",
        slos=StackSlos(stack, spec.slos, spec.reconnect_budget.reconnects_per_second),
    )
    return ClusterTarget(
        stack=stack,
        region=chosen.name,
        kube_context=chosen.kube_context,
        namespace=namespace or NAMESPACE,
        image=loadtest_image(spec.images.gateway),
        urls=urls,
        gateways=gateways,
        target=target,
        kubeconfig=kubeconfig,
    )


@dataclass
class ClusterRun:
    """One distributed run: create, follow, collect, clean up."""

    target: ClusterTarget
    profile: Profile
    profile_file: Path
    sizing: Sizing
    shape: RunShape
    out_dir: Path
    keep: bool = False
    run: str = field(default_factory=lambda: f"lt-{uuid.uuid4().hex[:8]}")
    on_created: Callable[[str], None] | None = None  # tests: the run id once the objects exist
    timings: dict[str, float] = field(default_factory=dict)

    def manifests(self) -> list[dict[str, Any]]:
        return build_manifests(
            run=self.run,
            profile_text=self.profile_file.read_text(encoding="utf-8"),
            target_urls=list(self.target.urls),
            image=self.target.image,
            sizing=self.sizing,
            shape=self.shape,
            issuer=self.target.target.jwt_issuer,
            audience=self.target.target.jwt_audience,
            namespace=self.target.namespace,
        )

    def execute(self, progress: Progress | None = None) -> RunResult:
        manifests = self.manifests()
        namespace = self.target.namespace
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "manifests.json").write_text(json.dumps(manifests, indent=1))
        with self.target.api_client() as client:
            created: list[dict[str, Any]] = []
            try:
                for manifest in manifests:
                    apply_manifests(client, namespace, [manifest])
                    created.append(manifest)
                console.info(
                    f"run {self.run}: created {len(created)} objects in {namespace} "
                    f"({self.target.kube_context})"
                )
                if self.on_created is not None:
                    self.on_created(self.run)
                results = self._follow(client, progress)
                return self._collect(results)
            finally:
                if self.keep:
                    console.info(f"kept run {self.run} (label app.kubernetes.io/instance)")
                else:
                    delete_run(client, namespace, created)

    # -- following -----------------------------------------------------------------------

    def _pods(self, client: Any) -> list[Any]:
        from kubernetes.client import CoreV1Api

        selector = f"{_LABEL}/instance={self.run}"
        return list(
            CoreV1Api(client)
            .list_namespaced_pod(self.target.namespace, label_selector=selector)
            .items
        )

    def _results(self, client: Any) -> dict[str, Any]:
        from kubernetes.client import CoreV1Api

        cm = CoreV1Api(client).read_namespaced_config_map(
            f"{self.run}-results", self.target.namespace
        )
        return {"data": cm.data or {}, "binaryData": cm.binary_data or {}}

    def _follow(self, client: Any, progress: Progress | None) -> dict[str, Any]:
        started = time.monotonic()
        expected = self.sizing.workers
        deadline = started + WORKERS_WAIT_S + self.shape.run_time_s + RESULTS_GRACE_S + 60
        all_seen_at: float | None = None
        missing_since: dict[str, float] = {}
        master_ended_at: float | None = None
        while True:
            results = self._results(client)
            data = results["data"]
            if data.get("phase") == "done" or "master.json.gz" in results["binaryData"]:
                self.timings["done_seen"] = time.monotonic()
                return results
            pods = self._pods(client)
            problems = pod_problems(pods)
            report = json.loads(data.get("progress", "{}"))
            workers = report.get("workers", {})
            now = time.monotonic()
            missing_since = {p: missing_since.get(p, now) for p in workers.get("missing", [])}
            problems += [
                f"{pod}: the master lost it (no heartbeat for {now - since + 3:.0f} s)"
                for pod, since in sorted(missing_since.items())
                if now - since >= MISSING_GRACE_S
            ]
            if problems:
                raise CheckFailed(
                    f"run {self.run}: {len(problems)} pod(s) failed: "
                    + "; ".join(sorted(set(problems))),
                    hint=self._log_hint(client, problems),
                )
            connected = int(workers.get("connected", 0))
            if connected >= expected and all_seen_at is None:
                all_seen_at = time.monotonic()
            if all_seen_at is None and time.monotonic() - started > WORKERS_WAIT_S:
                seen = set(workers.get("seen", []))
                absent = sorted(
                    p.metadata.name
                    for p in pods
                    if p.metadata.labels.get(f"{_LABEL}/component") == "worker"
                    and p.metadata.name not in seen
                )
                raise CheckFailed(
                    f"run {self.run}: the master saw {connected} of {expected} workers within "
                    f"{WORKERS_WAIT_S} s; never seen: {', '.join(absent) or 'unknown pods'}"
                )
            master = [p for p in pods if p.metadata.labels.get(f"{_LABEL}/component") == "master"]
            if master and master[0].status and master[0].status.phase == "Succeeded":
                master_ended_at = master_ended_at or time.monotonic()
                if time.monotonic() - master_ended_at > RESULTS_GRACE_S:
                    raise CheckFailed(
                        f"run {self.run}: the master pod {master[0].metadata.name} ended without "
                        "publishing results",
                        hint=self._log_hint(client, [f"{master[0].metadata.name}: ended"]),
                    )
            if time.monotonic() > deadline:
                raise CheckFailed(f"run {self.run}: no results after {deadline - started:.0f} s")
            line = report.get("line") or {}
            if progress is not None and (line or workers):
                row = {
                    **line,
                    "workers_connected": connected,
                    "workers_expected": expected,
                }
                progress(row, self.shape.run_time_s)
            time.sleep(POLL_S)

    def _log_hint(self, client: Any, problems: list[str]) -> str | None:
        """The last lines of the first failed pod's log, if opsctl may read it."""
        from kubernetes.client import CoreV1Api
        from kubernetes.client.exceptions import ApiException

        pod = problems[0].split(":", 1)[0]
        try:
            log = CoreV1Api(client).read_namespaced_pod_log(
                pod, self.target.namespace, tail_lines=15
            )
        except ApiException:
            return f"kubectl -n {self.target.namespace} logs {pod}"
        return f"log of {pod}:\n{log}" if log else None

    # -- collecting ----------------------------------------------------------------------

    def _collect(self, results: dict[str, Any]) -> RunResult:
        from loadtests.kube import unpack

        begun = time.monotonic()
        binary = results["binaryData"]
        try:
            master = unpack(binary["master.json.gz"])
            timeline = unpack(binary["timeline.jsonl.gz"])
        except (KeyError, ValueError, OSError) as error:
            raise CheckFailed(
                f"run {self.run}: the published results are unreadable: {error}"
            ) from None
        (self.out_dir / "master.json").write_bytes(master)
        (self.out_dir / "timeline.jsonl").write_bytes(timeline)
        options = RunOptions(
            profile=self.profile,
            profile_file=self.profile_file,
            target=self.target.target,
            workers=self.sizing.workers,
            out_dir=self.out_dir,
        )
        summary = collect(
            self.out_dir,
            options,
            users=self.shape.users,
            run_time=self.shape.run_time_s,
            run_id=self.run,
        )
        # A worker lost for good fails the run while it is followed (pod status, heartbeats);
        # one the master missed only in its last seconds is recorded, not judged.
        workers = json.loads(master).get("workers", {})
        summary["on_cluster"] = {
            "run": self.run,
            "context": self.target.kube_context,
            "namespace": self.target.namespace,
            "image": self.target.image,
            "sizing": self.sizing.as_dict(),
            "workers_seen": workers.get("seen", []),
            "workers_missing_at_end": workers.get("missing", []),
            "timeline_step": int(results["data"].get("timeline_step", "1")),
            "collection": {
                "bytes": sum(len(v) for v in binary.values()),
                "seconds": round(time.monotonic() - begun, 3),
            },
        }
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return RunResult(out_dir=self.out_dir, summary=summary)


def new_cluster_run(
    target: ClusterTarget,
    profile: Profile,
    profile_file: Path,
    sizing: Sizing,
    *,
    out_dir: Path | None = None,
    keep: bool = False,
    shape: RunShape | None = None,
) -> ClusterRun:
    return ClusterRun(
        target=target,
        profile=profile,
        profile_file=profile_file,
        sizing=sizing,
        shape=shape or RunShape.of(profile),
        out_dir=out_dir or new_run_dir(profile=f"{profile.name}-cluster"),
        keep=keep,
    )


def cluster_steps(
    target: ClusterTarget,
    profile: Profile,
    profile_file: Path,
    *,
    size: Callable[[int], Sizing],
    keep: bool = False,
) -> Callable[[int, float, float, Path], dict[str, Any]]:
    """Capacity steps as distributed runs, each sized for its own users."""
    from opsctl.loadtest.runner import run_shape

    def run(users: int, duration_s: float, measure_from_s: float, out_dir: Path) -> dict[str, Any]:
        count, rate, run_time = run_shape(profile, users, duration_s)
        shape = RunShape(count, rate, run_time, duration_s, measure_from_s)
        sizing = size(users)
        console.info(f"  sizing: {sizing.describe()}")
        cluster_run = new_cluster_run(
            target, profile, profile_file, sizing, out_dir=out_dir, keep=keep, shape=shape
        )
        return cluster_run.execute().summary

    return run
