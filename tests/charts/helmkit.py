"""Helpers for testing charts with the pinned helm against a real (kwok) cluster.

Not a test module: the chart tests and benchmarks/chart_install.py share these.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import watch
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from opsctl.cluster._tools import find_tools
from opsctl.paths import REPO_ROOT
from tests.support import wait_for

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1Pod

CHART = REPO_ROOT / "charts" / "im-gateway"
SCENARIOS = tuple(
    sorted(path.name.removesuffix("-values.yaml") for path in CHART.glob("ci/*-values.yaml"))
)
RELEASE = "im-gateway"
FIELD_MANAGER = "chart-tests"
RESTRICTED = "pod-security.kubernetes.io/enforce"
DEPLOY_TIMEOUT = "180s"  # helm install/upgrade --wait


def scenario_file(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def kube_version() -> str:
    """The pinned Kubernetes version the control plane runs (tools/go/versions.env)."""
    return find_tools(("kube-apiserver",)).versions["kube-apiserver"]


@dataclass(frozen=True)
class HelmResult:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class HelmFailed(AssertionError):
    def __init__(self, result: HelmResult) -> None:
        super().__init__(
            f"helm {' '.join(result.args)} exited {result.returncode}:\n{result.output.strip()}"
        )
        self.result = result


@dataclass(frozen=True)
class Helm:
    """The pinned helm binary with private state dirs, optionally bound to one cluster."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None
    context: str | None = None
    overlays: tuple[Path, ...] = ()  # values files deploy() adds after the caller's

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("HELM_")}
        env.pop("KUBECONFIG", None)
        # Never read or write the developer's ~/.config/helm or ~/.cache/helm.
        env.update(
            {
                "HELM_CACHE_HOME": str(self.home / "cache"),
                "HELM_CONFIG_HOME": str(self.home / "config"),
                "HELM_DATA_HOME": str(self.home / "data"),
                "NO_COLOR": "1",
            }
        )
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 240.0) -> HelmResult:
        cluster = []
        if self.kubeconfig is not None:
            cluster += ["--kubeconfig", str(self.kubeconfig)]
        if self.context is not None:
            cluster += ["--kube-context", self.context]
        done = subprocess.run(
            [str(self.binary), *args, *cluster],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        result = HelmResult(args, done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise HelmFailed(result)
        return result

    def deploy(
        self,
        verb: str,
        namespace: str,
        values: Iterable[Path],
        sets: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> HelmResult:
        """``helm install`` or ``upgrade`` of the chart as RELEASE, waiting until it is ready."""
        target = (RELEASE, str(CHART), "--namespace", namespace)
        wait = ("--wait", "--timeout", DEPLOY_TIMEOUT)
        files = [*values, *self.overlays]
        return self.run(verb, *target, *wait, *value_args(files, sets), check=check)

    def render(
        self,
        *,
        values: Iterable[Path] = (),
        sets: Mapping[str, str] | None = None,
        namespace: str = "default",
        extra: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """``helm template`` of the chart (hooks included) as parsed objects."""
        args = ["template", RELEASE, str(CHART), "--namespace", namespace]
        args += ["--kube-version", kube_version(), *value_args(values, sets), *extra]
        result = Helm(self.binary, self.home).run(*args)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


REQUIRED_VALUES = Path(__file__).with_name("required-values.yaml")


def value_args(values: Iterable[Path] = (), sets: Mapping[str, str] | None = None) -> list[str]:
    args: list[str] = ["--values", str(REQUIRED_VALUES)]  # first: later files and --set win
    for path in values:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def find(objects: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def component_name(component: str) -> str:
    return f"{RELEASE}-{component}"


def selector(component: str) -> str:
    return (
        f"app.kubernetes.io/name=im-gateway,app.kubernetes.io/instance={RELEASE},"
        f"app.kubernetes.io/component={component}"
    )


# -- server-side dry run ---------------------------------------------------------------------


@dataclass(frozen=True)
class DryRunOutcome:
    kind: str
    name: str
    accepted: bool
    status: int | None = None
    message: str = ""


def server_dry_run(
    api_client: ApiClient, objects: Iterable[dict[str, Any]], namespace: str
) -> list[DryRunOutcome]:
    """Server-side apply every object with dryRun=All and strict field validation.

    The API server checks each against its OpenAPI schema (built-in kinds of the pinned version,
    CRD schemas for the rest) and runs admission (Pod Security included); nothing is stored.
    """
    dynamic = DynamicClient(api_client)
    outcomes = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=kind)
        try:
            resource.server_side_apply(
                body=copy.deepcopy(obj),
                namespace=namespace if resource.namespaced else None,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All",
                query_params=[("fieldValidation", "Strict")],
            )
        except DynamicApiError as error:
            outcomes.append(DryRunOutcome(kind, name, False, error.status, _message(error.body)))
        else:
            outcomes.append(DryRunOutcome(kind, name, True))
    return outcomes


def pod_from_template(owner: dict[str, Any]) -> dict[str, Any]:
    """A bare Pod from a workload's pod template, to dry-run create through Pod admission.

    It runs as the namespace's `default` account: a dry run stores no ServiceAccount, and the
    ServiceAccount admission plugin refuses pods naming one that does not exist.
    """
    template = copy.deepcopy(owner["spec"]["template"])
    template["spec"]["serviceAccountName"] = "default"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{owner['metadata']['name']}-probe", **template["metadata"]},
        "spec": template["spec"],
    }


def _message(body: Any) -> str:
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(body)


# -- waiting on the cluster --------------------------------------------------------------------


def deployment_rolled_out(deployment: Any) -> bool:
    """What `kubectl rollout status` checks, plus every pod ready and no old pod left."""
    spec, status = deployment.spec, deployment.status
    wanted = spec.replicas if spec.replicas is not None else 1
    return bool(
        status is not None
        and (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
        and (status.updated_replicas or 0) == wanted
        and (status.ready_replicas or 0) == wanted
        and (status.available_replicas or 0) == wanted
        and (status.replicas or 0) == wanted
    )


def wait_rolled_out(
    api_client: ApiClient,
    namespace: str,
    name: str,
    *,
    replicas: int | None = None,
    timeout: float = 90.0,
) -> Any:

    apps = AppsV1Api(api_client)

    def probe() -> Any:
        deployment = apps.read_namespaced_deployment(name, namespace)
        if replicas is not None and deployment.spec.replicas != replicas:
            return None
        return deployment if deployment_rolled_out(deployment) else None

    return wait_for(f"deployment {namespace}/{name} to roll out", probe, timeout=timeout)


# -- watching pods during a rollout -------------------------------------------------------------


@dataclass
class PodCensus:
    """Pod counts after every change the API server reported, in order."""

    samples: list[tuple[int, int]] = field(default_factory=list)  # (live, available)
    pods: dict[str, Any] = field(default_factory=dict)  # uid -> latest V1Pod
    history: list[Any] = field(default_factory=list)  # every pod state seen, deleted ones too
    error: BaseException | None = None

    @property
    def max_live(self) -> int:
        return max(live for live, _ in self.samples)

    @property
    def min_available(self) -> int:
        return min(available for _, available in self.samples)

    def record(self) -> None:
        live = [pod for pod in self.pods.values() if counts_as_live(pod)]
        available = [pod for pod in live if pod_ready(pod)]
        self.samples.append((len(live), len(available)))


def counts_as_live(pod: V1Pod) -> bool:
    """Counted the way the Deployment controller counts: not terminating, not finished."""
    return pod.metadata.deletion_timestamp is None and pod.status.phase not in (
        "Succeeded",
        "Failed",
    )


def pod_ready(pod: V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def live_pods(api_client: ApiClient, namespace: str, component: str) -> list[V1Pod]:
    """The component's pods that count as live (see :func:`counts_as_live`)."""
    core = CoreV1Api(api_client)
    pods = core.list_namespaced_pod(namespace, label_selector=selector(component)).items
    return [pod for pod in pods if counts_as_live(pod)]


@contextmanager
def pod_census(api_client: ApiClient, namespace: str, label_selector: str) -> Iterator[PodCensus]:
    """Watch the selected pods from a consistent snapshot until the block ends.

    A watch (not polling) sees every intermediate state, so short-lived peaks are not missed.
    """

    core = CoreV1Api(api_client)
    snapshot = core.list_namespaced_pod(namespace, label_selector=label_selector)
    census = PodCensus()
    for pod in snapshot.items:
        census.pods[pod.metadata.uid] = pod
    census.record()
    stop = threading.Event()

    def follow() -> None:
        # Short server-side watch windows, resumed from the last version seen, so the thread
        # notices `stop` within a second instead of blocking on a quiet stream.
        version = snapshot.metadata.resource_version
        try:
            while not stop.is_set():
                for event in watch.Watch().stream(
                    core.list_namespaced_pod,
                    namespace,
                    label_selector=label_selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=1,
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        continue  # a bookmark: only the version moved
                    census.history.append(pod)
                    if event["type"] == "DELETED":
                        census.pods.pop(pod.metadata.uid, None)
                    else:
                        census.pods[pod.metadata.uid] = pod
                    census.record()
        except BaseException as error:  # surfaced to the test below
            census.error = error

    thread = threading.Thread(target=follow, name="pod-census", daemon=True)
    thread.start()
    try:
        yield census
    finally:
        # Let in-flight events arrive, then stop the watch.
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=10.0)
    if census.error is not None:
        raise AssertionError(f"pod watch failed: {census.error!r}")
