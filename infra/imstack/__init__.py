"""The IM stack as Pulumi components: one ``imstack:region:Region`` per region of the spec.

Every object comes from the pure builders in ``opsctl.stack``; this package only wraps them in
Pulumi resources, with an explicit per-region kubernetes Provider and explicit dependencies.
"""

from infra.imstack.program import (
    TYPE_PREFIX,
    RegionComponent,
    StackComponents,
    build_program,
    pulumi_program,
)

__all__ = ["TYPE_PREFIX", "RegionComponent", "StackComponents", "build_program", "pulumi_program"]
