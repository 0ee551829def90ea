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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    model_validator,
)

from opsctl.errors import UserInputError
from opsctl.spec import FieldPath, Finding, read_yaml_model

LIMITS_FILE = Path(__file__).with_name("limits.yaml")
SUPPORTED_VERSION = 1

PORT_RANGE_SYSCTL = "net.ipv4.ip_local_port_range"
CONNTRACK_MAX_SYSCTL = "net.netfilter.nf_conntrack_max"
NR_OPEN_SYSCTL = "fs.nr_open"
FILE_MAX_SYSCTL = "fs.file-max"

_WHAT = "host limits"
_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
_MODULE_NAME = re.compile(r"^[a-z0-9_]+$")
_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
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


# --- field types: each check says what is wrong in the words the file's author uses ---------


def _matches(pattern: re.Pattern[str], message: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(message.format(value=value))
        return value

    return AfterValidator(check)


def _sysctl_value(value: Any) -> str:
    """``65535`` or ``"4096 16384 4194304"`` -> integers separated by one space."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    parts = text.split()
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(f"must be an integer or integers separated by spaces, got {value!r}")
    return " ".join(str(int(part)) for part in parts)


def _version(value: int) -> int:
    if value != SUPPORTED_VERSION:
        raise ValueError(f"must be {SUPPORTED_VERSION}, got {value!r}")
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


SysctlKey = Annotated[
    StrictStr, _matches(_SYSCTL_KEY, "{value!r} is not a sysctl key like net.core.somaxconn")
]
SysctlValue = Annotated[str, BeforeValidator(_sysctl_value)]
ModuleName = Annotated[StrictStr, _matches(_MODULE_NAME, "{value!r} is not a kernel module name")]
ProfileName = Annotated[
    StrictStr, _matches(_PROFILE_NAME, "{value!r}: profile names are lowercase words joined by '_'")
]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SysctlTable(_Model):
    """The ``sysctls`` of a profile, by the scope the kernel gives them."""

    netns: dict[SysctlKey, SysctlValue]
    host: dict[SysctlKey, SysctlValue]


class LimitsProfile(_Model):
    """One kind of host (``gateway_node``, ``loadgen_host``) and the limits it runs with."""

    description: Annotated[StrictStr, AfterValidator(_text)]
    nofile: PositiveInt = Field(description="per-process open files (soft = hard)")
    memory_per_connection_kib: PositiveInt
    kernel_modules: tuple[ModuleName, ...]
    table: SysctlTable = Field(alias="sysctls")
    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        return self._name

    @property
    def sysctls(self) -> tuple[Sysctl, ...]:
        """Every sysctl with its scope, netns first, in file order."""
        return tuple(
            Sysctl(key, value, scope)
            for scope in Scope
            for key, value in self.scoped(scope).items()
        )

    def sysctl(self, key: str) -> Sysctl:
        for entry in self.sysctls:
            if entry.key == key:
                return entry
        raise KeyError(key)

    def scoped(self, scope: Scope) -> dict[str, str]:
        return dict(getattr(self.table, scope.value))

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


class LimitsFile(_Model):
    """``limits.yaml`` as written."""

    version: Annotated[StrictInt, AfterValidator(_version)]
    profiles: dict[ProfileName, LimitsProfile] = Field(min_length=1)

    @model_validator(mode="after")
    def _name_profiles(self) -> LimitsFile:
        for name, profile in self.profiles.items():
            profile._name = name
        return self


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
    loaded = read_yaml_model(LimitsFile, path, what=_WHAT, shown=str(path), check=_check)
    return HostLimits(file=path, profiles=loaded.profiles)


# --- rules across fields, run on a file that validated ----------------------------------------


def _check(limits: LimitsFile) -> Iterator[Finding]:
    for name, profile in limits.profiles.items():
        path: FieldPath = ("profiles", name)
        placement = list(_placement(profile, path))
        yield from placement
        if not placement:
            yield from _relations(profile, path)


def _placement(profile: LimitsProfile, path: FieldPath) -> Iterator[Finding]:
    """Each sysctl under one scope, and the ones preflight and the roles need where they go."""
    netns, host = profile.scoped(Scope.netns), profile.scoped(Scope.host)
    for key in host.keys() & netns.keys():
        yield (*path, "sysctls", Scope.host.value, key), "set under both netns and host"
    for key, scope in REQUIRED_SYSCTLS.items():
        found = [other for other in Scope if key in profile.scoped(other)]
        if not found:
            yield (*path, "sysctls", scope.value), f"missing {key}: preflight and the roles need it"
        elif scope not in found:
            yield (*path, "sysctls", found[0].value, key), f"belongs under '{scope.value}'"


def _relations(profile: LimitsProfile, path: FieldPath) -> Iterator[Finding]:
    host: FieldPath = (*path, "sysctls", Scope.host.value)
    ports = profile.sysctl(PORT_RANGE_SYSCTL).numbers()
    port_path: FieldPath = (*path, "sysctls", Scope.netns.value, PORT_RANGE_SYSCTL)
    if len(ports) != 2:
        yield port_path, "must be two ports: low high"
    elif not 1 <= ports[0] < ports[1] <= _MAX_PORT:
        yield port_path, f"'{ports[0]} {ports[1]}' must be low < high within 1-65535"
    if profile.nofile > profile.nr_open:
        yield (
            (*path, "nofile"),
            f"{profile.nofile} exceeds fs.nr_open {profile.nr_open}; the kernel refuses it",
        )
    if profile.nr_open > profile.file_max:
        yield (
            (*host, NR_OPEN_SYSCTL),
            f"{profile.nr_open} exceeds fs.file-max {profile.file_max}",
        )
    for key in (CONNTRACK_MAX_SYSCTL, NR_OPEN_SYSCTL, FILE_MAX_SYSCTL):
        if len(profile.sysctl(key).numbers()) != 1:
            yield (*host, key), "must be a single integer"


__all__ = [
    "LIMITS_FILE",
    "HostLimits",
    "LimitsFile",
    "LimitsProfile",
    "PortRange",
    "Scope",
    "Sysctl",
    "SysctlTable",
    "load_limits",
]
