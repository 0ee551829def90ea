"""Load a stack spec from ``infra/Pulumi.<stack>.yaml`` (or from Pulumi config) into StackSpec.

This is the only parser of the spec: opsctl and the Pulumi program both come through here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from opsctl.errors import StackNotFound, UserInputError
from opsctl.spec import _semantics
from opsctl.spec._model import StackSpec
from opsctl.spec._yaml import Positions, read_yaml_model, validate_model

CONFIG_NAMESPACE = "imstack"
SPEC_KEY = f"{CONFIG_NAMESPACE}:spec"
_STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_WHAT = "stack spec"


def stack_file(infra_dir: Path, stack: str) -> Path:
    return infra_dir / f"Pulumi.{stack}.yaml"


def list_stacks(infra_dir: Path) -> list[str]:
    """Stack names that have a ``Pulumi.<stack>.yaml`` in ``infra_dir``."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in infra_dir.glob("Pulumi.*.yaml"))


def load_stack(infra_dir: Path, stack: str) -> StackSpec:
    """Load and fully validate one stack. Raises a UserInputError subclass on any problem."""
    if not _STACK_NAME.match(stack):
        raise UserInputError(
            f"'{stack}' is not a stack name (letters, digits, '.', '_' and '-', at most 64)"
        )
    path = stack_file(infra_dir, stack)
    if not path.is_file():
        raise StackNotFound(stack, str(path), list_stacks(infra_dir))
    return load_spec_file(path)


def load_spec_file(path: Path) -> StackSpec:
    """Load and fully validate the spec in a Pulumi stack file (``config: imstack:spec``)."""
    return read_yaml_model(
        StackSpec, path, what=_WHAT, root=("config", SPEC_KEY), check=_semantics.check
    )


def parse_spec(
    data: Any,
    *,
    file: str = f"<pulumi config {SPEC_KEY}>",
    positions: Positions | None = None,
) -> StackSpec:
    """Validate an already-parsed spec mapping (for example from ``pulumi.Config``)."""
    return validate_model(
        StackSpec, data, file=file, what=_WHAT, positions=positions, check=_semantics.check
    )
