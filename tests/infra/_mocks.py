"""Run the Pulumi program under ``pulumi.runtime.set_mocks`` and record what it declares."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

from opsctl.spec import StackSpec

KUBERNETES_PROVIDER = "pulumi:providers:kubernetes"


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str
    custom: bool
    read: bool  # a .get() of an existing resource


@dataclass
class Recorder(pulumi.runtime.Mocks):
    declared: list[Declared] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        read = bool(args.resource_id) and not args.custom and args.typ.startswith("kubernetes:")
        read = read or (args.typ == "kubernetes:core/v1:Secret" and bool(args.resource_id))
        self.declared.append(
            Declared(args.typ, args.name, dict(args.inputs), args.provider or "", args.custom, read)
        )
        state = dict(args.inputs)
        if read and args.typ == "kubernetes:core/v1:Secret":
            fake = base64.b64encode(b"-----BEGIN TEST-----").decode()
            state = {"data": {"tls.crt": fake, "tls.key": fake, "ca.crt": fake}}
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}

    def of_type(self, typ: str) -> list[Declared]:
        return [d for d in self.declared if d.typ == typ]


def write_kubeconfig(path: Path, contexts: list[str]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": c, "cluster": {"server": "https://127.0.0.1:6443"}} for c in contexts
        ],
        "users": [{"name": "test", "user": {"token": "t"}}],
        "contexts": [{"name": c, "context": {"cluster": c, "user": "test"}} for c in contexts],
        "current-context": contexts[0],
    }
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class ProgramRun:
    recorder: Recorder
    secrets: dict[str, bool]  # copied Secret resource name -> data marked secret
    depends_on: dict[str, set[str]]  # resource name -> names of its explicit dependencies
    parents: dict[str, str]  # resource name -> its parent component's name


def run_program(spec: StackSpec, kubeconfig: Path) -> ProgramRun:
    """Declare the whole stack against mocks; returns every resource it registered."""
    from infra.imstack import build_program

    recorder = Recorder()
    # Pulumi's mocks use the current event loop; an earlier asyncio.run() leaves none set.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(recorder, project="imstack", stack="test", preview=False)
    secrets: dict[str, bool] = {}
    depends_on: dict[str, set[str]] = {}
    parents: dict[str, str] = {}

    def record_dependencies(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        # The mocks never see ResourceOptions; a stack transformation does.
        dependencies = args.opts.depends_on if args.opts else None
        if isinstance(dependencies, pulumi.Resource):
            dependencies = [dependencies]
        depends_on[args.name] = {dep._name for dep in dependencies or ()}
        if args.opts and args.opts.parent is not None:
            parents[args.name] = args.opts.parent._name
        return None

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(record_dependencies)
        components = build_program(spec, kubeconfig=str(kubeconfig))
        checks = []
        for region in components.regions.values():
            for part in region.parts.values():
                for copy in part.copies:
                    checks.append(
                        pulumi.Output.all(copy.urn, pulumi.Output.from_input(copy.data.is_secret()))
                    )
        return pulumi.Output.all(*checks).apply(lambda pairs: secrets.update(dict(pairs)))

    program()
    return ProgramRun(recorder, secrets, depends_on, parents)
