"""The IM stack's Pulumi program: the stack spec from Pulumi config, one component per region.

Everything is built by ``opsctl.stack`` from the spec, parsed by the one loader
(``opsctl.spec.parse_spec``). A spec the program cannot satisfy fails here, before any
resource is declared, with every problem named by its field.
"""

from __future__ import annotations

import pulumi

from infra.imstack import build_program
from opsctl.errors import InvalidInputFile, OpsctlError
from opsctl.spec import CONFIG_NAMESPACE, parse_spec


def _explain(error: OpsctlError) -> str:
    lines = [error.message]
    if isinstance(error, InvalidInputFile):
        lines += [f"  {problem}" for problem in error.problems]
    if error.hint:
        lines.append(f"  hint: {error.hint}")
    return "\n".join(lines)


config = pulumi.Config(CONFIG_NAMESPACE)
try:
    build_program(parse_spec(config.require_object("spec")), kubeconfig=config.get("kubeconfig"))
except OpsctlError as error:
    raise pulumi.RunError(_explain(error)) from None
