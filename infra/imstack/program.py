"""Pulumi components of the IM stack, built from ``opsctl.stack``'s plain plans.

Type tokens: ``imstack:region:Region`` per region, and one child component per part,
``imstack:<part>:<Part>`` (``imstack:kafka:Kafka``, ...). Ordering is explicit: a part depends
on the parts its builder names; inside a part, objects depend on the part's Helm releases
(which install the CRDs) or, with ``operators: external``, on the operators' pinned CRDs, and
Jobs on the part's other objects.

:func:`pulumi_program` is the program itself: ``infra/__main__.py`` runs it under a stock
pulumi CLI, and ``opsctl infra`` hands it to the Automation API as an inline program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from infra.imstack.resources import create, resource_name
from opsctl.errors import InvalidInputFile, OpsctlError
from opsctl.spec import CONFIG_NAMESPACE, StackSpec, parse_spec
from opsctl.stack import (
    Component,
    OperatorCrds,
    RegionPlan,
    build_stack,
    check_kube_contexts,
    kubeconfig_paths,
)
from opsctl.stack import _names as names

TYPE_PREFIX = "imstack"
# pulumi-kubernetes waits for this condition before dependants go ahead (generic await).
_WAIT_READY = {"pulumi.com/waitFor": "condition=Ready"}


@dataclass
class Shared:
    """What one region hands to the others: providers and the root CA's Certificate."""

    providers: dict[str, k8s.Provider] = field(default_factory=dict)
    root_ca: pulumi.Resource | None = None


class PartComponent(pulumi.ComponentResource):
    """One part of a region (platform, pki, monitoring, kafka, cassandra, redis, gateway)."""

    def __init__(
        self,
        region: str,
        part: Component,
        provider: k8s.Provider,
        shared: Shared,
        opts: pulumi.ResourceOptions,
        *,
        crds: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__(
            f"{TYPE_PREFIX}:{part.name}:{part.type_name}", f"{region}-{part.name}", None, opts
        )
        self.releases = [
            self._release(region, release, provider) for release in part.installed_releases
        ]
        self.copies = [
            self._secret_copy(region, copy, provider, shared) for copy in part.secret_copies
        ]
        ready: list[pulumi.Resource] = [*self.releases, *crds, *self.copies]
        self.objects: list[pulumi.Resource] = []
        # The engine creates siblings in parallel: an object in a namespace this part creates
        # must wait for that Namespace, or the API server answers "namespaces ... not found".
        namespaces: dict[str, pulumi.Resource] = {}
        for built in sorted(part.objects, key=lambda m: m["kind"] != "Namespace"):
            waits = ready + (self.objects if built["kind"] == "Job" else [])
            own_namespace = namespaces.get(built["metadata"].get("namespace", ""))
            if own_namespace is not None:
                waits = [*waits, own_namespace]
            manifest = _with_pulumi_hints(built)
            created = create(
                region,
                manifest,
                pulumi.ResourceOptions(parent=self, provider=provider, depends_on=waits),
            )
            self.objects.append(created)
            if manifest["kind"] == "Namespace":
                namespaces[manifest["metadata"]["name"]] = created
            if (
                manifest["kind"] == "Certificate"
                and manifest["metadata"]["name"] == names.ROOT_CA_SECRET
            ):
                shared.root_ca = created
        self.charts = [
            k8s.helm.v4.Chart(
                f"{region}/{chart.name}",
                name=chart.name,  # the Helm release name (the resource name has a "/")
                chart=str(chart.path),
                namespace=chart.namespace,
                values=chart.values,
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=[*ready, *self.objects]
                ),
            )
            for chart in part.charts
        ]
        self.register_outputs(
            {
                "releases": [release.name for release in part.installed_releases],
                "crds": [crds.project for crds in part.crds],
                "objects": [resource_name(region, m) for m in part.objects],
            }
        )

    def _release(self, region: str, release: Any, provider: k8s.Provider) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            f"{region}/{release.name}",
            k8s.helm.v3.ReleaseArgs(
                name=release.name,
                namespace=release.namespace,
                chart=release.chart,
                version=release.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=release.repo),
                values=release.values,
                create_namespace=False,  # the platform part owns namespaces
                atomic=True,
                timeout=900,
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )

    def _secret_copy(
        self, region: str, copy: Any, provider: k8s.Provider, shared: Shared
    ) -> k8s.core.v1.Secret:
        source = read_secret(
            f"{region}/source/{copy.source_region}/{copy.source_namespace}/{copy.source_name}",
            namespace=copy.source_namespace,
            name=copy.source_name,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=shared.providers[copy.source_region],
                depends_on=[shared.root_ca] if shared.root_ca is not None else [],
                additional_secret_outputs=["data"],
            ),
        )
        return k8s.core.v1.Secret(
            f"{region}/secret/{copy.namespace}/{copy.name}",
            metadata={
                "name": copy.name,
                "namespace": copy.namespace,
                "labels": {**names.MANAGED_BY, names.REGION_LABEL: region},
                "annotations": {"im.platform/copied-from": copy.source_region},
            },
            type=copy.type,
            data=pulumi.Output.secret(cast(Any, source.data)),
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, additional_secret_outputs=["data"]
            ),
        )


def read_secret(
    resource_name: str, *, namespace: str, name: str, opts: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    """Read an existing Secret (a ``.get``) naming its apiVersion, kind, namespace and name.

    ``Secret.get`` passes no inputs. The provider then reads the Secret twice differently: in
    ``up`` (no inputs, no state) it fills the read's ``__inputs`` from the whole live object;
    in ``refresh`` (state given) it prunes them to apiVersion, kind and name. The same
    unchanged Secret thus checkpoints differently and every refresh and drift check reported
    the read as an update. Given the kind and name, both reads take the same path.
    """
    props = k8s.core.v1.SecretInitArgs.__new__(k8s.core.v1.SecretInitArgs)
    for key in ("data", "immutable", "string_data", "type"):
        props.__dict__[key] = None  # outputs only, as in Secret.get
    props.__dict__["api_version"] = "v1"
    props.__dict__["kind"] = "Secret"
    props.__dict__["metadata"] = {"name": name, "namespace": namespace}
    merged = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(id=f"{namespace}/{name}"))
    return k8s.core.v1.Secret(resource_name, opts=merged, __props__=props)


def _crd(
    region: str, document: dict[str, Any], provider: k8s.Provider, parent: pulumi.Resource
) -> k8s.apiextensions.v1.CustomResourceDefinition:
    # Kept on destroy: the operators that run elsewhere own them too, and deleting a CRD
    # deletes every object of its kind in the cluster, whoever made it.
    return k8s.apiextensions.v1.CustomResourceDefinition(
        f"{region}/crd/{document['metadata']['name']}",
        metadata=document["metadata"],
        spec=document["spec"],
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, retain_on_delete=True),
    )


@cache
def _crd_documents(project: str) -> tuple[dict[str, Any], ...]:
    from opsctl.cluster.crds import crd_set, load_crds

    return tuple(load_crds(crd_set(project)))


def operator_crds(operator: OperatorCrds) -> tuple[dict[str, Any], ...]:
    """The pinned upstream CRD documents of an operator (scripts/setup/crds.sh fetched them)."""
    return _crd_documents(operator.project)


def _with_pulumi_hints(manifest: dict[str, Any]) -> dict[str, Any]:
    """Certificates gate their dependants on Ready (cross-region copies read the CA's Secret)."""
    if manifest["kind"] != "Certificate":
        return manifest
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), **_WAIT_READY}
    return {**manifest, "metadata": meta}


class RegionComponent(pulumi.ComponentResource):
    """``imstack:region:Region``: a region's provider and every part, in dependency order."""

    def __init__(
        self,
        plan: RegionPlan,
        shared: Shared,
        kubeconfig: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        region = plan.region
        super().__init__(f"{TYPE_PREFIX}:region:Region", region.name, None, opts)
        provider_args: dict[str, Any] = {"context": region.kube_context}
        if kubeconfig:
            provider_args["kubeconfig"] = kubeconfig
        self.provider = k8s.Provider(
            f"{region.name}-k8s", **provider_args, opts=pulumi.ResourceOptions(parent=self)
        )
        shared.providers[region.name] = self.provider
        # operators: external. Every CRD of the region goes in before anything else: the
        # provider drops its cached OpenAPI schema after each CRD it creates and fetches the
        # whole /openapi/v2 again for the next resource, which interleaved with ~40 CRDs of
        # megabytes (Prometheus Operator's) costs minutes and can time out.
        self.crds = [
            _crd(region.name, document, self.provider, self)
            for part in plan.components
            for operator in part.crds
            for document in operator_crds(operator)
        ]
        self.parts: dict[str, PartComponent] = {}
        for part in plan.components:
            self.parts[part.name] = PartComponent(
                region.name,
                part,
                self.provider,
                shared,
                pulumi.ResourceOptions(
                    parent=self, depends_on=[self.parts[dep] for dep in part.depends_on]
                ),
                crds=self.crds,
            )
        self.endpoints = plan.endpoints
        self.register_outputs({"kubeContext": region.kube_context, "endpoints": plan.endpoints})


@dataclass
class StackComponents:
    regions: dict[str, RegionComponent]


def build_program(
    spec: StackSpec,
    *,
    kubeconfig: str | None = None,
    dashboards: Sequence[dict[str, Any]] | None = None,
    file: str = "<pulumi config imstack:spec>",
    search: Sequence[Path] | None = None,
) -> StackComponents:
    """Validate everything first (exit-2 class errors name the field), then declare resources.

    ``search``: the kubeconfig files the providers will read (default: $KUBECONFIG or
    ~/.kube/config of this process); an inline program's engine may have another $KUBECONFIG.
    """
    if kubeconfig:
        paths = [Path(kubeconfig)]
    else:
        paths = list(search) if search is not None else kubeconfig_paths()
    check_kube_contexts(spec, paths, file=file)
    plan = build_stack(spec, dashboards=dashboards, file=file)
    for region_plan in plan.regions:  # missing CRD files fail here, before any resource
        for part in region_plan.components:
            for operator in part.crds:
                operator_crds(operator)
    shared = Shared()
    # The primary first: the others copy its root CA.
    ordered = sorted(plan.regions, key=lambda r: r.region.role != "primary")
    regions = {
        region_plan.region.name: RegionComponent(region_plan, shared, kubeconfig)
        for region_plan in ordered
    }
    pulumi.export(
        "regions",
        {
            name: {"kubeContext": spec.region(name).kube_context, "endpoints": component.endpoints}
            for name, component in regions.items()
        },
    )
    return StackComponents(regions=regions)


def explain(error: OpsctlError) -> str:
    """An opsctl error as the engine shows it: message, located problems, hint."""
    lines = [error.message]
    if isinstance(error, InvalidInputFile):
        lines += [f"  {problem}" for problem in error.problems]
    if error.hint:
        lines.append(f"  hint: {error.hint}")
    return "\n".join(lines)


def pulumi_program(search: Sequence[Path] | None = None) -> None:
    """The Pulumi program: the stack spec from config ``imstack:spec``, one component per region.

    A spec the program cannot satisfy fails before any resource is declared, with every problem
    named by its field. ``search``: see :func:`build_program`.
    """
    config = pulumi.Config(CONFIG_NAMESPACE)
    try:
        build_program(
            parse_spec(config.require_object("spec")),
            kubeconfig=config.get("kubeconfig"),
            search=search,
        )
    except OpsctlError as error:
        raise pulumi.RunError(explain(error)) from None
