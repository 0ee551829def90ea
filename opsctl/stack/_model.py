"""What the builders return: plain data, no Pulumi, so render, Pulumi and tests share it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.spec import Region

Manifest = dict[str, Any]


@dataclass(frozen=True)
class HelmRelease:
    """An upstream chart installed with ``helm.v3.Release``; it brings its own CRDs."""

    name: str
    namespace: str
    chart: str
    repo: str
    version: str
    values: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "chart": self.chart,
            "repo": self.repo,
            "version": self.version,
            "values": self.values,
        }


@dataclass(frozen=True)
class LocalChart:
    """A chart from this repository, installed with ``helm.v4.Chart`` (rendered by helm)."""

    name: str
    namespace: str
    path: Path
    values: dict[str, Any]


@dataclass(frozen=True)
class SecretCopy:
    """A Secret copied from another region (e.g. the root CA), so trust spans regions.

    Only the Pulumi program can fill it (it reads the source); render lists it without data.
    """

    name: str
    namespace: str
    source_region: str
    source_namespace: str
    source_name: str
    type: str = "kubernetes.io/tls"


@dataclass(frozen=True)
class OperatorCrds:
    """``operators: external``: the pinned upstream CRDs of an operator someone else runs.

    ``project`` is a key of ``opsctl.cluster.crds.CRD_SOURCES`` (the files the tests validate
    against); ``release`` names the Helm release it stands in for.
    """

    release: str
    project: str
    version: str


@dataclass(frozen=True)
class Component:
    """One part of a region (Kafka, Cassandra, ...): applied in the order listed here.

    ``releases`` first (operators and their CRDs), then ``secret_copies``, then ``objects`` in
    order, then ``charts``. With ``operators: external``, ``crds`` is set and installed instead
    of ``releases``, which then only describe the operators run outside the stack.
    ``depends_on`` names components of the same region that must be complete first.
    """

    name: str
    type_name: str  # Pulumi type token suffix: imstack:<name>:<type_name>
    releases: tuple[HelmRelease, ...] = ()
    objects: tuple[Manifest, ...] = ()
    charts: tuple[LocalChart, ...] = ()
    secret_copies: tuple[SecretCopy, ...] = ()
    depends_on: tuple[str, ...] = ()
    crds: tuple[OperatorCrds, ...] = ()

    @property
    def installed_releases(self) -> tuple[HelmRelease, ...]:
        """The Helm releases the stack itself installs (none when the operators are external)."""
        return () if self.crds else self.releases


@dataclass(frozen=True)
class RegionPlan:
    region: Region
    components: tuple[Component, ...]
    endpoints: dict[str, str] = field(default_factory=dict)

    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    def objects(self) -> list[Manifest]:
        return [obj for component in self.components for obj in component.objects]

    def releases(self) -> list[HelmRelease]:
        return [rel for component in self.components for rel in component.releases]


@dataclass(frozen=True)
class StackPlan:
    environment: str
    regions: tuple[RegionPlan, ...]

    def region(self, name: str) -> RegionPlan:
        for plan in self.regions:
            if plan.region.name == name:
                return plan
        raise KeyError(name)
