"""The gateway image installs exactly what the gateway needs: gateway/Dockerfile picks its runtime
packages out of requirements.lock by name, so a new import or dependency must be added there too
(there is no container runtime here to build the image and find out)."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from opsctl.paths import REPO_ROOT

pytestmark = pytest.mark.unit

DOCKERFILE = REPO_ROOT / "gateway" / "Dockerfile"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    match = re.search(r"wanted='\^\(([^)]+)\)=='", DOCKERFILE.read_text())
    assert match, "the Dockerfile no longer selects packages from requirements.lock by name"
    return {_canonical(name) for name in match[1].split("|")}


def gateway_imports() -> set[str]:
    modules = set()
    for path in (REPO_ROOT / "gateway").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"gateway", "__future__"}


def project_requirements() -> dict[str, Requirement]:
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    requirements = (Requirement(text) for text in pyproject["project"]["dependencies"])
    return {_canonical(r.name): r for r in requirements}


def closure(roots: set[str], extras: dict[str, set[str]]) -> set[str]:
    """The distributions ``roots`` need at run time on Linux, with the extras asked for."""
    needed: set[str] = set()
    pending = [(root, extras.get(root, set())) for root in roots]
    while pending:
        name, wanted_extras = pending.pop()
        if name in needed and not wanted_extras:
            continue
        needed.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in wanted_extras or {""}]
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                pending.append((_canonical(requirement.name), set(requirement.extras)))
    return needed


def test_the_image_installs_the_gateways_runtime_closure() -> None:
    distributions = metadata.packages_distributions()
    direct = {_canonical(distributions[module][0]) for module in gateway_imports()}
    requested = project_requirements()
    assert direct <= set(requested), "the gateway imports a package pyproject does not declare"
    extras = {name: set(requested[name].extras) for name in direct}
    needed = closure(direct, extras)
    assert "hiredis" in needed  # redis[hiredis]: the extra is part of the closure
    assert needed - image_packages() == set(), "add these to the grep in gateway/Dockerfile"
