"""The IM stack's Pulumi program, for a stock pulumi CLI (`pulumi up` in infra/).

The program itself is :func:`infra.imstack.pulumi_program`; ``opsctl infra`` runs the same
function inline through the Automation API.
"""

from __future__ import annotations

from infra.imstack import pulumi_program

pulumi_program()
