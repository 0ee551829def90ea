"""Can this machine generate a profile's load? Checks against opsctl/hostlimits (loadgen_host),
the same numbers the Ansible loadgen role applies."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.hostlimits import PORT_RANGE_SYSCTL, load_limits
from opsctl.loadtest.profiles import Profile

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
