"""Can this machine generate a profile's load? Checks against opsctl/hostlimits (loadgen_host),
the same numbers the Ansible loadgen role applies."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.errors import CheckFailed
from opsctl.hostlimits import PORT_RANGE_SYSCTL, load_limits
from opsctl.loadtest.profiles import Profile
from opsctl.loadtest.sizing import Sizing

if TYPE_CHECKING:
    from rich.console import Console

_PROC_SYS = Path("/proc/sys")
_FD_HEADROOM = 1024  # runtime, logs, Locust's own sockets


@dataclass(frozen=True)
class HostCheck:
    name: str
    needed: str
    actual: str
    ok: bool
    fix: str


@dataclass(frozen=True)
class PreflightReport:
    profile: str
    connections: int
    checks: tuple[HostCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "connections": self.connections,
            "ok": self.ok,
            "checks": [asdict(check) for check in self.checks],
        }


def read_sysctl(key: str, proc_sys: Path = _PROC_SYS) -> str | None:
    try:
        return (proc_sys / key.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_host(
    profile: Profile,
    *,
    workers: int = 1,
    proc_sys: Path = _PROC_SYS,
    nofile: int | None = None,
    memory_bytes: int | None = None,
) -> PreflightReport:
    limits = load_limits().profile("loadgen_host")
    connections = profile.peak_users
    per_worker = -(-connections // workers)
    checks: list[HostCheck] = []

    soft = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fds = per_worker + _FD_HEADROOM
    checks.append(
        HostCheck(
            "open files per worker",
            f">= {fds}",
            str(soft),
            soft >= fds,
            f"raise the nofile limit (ulimit -n {limits.nofile}; the loadgen_host role sets "
            f"LimitNOFILE={limits.nofile})",
        )
    )
    raw_ports = read_sysctl(PORT_RANGE_SYSCTL, proc_sys)
    raw_ports = " ".join(raw_ports.split()) if raw_ports else None
    port_count = 0
    if raw_ports:
        low, high = (int(part) for part in raw_ports.split())
        port_count = high - low + 1
    checks.append(
        HostCheck(
            "ephemeral ports (per target address)",
            f">= {connections}",
            f"{port_count} ({raw_ports})" if raw_ports else "unknown",
            port_count >= connections,
            f"sysctl -w {PORT_RANGE_SYSCTL}='{limits.ephemeral_ports}', or spread the load over "
            "more target addresses / generator hosts",
        )
    )
    raw_conntrack = read_sysctl("net.netfilter.nf_conntrack_max", proc_sys)
    conntrack = int(raw_conntrack) if raw_conntrack else None
    checks.append(
        HostCheck(
            "conntrack entries",
            f">= {connections}",
            "no conntrack (not tracked)" if conntrack is None else str(conntrack),
            conntrack is None or conntrack >= connections,
            f"sysctl -w net.netfilter.nf_conntrack_max={limits.conntrack_max}",
        )
    )
    memory = memory_bytes if memory_bytes is not None else _available_memory()
    needed = connections * limits.memory_per_connection_bytes
    checks.append(
        HostCheck(
            "memory for connections",
            f">= {needed // 2**20} MiB ({limits.memory_per_connection_kib} KiB each)",
            "unknown" if memory is None else f"{memory // 2**20} MiB available",
            memory is not None and memory >= needed,
            f"use a bigger host or more hosts: {limits.connections_for_memory(memory or 0)} "
            "connections fit here",
        )
    )
    return PreflightReport(profile.name, connections, tuple(checks))


def render_checks(console: Console, report: PreflightReport) -> None:
    from rich.table import Table

    table = Table(title=f"preflight for '{report.profile}' ({report.connections} connections)")
    for column in ("check", "needed", "actual", "status", "what to change"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(
            check.name,
            check.needed,
            check.actual,
            "[green]ok[/]" if check.ok else "[red]short[/]",
            "" if check.ok else check.fix,
        )
    console.print(table)


# ---- on a cluster: can the namespace's quota and the nodes hold the run? -------------------


# Quota keys a run consumes: (quota key, what the run needs of it).
def _run_needs(sizing: Sizing) -> dict[str, float]:
    memory = float(sizing.total_memory_mib * 2**20)
    return {
        "pods": sizing.workers + 1,
        "requests.cpu": sizing.total_cpu_milli / 1000,
        "cpu": sizing.total_cpu_milli / 1000,
        "requests.memory": memory,
        "memory": memory,
        "limits.memory": memory,
        "configmaps": 2,
        "count/configmaps": 2,
        "services": 1,
        "count/services": 1,
        "count/jobs.batch": 2,
        "serviceaccounts": 1,
        "count/serviceaccounts": 1,
    }


def _show(key: str, value: float) -> str:
    if "memory" in key:
        return f"{value / 2**20:.0f}Mi"
    if "cpu" in key:
        return f"{value * 1000:.0f}m"
    return f"{value:g}"


def check_cluster(
    api_client: Any, namespace: str, sizing: Sizing, profile: Profile
) -> PreflightReport:
    """The namespace's ResourceQuotas (hard - used >= what the run requests) and the nodes'
    allocatable less what their pods already request (first fit, biggest pods first)."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.utils import parse_quantity

    core: Any = CoreV1Api(api_client)
    checks: list[HostCheck] = []
    needs = _run_needs(sizing)
    try:
        quotas = core.list_namespaced_resource_quota(namespace).items
    except ApiException as error:
        raise CheckFailed(
            f"cannot read the quotas of {namespace}: {error.status} {error.reason}"
        ) from None
    quota: Any
    for quota in quotas:
        hard = (quota.status.hard if quota.status else None) or quota.spec.hard or {}
        used = (quota.status.used if quota.status else None) or {}
        for key, limit in sorted(hard.items()):
            if key not in needs:
                continue
            left = float(parse_quantity(limit)) - float(  # type: ignore[no-untyped-call]
                parse_quantity(used.get(key, "0"))  # type: ignore[no-untyped-call]
            )
            checks.append(
                HostCheck(
                    f"quota {quota.metadata.name}: {key}",
                    f">= {_show(key, needs[key])}",
                    f"{_show(key, left)} left of {limit}",
                    left >= needs[key],
                    f"raise {key} in ResourceQuota {quota.metadata.name}, or lower the sizing "
                    "(--workers, --worker-cpu, --worker-memory)",
                )
            )
    if not quotas:
        checks.append(
            HostCheck("namespace quota", "-", f"no ResourceQuota in {namespace}", True, "")
        )
    checks.append(_check_nodes(core, sizing, parse_quantity))
    return PreflightReport(f"{profile.name} on {namespace}", sizing.users, tuple(checks))


def _check_nodes(core: Any, sizing: Sizing, parse_quantity: Any) -> HostCheck:
    free: dict[str, list[float]] = {}  # node -> [cpu cores, memory bytes, pods]
    for node in core.list_node().items:
        spec, status = node.spec, node.status
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
        tainted = any(t.effect in ("NoSchedule", "NoExecute") for t in (spec.taints or []))
        if not ready or spec.unschedulable or tainted:
            continue
        alloc = status.allocatable or {}
        free[node.metadata.name] = [
            float(parse_quantity(alloc.get("cpu", "0"))),
            float(parse_quantity(alloc.get("memory", "0"))),
            float(parse_quantity(alloc.get("pods", "0"))),
        ]
    selector = "status.phase!=Succeeded,status.phase!=Failed"
    for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
        left = free.get(pod.spec.node_name or "")
        if left is None:
            continue
        left[2] -= 1
        for container in pod.spec.containers:
            requests = (container.resources.requests if container.resources else None) or {}
            left[0] -= float(parse_quantity(requests.get("cpu", "0")))
            left[1] -= float(parse_quantity(requests.get("memory", "0")))
    pods = [(sizing.master_cpu_milli / 1000, sizing.master_memory_mib * 2**20)] + [
        (sizing.worker_cpu_milli / 1000, sizing.worker_memory_mib * 2**20)
    ] * sizing.workers
    placed = 0
    for cpu, memory in sorted(pods, reverse=True):
        for left in free.values():
            if left[0] >= cpu and left[1] >= memory and left[2] >= 1:
                left[0] -= cpu
                left[1] -= memory
                left[2] -= 1
                placed += 1
                break
    return HostCheck(
        "nodes can schedule the pods",
        f"{len(pods)} pods ({sizing.worker_cpu} / {sizing.worker_memory} per worker)",
        f"{placed} fit on {len(free)} schedulable node(s)",
        placed == len(pods),
        "add nodes, or fewer/smaller workers (--workers, --worker-cpu, --worker-memory)",
    )
