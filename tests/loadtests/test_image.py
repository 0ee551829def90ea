"""The load-generator image installs exactly what loadtests/ needs at run time, and copies every
repository module the locustfile imports: loadtests/Dockerfile picks packages out of
requirements.lock by name and copies files by path, so a new import must be added there too
(there is no container runtime here to build the image and find out)."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from opsctl.paths import REPO_ROOT
from tests.gateway.test_image import _canonical, closure, project_requirements

pytestmark = pytest.mark.unit

DOCKERFILE = REPO_ROOT / "loadtests" / "Dockerfile"
ENTRY = "loadtests.locustfile"
OURS = ("loadtests", "opsctl")


def image_packages() -> set[str]:
    match = re.search(r"wanted='\^\(([^)]+)\)=='", DOCKERFILE.read_text())
    assert match, "the Dockerfile no longer selects packages from requirements.lock by name"
    return {_canonical(name) for name in match[1].split("|")}


def image_files() -> set[Path]:
    """Repository files the Dockerfile copies (directories expanded)."""
    files: set[Path] = set()
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("COPY ") or "--from" in line or "requirements.lock" in line:
            continue
        for source in line.split()[1:-1]:
            path = REPO_ROOT / source
            files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return files


def _module_file(name: str) -> Path | None:
    base = REPO_ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def runtime_modules() -> tuple[set[Path], set[str]]:
    """Repository files and third-party top-level modules reachable from the locustfile
    (imports inside functions included: they run too)."""
    files: set[Path] = set()
    third_party: set[str] = set()
    pending = [ENTRY]
    while pending:
        name = pending.pop()
        path = _module_file(name)
        if path is None or path in files:
            continue
        files.add(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for imported in names:
                top = imported.split(".")[0]
                if top in OURS:
                    parts = imported.split(".")
                    pending += [".".join(parts[: i + 1]) for i in range(len(parts))]
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
    return files, third_party


def test_the_image_copies_every_module_the_locustfile_imports() -> None:
    files, _ = runtime_modules()
    assert REPO_ROOT / "opsctl" / "spec" / "_model.py" in files  # profiles -> the spec loader
    missing = sorted(str(p.relative_to(REPO_ROOT)) for p in files - image_files())
    assert missing == [], "add these to the COPY lines of loadtests/Dockerfile"


def test_the_image_installs_exactly_the_runtime_closure() -> None:
    _, modules = runtime_modules()
    distributions = metadata.packages_distributions()
    imported = {_canonical(distributions[module][0]) for module in modules}
    requested = project_requirements()
    declared = imported & set(requested)
    # gevent is imported but arrives with locust; everything imported must be in the closure.
    needed = closure(declared, {})  # pyjwt without [crypto]: HS256 needs no cryptography
    assert imported <= needed
    assert "pyzmq" in needed  # Locust's master-worker channel
    assert needed - image_packages() == set(), "add these to the awk list in loadtests/Dockerfile"
    assert image_packages() - needed == set(), "the image installs more than the closure"


def test_the_image_runs_non_root_without_writing() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+", text, re.M)  # a pinned base
    assert "--require-hashes" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "PYTHONDONTWRITEBYTECODE=1" in text
