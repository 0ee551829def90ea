"""Host limits for gateway nodes and load generators: one data file, read by everyone.

``limits.yaml`` next to this module is the single source of these numbers. The Ansible roles
(``playbooks/roles/node_tuning``, ``loadgen_host``) read the same file, and
``opsctl loadtest preflight`` checks hosts against it through :func:`load_limits`::

    from opsctl.hostlimits import load_limits

    profile = load_limits().profile("loadgen_host")
    profile.nofile, profile.ephemeral_ports.count, profile.conntrack_max
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from opsctl.errors import InputProblem, InvalidInputFile, UserInputError
from opsctl.spec._yaml import YamlProblem, format_path, load_with_positions, position_of

LIMITS_FILE = Path(__file__).with_name("limits.yaml")
SUPPORTED_VERSION = 1

PORT_RANGE_SYSCTL = "net.ipv4.ip_local_port_range"
CONNTRACK_MAX_SYSCTL = "net.netfilter.nf_conntrack_max"
NR_OPEN_SYSCTL = "fs.nr_open"
FILE_MAX_SYSCTL = "fs.file-max"
# Sysctls preflight and the roles depend on, and the scope the kernel gives them.

_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
_MODULE_NAME = re.compile(r"^[a-z0-9_]+$")
_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PROFILE_FIELDS = (
    "description",
    "nofile",
    "memory_per_connection_kib",
    "kernel_modules",
    "sysctls",
)
_KIB = 1024
_MAX_PORT = 65535


class Scope(StrEnum):
    """Where a sysctl lives: per network namespace, or one value for the whole host."""

    netns = "netns"
    host = "host"


# Sysctls preflight and the roles depend on, and the scope the kernel gives them.
REQUIRED_SYSCTLS: dict[str, Scope] = {
    PORT_RANGE_SYSCTL: Scope.netns,
    CONNTRACK_MAX_SYSCTL: Scope.host,
    NR_OPEN_SYSCTL: Scope.host,
    FILE_MAX_SYSCTL: Scope.host,
}


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    @property
    def count(self) -> int:
        """Ephemeral ports per source address: the ceiling on connections to one target."""
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low} {self.high}"


@dataclass(frozen=True)
class Sysctl:
    key: str
    value: str  # normalised: integers separated by one space, as `sysctl -w` takes them
    scope: Scope

    def numbers(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.value.split())


@dataclass(frozen=True)
class LimitsProfile:
    name: str
    description: str
    nofile: int
    memory_per_connection_kib: int
    kernel_modules: tuple[str, ...]
    sysctls: tuple[Sysctl, ...]

    def sysctl(self, key: str) -> Sysctl:
        for entry in self.sysctls:
            if entry.key == key:
                return entry
        raise KeyError(key)

    def scoped(self, scope: Scope) -> dict[str, str]:
        return {entry.key: entry.value for entry in self.sysctls if entry.scope is scope}

    @property
    def ephemeral_ports(self) -> PortRange:
        low, high = self.sysctl(PORT_RANGE_SYSCTL).numbers()
        return PortRange(low, high)

    @property
    def conntrack_max(self) -> int:
        return self.sysctl(CONNTRACK_MAX_SYSCTL).numbers()[0]

    @property
    def nr_open(self) -> int:
        return self.sysctl(NR_OPEN_SYSCTL).numbers()[0]

    @property
    def file_max(self) -> int:
        return self.sysctl(FILE_MAX_SYSCTL).numbers()[0]

    @property
    def memory_per_connection_bytes(self) -> int:
        return self.memory_per_connection_kib * _KIB

    def connections_for_memory(self, memory_bytes: int) -> int:
        """How many connections ``memory_bytes`` of RAM holds at this profile's cost."""
        return memory_bytes // self.memory_per_connection_bytes


@dataclass(frozen=True)
class HostLimits:
    file: Path
    profiles: Mapping[str, LimitsProfile]

    def profile(self, name: str) -> LimitsProfile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise UserInputError(
                f"unknown host-limits profile '{name}'", hint=f"profiles in {self.file}: {known}"
            ) from None


def load_limits(path: Path | None = None) -> HostLimits:
    """Load and validate the limits file; every problem is reported with its field and line."""
    path = path or LIMITS_FILE
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = InputProblem(shown, "", f"cannot read: {exc}")
        raise InvalidInputFile("host limits", shown, [problem]) from exc
    try:
        document, positions = load_with_positions(text)
    except YamlProblem as exc:
        problem = InputProblem(shown, "", exc.message, exc.line, exc.column)
        raise InvalidInputFile("host limits", shown, [problem]) from exc
    checker = _Checker(shown, positions)
    profiles = checker.document(document)
    if checker.problems:
        raise InvalidInputFile("host limits", shown, checker.problems)
    return HostLimits(file=path, profiles=profiles)


class _Checker:
    """Collects every problem in the file, so one run lists them all."""

    def __init__(self, file: str, positions: dict[tuple[str | int, ...], tuple[int, int]]):
        self.file = file
        self.positions = positions
        self.problems: list[InputProblem] = []

    def fail(self, path: tuple[str | int, ...], message: str) -> None:
        where = position_of(self.positions, path)
        line, column = where if where else (None, None)
        self.problems.append(InputProblem(self.file, format_path(path), message, line, column))

    def document(self, document: Any) -> dict[str, LimitsProfile]:
        if not isinstance(document, dict):
            self.fail((), "the file must be a mapping with 'version' and 'profiles'")
            return {}
        for key in sorted(set(document) - {"version", "profiles"}):
            self.fail((key,), "unknown field; known fields: version, profiles")
        if document.get("version") != SUPPORTED_VERSION:
            self.fail(("version",), f"must be {SUPPORTED_VERSION}, got {document.get('version')!r}")
        raw_profiles = document.get("profiles")
        if not isinstance(raw_profiles, dict) or not raw_profiles:
            self.fail(("profiles",), "must be a non-empty mapping of profile name -> limits")
            return {}
        profiles: dict[str, LimitsProfile] = {}
        for name, raw in raw_profiles.items():
            path = ("profiles", str(name))
            if not isinstance(name, str) or not _PROFILE_NAME.match(name):
                self.fail(path, "profile names are lowercase words joined by '_'")
                continue
            profile = self.profile(name, raw, path)
            if profile is not None:
                profiles[name] = profile
        return profiles

    def profile(self, name: str, raw: Any, path: tuple[str | int, ...]) -> LimitsProfile | None:
        if not isinstance(raw, dict):
            self.fail(path, "must be a mapping")
            return None
        before = len(self.problems)
        for key in sorted(set(raw) - set(_PROFILE_FIELDS)):
            self.fail((*path, key), f"unknown field; known fields: {', '.join(_PROFILE_FIELDS)}")
        description = raw.get("description")
        if not isinstance(description, str) or not description.strip():
            self.fail((*path, "description"), "must be a non-empty string")
        nofile = self.positive_int(raw, "nofile", path)
        memory = self.positive_int(raw, "memory_per_connection_kib", path)
        modules = self.modules(raw.get("kernel_modules"), (*path, "kernel_modules"))
        sysctls = self.sysctls(raw.get("sysctls"), (*path, "sysctls"))
        if len(self.problems) > before:
            return None
        profile = LimitsProfile(
            name=name,
            description=str(description),
            nofile=nofile,
            memory_per_connection_kib=memory,
            kernel_modules=modules,
            sysctls=sysctls,
        )
        self.relations(profile, path)
        return profile if len(self.problems) == before else None

    def positive_int(self, raw: dict[str, Any], key: str, path: tuple[str | int, ...]) -> int:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail((*path, key), f"must be a positive integer, got {value!r}")
            return 0
        return value

    def modules(self, raw: Any, path: tuple[str | int, ...]) -> tuple[str, ...]:
        if not isinstance(raw, list):
            self.fail(path, "must be a list of kernel module names")
            return ()
        for index, module in enumerate(raw):
            if not isinstance(module, str) or not _MODULE_NAME.match(module):
                self.fail((*path, index), f"{module!r} is not a kernel module name")
        return tuple(str(module) for module in raw)

    def sysctls(self, raw: Any, path: tuple[str | int, ...]) -> tuple[Sysctl, ...]:
        if not isinstance(raw, dict):
            self.fail(path, "must be a mapping with 'netns' and 'host'")
            return ()
        for key in sorted(set(raw) - {scope.value for scope in Scope}):
            self.fail((*path, key), "unknown scope; known: netns, host")
        entries: list[Sysctl] = []
        for scope in Scope:
            table = raw.get(scope.value)
            if not isinstance(table, dict):
                self.fail((*path, scope.value), "must be a mapping of sysctl key -> value")
                continue
            for key, value in table.items():
                entry = self.sysctl(key, value, scope, (*path, scope.value, str(key)))
                if entry is not None and any(e.key == entry.key for e in entries):
                    self.fail((*path, scope.value, entry.key), "set under both netns and host")
                elif entry is not None:
                    entries.append(entry)
        seen = {entry.key: entry.scope for entry in entries}
        for key, scope in REQUIRED_SYSCTLS.items():
            if key not in seen:
                self.fail((*path, scope.value), f"missing {key}: preflight and the roles need it")
            elif seen[key] != scope:
                self.fail((*path, seen[key].value, key), f"belongs under '{scope.value}'")
        return tuple(entries)

    def sysctl(
        self, key: Any, value: Any, scope: Scope, path: tuple[str | int, ...]
    ) -> Sysctl | None:
        if not isinstance(key, str) or not _SYSCTL_KEY.match(key):
            self.fail(path, f"{key!r} is not a sysctl key like net.core.somaxconn")
            return None
        if isinstance(value, bool):
            value = None
        text = str(value) if isinstance(value, int | str) else ""
        parts = text.split()
        if not parts or not all(part.isdigit() for part in parts):
            self.fail(path, f"must be an integer or integers separated by spaces, got {value!r}")
            return None
        return Sysctl(key=key, value=" ".join(str(int(part)) for part in parts), scope=scope)

    def relations(self, profile: LimitsProfile, path: tuple[str | int, ...]) -> None:
        host = (*path, "sysctls", "host")
        ports = profile.sysctl(PORT_RANGE_SYSCTL).numbers()
        port_path = (*path, "sysctls", "netns", PORT_RANGE_SYSCTL)
        if len(ports) != 2:
            self.fail(port_path, "must be two ports: low high")
        elif not 1 <= ports[0] < ports[1] <= _MAX_PORT:
            self.fail(port_path, f"'{ports[0]} {ports[1]}' must be low < high within 1-65535")
        if profile.nofile > profile.nr_open:
            self.fail(
                (*path, "nofile"),
                f"{profile.nofile} exceeds fs.nr_open {profile.nr_open}; the kernel refuses it",
            )
        if profile.nr_open > profile.file_max:
            self.fail(
                (*host, NR_OPEN_SYSCTL),
                f"{profile.nr_open} exceeds fs.file-max {profile.file_max}",
            )
        for key in (CONNTRACK_MAX_SYSCTL, NR_OPEN_SYSCTL, FILE_MAX_SYSCTL):
            if len(profile.sysctl(key).numbers()) != 1:
                self.fail((*host, key), "must be a single integer")


__all__ = [
    "LIMITS_FILE",
    "HostLimits",
    "LimitsProfile",
    "PortRange",
    "Scope",
    "Sysctl",
    "load_limits",
]
