"""Assemble every component of every region, in dependency order."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opsctl.spec import Region, StackSpec
from opsctl.stack import _cassandra, _certs, _gateway, _kafka, _monitoring, _platform, _redis
from opsctl.stack import _names as n
from opsctl.stack._model import Component, OperatorCrds, RegionPlan, StackPlan
from opsctl.stack._versions import CHART_PINS

if TYPE_CHECKING:
    from opsctl.alerts import RuleSet

COMPONENT_ORDER = ("platform", "pki", "monitoring", "kafka", "cassandra", "redis", "gateway")


def build_region(
    spec: StackSpec,
    region: Region,
    *,
    rules: RuleSet | None = None,
    dashboards: Sequence[dict[str, Any]] = (),
    file: str = "<stack spec>",
) -> RegionPlan:
    """Every object and release of one region. Raises InvalidInputFile for unbuildable specs."""
    _redis.check(spec, file)
    if rules is None:
        from opsctl.alerts import ruleset

        rules = ruleset(spec)
    components: tuple[Component, ...] = (
        _platform.build(spec, region),
        _certs.build(spec, region),
        _monitoring.build(spec, region, rules, dashboards),
        _kafka.build(spec, region),
        _cassandra.build(spec, region),
        _redis.build(spec, region),
        _gateway.build(spec, region),
    )
    if spec.operators == "external":
        components = tuple(_external_operators(component) for component in components)
    return RegionPlan(
        region=region,
        components=components,
        endpoints={
            "kafka": n.kafka_bootstrap(region),
            "kafkaExternal": n.kafka_external_bootstrap(spec, region),
            "redis": n.redis_url(region),
            "cassandra": n.cassandra_service(region),
            "cassandraSeed": n.cassandra_seed_host(spec, region),
        },
    )


def _external_operators(component: Component) -> Component:
    """The operators run elsewhere: the stack installs each release's pinned upstream CRDs
    instead. ``releases`` stay, describing the operators someone else must run (and how)."""
    if not component.releases:
        return component
    pins = {pin.chart: pin for pin in CHART_PINS}
    crds = tuple(
        OperatorCrds(
            release=release.name,
            project=pins[release.chart].crd_project,
            version=pins[release.chart].app_version,
        )
        for release in component.releases
    )
    return dataclasses.replace(component, crds=crds)


def build_stack(
    spec: StackSpec,
    *,
    regions: Sequence[str] | None = None,
    dashboards: Sequence[dict[str, Any]] | None = None,
    file: str = "<stack spec>",
) -> StackPlan:
    """Plans for the named regions (all by default); rules and dashboards are built once.

    ``dashboards`` defaults to the project's own set (dashboards/), built from the spec.
    """
    from opsctl.alerts import ruleset
    from opsctl.dashboards import build_all

    if dashboards is None:
        dashboards = list(build_all(spec).values())

    _redis.check(spec, file)
    rules = ruleset(spec)
    chosen = [spec.region(name) for name in regions] if regions else list(spec.regions)
    return StackPlan(
        environment=spec.environment,
        regions=tuple(
            build_region(spec, region, rules=rules, dashboards=dashboards, file=file)
            for region in chosen
        ),
    )
