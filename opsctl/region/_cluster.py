"""The regions of a stack on their Kubernetes clusters (each region's ``kubeContext``), for the
same map moves as locally (docs/multi-region.md 7.5).

**The shard map** is reached at the Cassandra contact points the operator gives
(``--cassandra [REGION=]HOST:PORT``), logging in with the role whose login Secret the chart's
pods use (``im-cassandra-dispatcher``, read through the Kubernetes API of a region other than
the one being evacuated when it can) and verifying the nodes with ``--cassandra-ca``. Held
records are produced again into a region's Kafka at ``--kafka REGION=BOOTSTRAP`` (default:
the region's external bootstrap name, ``opsctl.stack._names.kafka_external_bootstrap``).

**What "drain" means in a cluster.** The region's gateway Deployment is scaled down in steps,
``_plan.pods_per_step`` pods at a time (what drains together within the reconnect budget,
capped by the PDB's maxUnavailable); each removed pod gets SIGTERM and drains its sessions
over its window, as in a rolling update. A step ends when its pods are gone; the next begins
no sooner than its sessions / budget after it (``_plan.drain_pause_s``). Before the first step
the Deployment is annotated with what it had (``ANNOTATION``: its replicas and its HPA's
bounds), and the HPA is pinned to each step's count (an HPA raises a Deployment below its
minReplicas within one sync; one at 0 replicas is disabled): a crashed run resumes from the
replicas it finds, and ``restore`` puts back exactly what the annotation says, waits until the
pods are ready, then removes it. The dispatchers' liveness is their Deployment's ready
replicas (and, as everywhere, their reports in the map).

Every API call is in ``API_VERBS`` (the docs and ``infra/rbac/opsctl-region.yaml`` list them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.errors import CheckFailed, Forbidden, KubeError, UserInputError
from opsctl.poll import WaitTimeout, wait_until
from opsctl.region._plan import (
    drain_pause_s,
    gateway_rate,
    pdb_max_unavailable,
    pods_per_step,
    scale_steps,
)
from opsctl.region._regions import GatewayDrain, GatewayReport, Progress
from opsctl.region._shards import Backends
from opsctl.rollout._kube import KubeApi, RestKubeApi
from opsctl.spec import StackSpec
from opsctl.stack import _names as n

RBAC_MANIFEST = "infra/rbac/opsctl-region.yaml"
# On the gateway Deployment while its region is drained: what to restore (JSON).
ANNOTATION = "opsctl.io/region-drain"
READY_TIMEOUT_S = 300.0  # for restored gateway pods to become ready
GONE_MARGIN_S = 30.0  # past the pods' termination grace period, for a step's pods to be gone
POLL_S = 0.2

# Every call this module makes: (verb, resource, resourceNames), for docs and the Role.
# "{release}" is the chart release (im-gateway), "{secret}" the Cassandra login Secret.
API_VERBS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("get", "deployments", ("{release}-gateway", "{release}-dispatcher")),
    ("patch", "deployments", ("{release}-gateway",)),
    ("get", "horizontalpodautoscalers", ("{release}-gateway",)),
    ("patch", "horizontalpodautoscalers", ("{release}-gateway",)),
    ("get", "poddisruptionbudgets", ("{release}-gateway",)),
    ("list", "pods", ()),
    ("get", "secrets", ("{secret}",)),
)

_MORE_RESOURCES = {
    "horizontalpodautoscalers": "/apis/autoscaling/v2",
    "poddisruptionbudgets": "/apis/policy/v1",
    "secrets": "/api/v1",
}


class RegionKubeApi(RestKubeApi):
    """The rollout's API client, with the kinds a region drain reads too, and the region
    Role named when a call is forbidden."""

    def _path(self, kind: str, namespace: str, name: str | None = None) -> str:
        if kind not in _MORE_RESOURCES:
            return super()._path(kind, namespace, name)
        path = f"{_MORE_RESOURCES[kind]}/namespaces/{namespace}/{kind}"
        return f"{path}/{name}" if name else path

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            return super()._request(method, path, **kwargs)
        except Forbidden as error:
            raise Forbidden(
                error.message,
                status=403,
                hint=f"bind the Role in {RBAC_MANIFEST} to the identity opsctl runs as",
            ) from None


def parse_endpoints(entries: list[str], regions: list[str], what: str) -> dict[str, list[str]]:
    """``[REGION=]HOST:PORT[,HOST:PORT]`` entries: region -> endpoints; a bare entry is every
    region's (a region's own entry wins). Exit 2 naming the flag for an unknown region or an
    endpoint without a port."""
    bare: list[str] = []
    by_region: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, rest = entry.partition("=")
        if sep and name not in regions:
            raise UserInputError(
                f"{what} {entry}: unknown region '{name}'", hint=f"regions: {', '.join(regions)}"
            )
        endpoints = [e.strip() for e in (rest if sep else entry).split(",") if e.strip()]
        for endpoint in endpoints:
            host, colon, port = endpoint.rpartition(":")
            if not colon or not host or not port.isdigit():
                raise UserInputError(f"{what} {entry}: '{endpoint}' is not HOST:PORT")
        if sep:
            by_region[name] = endpoints
        else:
            bare.extend(endpoints)
    return {r: by_region.get(r, bare) for r in regions if by_region.get(r, bare)}


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


@dataclass
class ClusterRegions:
    """The stack's regions through their clusters: ``kube(context)`` gives a region's API."""

    spec: StackSpec
    cassandra: Mapping[str, list[str]]  # region -> contact points HOST:PORT
    kube: Callable[[str], KubeApi]
    namespace: str = n.APP_NAMESPACE
    release: str = n.GATEWAY_RELEASE
    kafka: Mapping[str, str] = field(default_factory=dict)  # region -> bootstrap (override)
    cassandra_ca: Path | None = None
    cassandra_secret: str = field(
        default_factory=lambda: n.cassandra_role_secret(n.CASSANDRA_DISPATCHER_ROLE)
    )
    sessions_per_pod: int | None = None  # default: the spec's connectionsPerPod
    drain_window_s: float | None = None  # default: the chart's, as the builders compute it
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _apis: dict[str, KubeApi] = field(default_factory=dict, init=False)

    @classmethod
    def of(
        cls,
        spec: StackSpec,
        *,
        kubeconfig: Path | None,
        cassandra: list[str],
        kafka: list[str] | None = None,
        **options: Any,
    ) -> ClusterRegions:
        """Exit 2 (nothing reached yet) for a one-region stack or bad endpoints."""
        names = [r.name for r in spec.regions]
        if len(names) < 2:
            raise UserInputError(
                f"stack '{spec.environment}' has one region: there is nowhere to move its "
                "conversations"
            )
        contacts = parse_endpoints(cassandra, names, "--cassandra")
        if not contacts:
            raise UserInputError(
                "--cassandra: where is the shard map? give a Cassandra contact point "
                "([REGION=]HOST:PORT, repeatable) reachable from here",
                hint="docs/multi-region.md 7.5: one per region's DC, so a region that is gone "
                "is tried last",
            )
        given = parse_endpoints(kafka or [], names, "--kafka")
        bootstraps = {region: ",".join(endpoints) for region, endpoints in given.items()}

        def make(context: str) -> KubeApi:
            return RegionKubeApi(context=context, kubeconfig=kubeconfig)

        return cls(spec, contacts, make, kafka=bootstraps, **options)

    # -- the interface -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.spec.regions]

    def backends(self, prefer_not: str | None = None) -> Backends:
        from gateway.config import Config
        from gateway.store import CassandraAuth

        order = sorted(self.names, key=lambda r: r == prefer_not)
        hosts: list[tuple[str, int]] = []
        for region in order:
            for endpoint in self.cassandra.get(region, []):
                if _host_port(endpoint) not in hosts:
                    hosts.append(_host_port(endpoint))
        username, password = self._login(order)
        defaults = Config.model_fields
        return Backends(
            cassandra_hosts=hosts,
            control_keyspace=n.CASSANDRA_CONTROL_KEYSPACE,
            keyspace=n.CASSANDRA_KEYSPACE,
            bucket_s=int(defaults["cassandra_bucket_s"].default),
            kafka={r: self.kafka.get(r) or self._external_kafka(r) for r in self.names},
            topic=n.MESSAGE_TOPIC,
            cassandra_auth=CassandraAuth(
                username, password, str(self.cassandra_ca) if self.cassandra_ca else None
            ),
        )

    def dispatchers_down(self, region: str) -> str | None:
        name = f"{self.release}-dispatcher"
        api = self._api(region)
        try:
            found = api.get("deployments", self.namespace, name)
        except KubeError as error:
            return error.message
        if found is None:
            return f"{api.context}: no Deployment {self.namespace}/{name}"
        ready = int(found.get("status", {}).get("readyReplicas") or 0)
        if ready == 0:
            wanted = found.get("spec", {}).get("replicas")
            return f"{api.context}: {self.namespace}/{name} has 0 of {wanted} replicas ready"
        return None

    def unhealthy(self, region: str) -> list[str]:
        api = self._api(region)
        bad = []
        try:
            for component in ("gateway", "dispatcher"):
                name = f"{self.release}-{component}"
                found = api.get("deployments", self.namespace, name)
                if found is None:
                    bad.append(f"{region}/{name}: missing")
                    continue
                wanted = int(found.get("spec", {}).get("replicas") or 0)
                ready = int(found.get("status", {}).get("readyReplicas") or 0)
                if ready < wanted:
                    bad.append(f"{region}/{name}: {ready}/{wanted} ready")
        except KubeError as error:
            return [f"{region}: {error.message}"]
        return bad

    def serving(self, region: str) -> list[str]:
        try:
            return sorted(p["metadata"]["name"] for p in self._gateway_pods(region))
        except KubeError as error:
            return [f"unknown ({error.message})"]

    def _gateway(self, region: str) -> tuple[Any, str, str, dict[str, Any], int, Any]:
        """The region's gateway Deployment: (api, name, where, the object, its replicas, the
        drain record it carries)."""
        api = self._api(region)
        name = f"{self.release}-gateway"
        deployment = self._deployment(api, name)
        replicas = int(deployment["spec"].get("replicas") or 0)
        where = f"{region}/{self.namespace}/{name}"
        return api, name, where, deployment, replicas, _record(deployment)

    def drain_gateways(self, region: str, budget_per_s: float, progress: Progress) -> GatewayReport:
        report = GatewayReport()
        api, name, where, deployment, replicas, record = self._gateway(region)
        hpa = api.get("horizontalpodautoscalers", self.namespace, name)
        if record is None:
            if replicas == 0:
                report.steps.append(GatewayDrain(where, 0, 0.0, None, "already stopped"))
                return report
            record = {"replicas": replicas}
            if hpa is not None:
                spec = hpa.get("spec", {})
                record["hpa"] = {
                    "minReplicas": int(spec.get("minReplicas") or 1),
                    "maxReplicas": int(spec["maxReplicas"]),
                }
            # Written before any change: a crash from here on leaves what to restore.
            api.patch(
                "deployments",
                self.namespace,
                name,
                {"metadata": {"annotations": {ANNOTATION: json.dumps(record)}}},
                "merge",
            )
            progress.note(f"recorded {where}'s {replicas} replicas in {ANNOTATION}")
        if replicas == 0:
            report.steps.append(GatewayDrain(where, 0, 0.0, None, "already stopped"))
            return report
        sessions = self._sessions_per_pod(region)
        window = self._window(region)
        pdb = api.get("poddisruptionbudgets", self.namespace, name)
        limit = pdb_max_unavailable(pdb.get("spec") if pdb else None, int(record["replicas"]))
        step = pods_per_step(budget_per_s, window, sessions, limit)
        if gateway_rate(sessions, window) > budget_per_s:
            report.warnings.append(
                f"{where}: {sessions} sessions per pod over its {window:.0f} s drain window is "
                f"{gateway_rate(sessions, window):.0f} reconnects/s, above the budget of "
                f"{budget_per_s:.0f}/s (one pod at a time; the pod paces by its window)"
            )
        grace = float(
            deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds") or 30
        )
        first: float | None = None
        current = replicas
        for target in scale_steps(replicas, step):
            moving = (current - target) * sessions
            progress.step(
                f"draining {where}: {current} -> {target} pods, about {moving} sessions at "
                f"{budget_per_s:.0f} reconnects/s"
            )
            began = self.clock()
            first = began if first is None else first
            if hpa is not None:  # pinned, or it raises the Deployment back to its minimum
                bounds = {"minReplicas": max(1, target), "maxReplicas": max(1, target)}
                api.patch(
                    "horizontalpodautoscalers", self.namespace, name, {"spec": bounds}, "merge"
                )
            api.patch("deployments", self.namespace, name, {"spec": {"replicas": target}}, "merge")
            self._wait_pods(region, where, target, grace + GONE_MARGIN_S)
            took = self.clock() - began
            pause = drain_pause_s(moving, budget_per_s, took)
            if pause > 0:
                progress.note(f"pausing {pause:.1f} s for the reconnect budget")
                self.sleep(pause)
            spent = self.clock() - began
            report.steps.append(
                GatewayDrain(
                    where,
                    moving,
                    round(took, 2),
                    round(moving / spent, 1) if spent > 0 else None,
                    f"scaled {current}->{target}",
                    at_s=round(began - first, 2),
                )
            )
            current = target
        return report

    def start_gateways(self, region: str, progress: Progress) -> GatewayReport:
        report = GatewayReport()
        api, name, where, _, replicas, record = self._gateway(region)
        if record is None:
            if replicas > 0:
                report.steps.append(GatewayDrain(where, None, 0.0, None, "already running"))
                return report
            target = self.spec.region(region).gateway.replicas
            record = {"replicas": target}
            report.warnings.append(
                f"{where} has 0 replicas and no {ANNOTATION}: started with the spec's "
                f"{target} (gateway.replicas)"
            )
        target = int(record["replicas"])
        progress.step(f"starting {where}: {replicas} -> {target} pods")
        began = self.clock()
        if record.get("hpa") is not None:
            api.patch(
                "horizontalpodautoscalers", self.namespace, name, {"spec": record["hpa"]}, "merge"
            )
        api.patch("deployments", self.namespace, name, {"spec": {"replicas": target}}, "merge")
        self._wait_ready(api, name, where, target)
        # Only now: a crash before this line leaves the record, and a re-run restores again.
        api.patch(
            "deployments",
            self.namespace,
            name,
            {"metadata": {"annotations": {ANNOTATION: None}}},
            "merge",
        )
        took = round(self.clock() - began, 2)
        report.steps.append(GatewayDrain(where, None, took, None, f"started {replicas}->{target}"))
        return report

    def close(self) -> None:
        for api in self._apis.values():
            close = getattr(api, "close", None)
            if close is not None:
                close()
        self._apis.clear()

    # -- helpers -----------------------------------------------------------------------------

    def _api(self, region: str) -> KubeApi:
        context = self.spec.region(region).kube_context
        if context not in self._apis:
            self._apis[context] = self.kube(context)
        return self._apis[context]

    def _deployment(self, api: KubeApi, name: str) -> dict[str, Any]:
        found = api.get("deployments", self.namespace, name)
        if found is None:
            raise CheckFailed(
                f"{api.context}: no Deployment {self.namespace}/{name}",
                hint="pass the im-gateway release's namespace (--namespace) and name (--release)",
            )
        return found

    def _gateway_pods(self, region: str) -> list[dict[str, Any]]:
        """The gateway Deployment's own pods (terminating ones included: they still hold
        sessions), not a canary's that shares its labels."""
        api = self._api(region)
        name = f"{self.release}-gateway"
        deployment = self._deployment(api, name)
        labels = deployment["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = api.list("pods", self.namespace, selector)
        return [pod for pod in pods if _owned_by(pod, name)]

    def _wait_pods(self, region: str, where: str, target: int, timeout: float) -> None:
        try:
            wait_until(
                f"{where} down to {target} pods",
                lambda: len(self._gateway_pods(region)) <= target,
                timeout=timeout,
                interval=POLL_S,
            )
        except WaitTimeout:
            left = len(self._gateway_pods(region))
            raise CheckFailed(
                f"{where}: {left} pods still there {timeout:.0f} s after scaling to {target}",
                hint="see why they do not terminate; re-run to continue",
            ) from None

    def _wait_ready(self, api: KubeApi, name: str, where: str, target: int) -> None:
        def ready() -> bool:
            found = self._deployment(api, name)
            status = found.get("status", {})
            return int(status.get("readyReplicas") or 0) >= target

        try:
            wait_until(f"{where} ready", ready, timeout=READY_TIMEOUT_S, interval=POLL_S)
        except WaitTimeout:
            raise CheckFailed(
                f"{where}: not {target} ready pods within {READY_TIMEOUT_S:.0f} s",
                hint="see why the pods are not ready; re-run restore to continue",
            ) from None

    def _sessions_per_pod(self, region: str) -> int:
        if self.sessions_per_pod is not None:
            return self.sessions_per_pod
        return self.spec.region(region).gateway.connections_per_pod

    def _window(self, region: str) -> float:
        if self.drain_window_s is not None:
            return self.drain_window_s
        return float(n.drain_window_seconds(self.spec, self.spec.region(region)))

    def _external_kafka(self, region: str) -> str:
        return n.kafka_external_bootstrap(self.spec, self.spec.region(region))

    def _login(self, order: list[str]) -> tuple[str | None, str | None]:
        """The role's login from its Secret, read in the first region that answers (the one
        being evacuated last); no Secret anywhere means no login (a cluster without auth)."""
        import base64

        errors = []
        for region in order:
            api = self._api(region)
            try:
                found = api.get("secrets", self.namespace, self.cassandra_secret)
            except KubeError as error:
                if isinstance(error, Forbidden):
                    raise
                errors.append(error.message)
                continue
            if found is None:
                continue
            data = found.get("data") or {}
            try:
                return (
                    base64.b64decode(data[n.USERNAME_KEY]).decode(),
                    base64.b64decode(data[n.PASSWORD_KEY]).decode(),
                )
            except (KeyError, ValueError) as error:
                raise CheckFailed(
                    f"{api.context}: Secret {self.namespace}/{self.cassandra_secret} has no "
                    f"usable {n.USERNAME_KEY}/{n.PASSWORD_KEY} ({error})"
                ) from None
        if errors and len(errors) == len(order):
            raise CheckFailed(f"no region's API server answered: {'; '.join(errors)}")
        return None, None


def _record(deployment: Mapping[str, Any]) -> dict[str, Any] | None:
    text = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("replicas"), int):
        name = deployment.get("metadata", {}).get("name")
        raise CheckFailed(
            f"Deployment {name}: annotation {ANNOTATION} is not what opsctl wrote: {text!r}",
            hint='set it to {"replicas": N} with the replicas to restore, then re-run',
        )
    return record


def _owned_by(pod: Mapping[str, Any], deployment: str) -> bool:
    """Owned by a ReplicaSet of ``deployment`` (named <deployment>-<pod-template-hash>)."""
    labels = pod.get("metadata", {}).get("labels") or {}
    owners = pod.get("metadata", {}).get("ownerReferences") or []
    wanted = f"{deployment}-{labels.get('pod-template-hash', '')}"
    return any(o.get("kind") == "ReplicaSet" and o.get("name") == wanted for o in owners)
