"""The pinned Go-built binaries the simulated clusters run (built by scripts/setup/gotools.sh)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opsctl.errors import ToolMissing, UserInputError
from opsctl.paths import REPO_ROOT, cache_dir

VERSIONS_FILE = REPO_ROOT / "tools" / "go" / "versions.env"

# tool -> the versions.env key pinning it
_PINNED_BY: dict[str, str] = {
    "kwokctl": "KWOK_VERSION",
    "kwok": "KWOK_VERSION",
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "helm": "HELM_VERSION",
}
CLUSTER_TOOLS = (
    "kwokctl",
    "kwok",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)


def parse_versions(text: str, origin: str) -> dict[str, str]:
    """Parse the KEY=value lines of versions.env (comments and blank lines ignored)."""
    versions: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserInputError(f"{origin}:{number}: expected KEY=value, got '{line}'")
        versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class Toolset:
    """Absolute paths of the pinned binaries, checked to exist."""

    paths: Mapping[str, Path]
    versions: Mapping[str, str]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    @property
    def bin_dir(self) -> Path:
        """Directory of stable symlinks, put first on PATH for kwokctl."""
        return cache_dir() / "bin"


def pinned_path(name: str, versions: Mapping[str, str], cache: Path | None = None) -> Path:
    version = versions[_PINNED_BY[name]]
    return (cache or cache_dir()) / "tools" / f"{name}-{version}" / "bin" / name


def find_tools(names: tuple[str, ...] = CLUSTER_TOOLS) -> Toolset:
    """Every named binary at its pinned version, or ToolMissing naming what to run."""
    if not VERSIONS_FILE.is_file():
        raise ToolMissing(f"{VERSIONS_FILE} is missing; the Go tool pins live there")
    versions = parse_versions(VERSIONS_FILE.read_text(encoding="utf-8"), str(VERSIONS_FILE))
    missing_keys = sorted({_PINNED_BY[name] for name in names} - set(versions))
    if missing_keys:
        raise ToolMissing(f"{VERSIONS_FILE} does not pin {', '.join(missing_keys)}")
    paths = {name: pinned_path(name, versions) for name in names}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        listing = ", ".join(f"{name} ({paths[name]})" for name in missing)
        raise ToolMissing(
            f"not built yet: {listing}",
            hint="run `make setup` (scripts/setup/gotools.sh builds them from the Go module proxy)",
        )
    return Toolset(paths=paths, versions={name: versions[_PINNED_BY[name]] for name in names})
