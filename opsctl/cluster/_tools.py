"""The pinned Go-built binaries the simulated clusters run (built by scripts/setup/gotools.sh)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opsctl.errors import ToolMissing, UserInputError
from opsctl.paths import REPO_ROOT, cache_dir

VERSIONS_FILE = REPO_ROOT / "tools" / "go" / "versions.env"
GOTOOLS_SCRIPT = REPO_ROOT / "scripts" / "setup" / "gotools.sh"
# Set (to anything) to never build a missing tool on demand: fail with the setup hint instead.
ENV_NO_BUILD = "OPSCTL_NO_TOOL_BUILD"
SETUP_HINT = (
    "run `make setup-cluster` (scripts/setup/gotools.sh builds them from the Go module proxy)"
)

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
    "pulumi": "PULUMI_VERSION",
    "pulumi-resource-kubernetes": "PULUMI_KUBERNETES_PLUGIN_VERSION",
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
    # gotools.sh names the directory after the version as versions.env spells it, except the
    # provider, which is stamped (and installed as a plugin) without the "v".
    if name == "pulumi-resource-kubernetes":
        version = version.removeprefix("v")
    return (cache or cache_dir()) / "tools" / f"{name}-{version}" / "bin" / name


def pinned_versions() -> dict[str, str]:
    if not VERSIONS_FILE.is_file():
        raise ToolMissing(f"{VERSIONS_FILE} is missing; the Go tool pins live there")
    return parse_versions(VERSIONS_FILE.read_text(encoding="utf-8"), str(VERSIONS_FILE))


Builder = Callable[[Sequence[str]], None]


def build_tools(names: Sequence[str]) -> None:
    """Build missing pinned tools now with scripts/setup/gotools.sh, showing progress.

    The first `opsctl cluster up` or `opsctl infra` on a fresh machine pays for it (minutes;
    the pulumi CLI about 5, its Kubernetes provider about 10, on 2 cores) instead of every
    `make demo`. ``$OPSCTL_NO_TOOL_BUILD`` turns this off: missing tools then fail at once
    with the setup hint.
    """
    from opsctl import console

    listing = ", ".join(names)
    if os.environ.get(ENV_NO_BUILD) or not GOTOOLS_SCRIPT.is_file():
        raise ToolMissing(f"not built yet: {listing}", hint=SETUP_HINT)
    console.info(
        f"[bold]building {listing}[/bold] from the Go module proxy (first use only; "
        "can take several minutes): scripts/setup/gotools.sh"
    )
    with console.console.status(f"building {listing} ..."):
        done = subprocess.run(
            ["bash", str(GOTOOLS_SCRIPT), *names],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    for line in done.stdout.splitlines():
        console.info(line)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ToolMissing(
            f"building {listing} failed (scripts/setup/gotools.sh exited {done.returncode}):\n"
            f"{tail}",
            hint=SETUP_HINT,
        )


def find_tools(names: tuple[str, ...] = CLUSTER_TOOLS, *, build: Builder | None = None) -> Toolset:
    """Every named binary at its pinned version, or ToolMissing naming what to run.

    With ``build`` (e.g. :func:`build_tools`), missing binaries are built first.
    """
    versions = pinned_versions()
    missing_keys = sorted({_PINNED_BY[name] for name in names} - set(versions))
    if missing_keys:
        raise ToolMissing(f"{VERSIONS_FILE} does not pin {', '.join(missing_keys)}")
    paths = {name: pinned_path(name, versions) for name in names}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing and build is not None:
        build(missing)
        missing = [name for name in missing if not paths[name].is_file()]
    if missing:
        listing = ", ".join(f"{name} ({paths[name]})" for name in missing)
        raise ToolMissing(f"not built yet: {listing}", hint=SETUP_HINT)
    return Toolset(paths=paths, versions={name: versions[_PINNED_BY[name]] for name in names})
