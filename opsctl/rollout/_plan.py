"""Turn flags and the stack spec into a validated rollout plan: pure logic, no cluster calls.

Everything a user can get wrong is checked here, so a bad flag exits 2 before anything changes.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from opsctl.errors import CheckFailed, UserInputError
from opsctl.spec import StackSpec, parse_duration

Component = Literal["gateway", "dispatcher"]
Strategy = Literal["canary", "rolling"]

COMPONENTS: tuple[Component, ...] = ("gateway", "dispatcher")
STRATEGIES: tuple[Strategy, ...] = ("canary", "rolling")
DEFAULT_STEPS = (5, 25, 50, 100)
# The gateway asks draining clients to go evenly over 80 % of its drain window (protocol 7.5).
DRAIN_SPREAD = 0.8
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Thresholds:
    """What a canary must meet: the spec's SLOs, and how far it may trail the stable pods."""

    delivery_p99_ms: float
    send_error_ratio: float  # 1 - availability
    connect_success: float  # fraction, 0..1
    max_consumer_lag: float
    baseline_tolerance: float  # canary may be this much worse (relative) than stable
    abnormal_disconnects_per_1k: float  # absolute ceiling, per 1000 connections per second


@dataclass(frozen=True)
class StartRequest:
    """The flags of `opsctl rollout start`, as typed by the user.

    The one home of every rollout default: the CLI reads its flag defaults from here
    (``StartRequest.bake`` is ``"10m"``), and the plan's own defaults below come from here.
    """

    stack: str
    image: str
    component: str = "gateway"
    regions: str = "all"
    strategy: str = "canary"
    steps: str = ",".join(str(step) for step in DEFAULT_STEPS)
    bake: str = "10m"
    interval: str = "1m"
    min_samples: int = 50
    failure_limit: int = 0
    # None: each region's drain window from the spec, the number the builders put in the
    # chart (gateway.drainWindowSeconds). A duration overrides it for every region.
    drain_window: str | None = None
    drain_threshold: int | None = None  # None: 1 % of the smallest region's connections a pod
    namespace: str = "im"
    release: str = "im-gateway"
    prometheus: tuple[str, ...] = ()
    max_consumer_lag: float = 1000.0
    baseline_tolerance: float = 0.2
    abnormal_disconnects_per_1k: float = 1.0
    rollback_promoted: bool = False
    ready_timeout: str = "5m"


@dataclass(frozen=True)
class RegionTarget:
    name: str
    context: str
    prometheus: str
    connections_per_pod: int
    # Seconds a draining gateway pod spreads its clients' reconnects over (see drain_window).
    drain_window_s: float


# Version 2: the drain window moved from the plan into each region.
PLAN_FORMAT = 2


@dataclass(frozen=True)
class RolloutPlan:
    """Everything a driver needs to run (or resume) a rollout; stored in the cluster as JSON."""

    id: str
    stack: str
    component: Component
    image: str
    strategy: Strategy
    steps: tuple[int, ...]
    bake_s: float
    interval_s: float
    min_samples: int
    failure_limit: int
    drain_threshold: int
    reconnect_budget: int  # reconnects/s, cluster-wide
    namespace: str
    deployment: str
    regions: tuple[RegionTarget, ...]
    thresholds: Thresholds
    rollback_promoted: bool = StartRequest.rollback_promoted
    ready_timeout_s: float = parse_duration(StartRequest.ready_timeout)
    created_at: str = field(default_factory=_now)
    format: int = PLAN_FORMAT

    @property
    def canary_deployment(self) -> str:
        return f"{self.deployment}-canary"

    @property
    def container(self) -> str:
        return self.component

    def region(self, name: str) -> RegionTarget:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutPlan:
        """The stored plan; a format-1 plan (one drain window for every region) is upgraded,
        a newer or damaged one refused with CheckFailed."""
        values = dict(data)
        rollout = values.get("id", "?")
        version = values.get("format", 1)
        if not isinstance(version, int) or not 1 <= version <= PLAN_FORMAT:
            raise CheckFailed(
                f"rollout {rollout}: its stored plan has format {version!r}; this opsctl reads "
                f"formats 1 to {PLAN_FORMAT}",
                hint="use the opsctl version that started it (a newer one, if the format is)",
            )
        try:
            regions = [dict(region) for region in values["regions"]]
            if version == 1:
                # It kept running with the window it started with, whatever the spec says now.
                window = values.pop("drain_window_s")
                for region in regions:
                    region["drain_window_s"] = window
            values["format"] = PLAN_FORMAT
            values["steps"] = tuple(values["steps"])
            values["regions"] = tuple(RegionTarget(**region) for region in regions)
            values["thresholds"] = Thresholds(**values["thresholds"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckFailed(
                f"rollout {rollout}: its stored plan cannot be read ({type(error).__name__}: "
                f"{error})",
                hint="it was edited by hand or written by another opsctl version",
            ) from None


def parse_steps(text: str) -> tuple[int, ...]:
    """'5,25,50,100' -> (5, 25, 50, 100); strictly increasing percentages ending at 100."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise UserInputError("--steps is empty; give percentages like 5,25,50,100")
    steps: list[int] = []
    for part in parts:
        if not part.isdigit():
            raise UserInputError(f"--steps: '{part}' is not a whole percentage")
        value = int(part)
        if not 1 <= value <= 100:
            raise UserInputError(f"--steps: {value} is outside 1..100")
        if steps and value <= steps[-1]:
            raise UserInputError(
                f"--steps must increase: {value} follows {steps[-1]} in '{text}'",
                hint="e.g. --steps 5,25,50,100",
            )
        steps.append(value)
    if steps[-1] != 100:
        steps.append(100)  # promotion always ends the wave
    return tuple(steps)


def _duration(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise UserInputError(f"{flag}: {error}") from None


def resolve_image(spec: StackSpec, component: Component, text: str) -> str:
    """A full reference, or a bare tag applied to the spec's image repository."""
    from pydantic import TypeAdapter, ValidationError

    from opsctl.spec import ImageRef

    reference = text.strip()
    if reference and not any(char in reference for char in "/:@"):
        if not _TAG.match(reference):
            raise UserInputError(f"--image: '{text}' is not a valid image tag")
        repository = getattr(spec.images, component).rsplit("@", 1)[0]
        if ":" in repository.rsplit("/", 1)[-1]:
            repository = repository.rsplit(":", 1)[0]
        reference = f"{repository}:{reference}"
    try:
        return str(TypeAdapter(ImageRef).validate_python(reference))
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise UserInputError(f"--image: {message}") from None


def _prometheus_urls(entries: tuple[str, ...], regions: list[str]) -> dict[str, str]:
    """`URL` for every region, or `region=URL` for one; later entries win."""
    urls: dict[str, str] = {}
    for entry in entries:
        name, sep, url = entry.partition("=")
        if sep and not name.startswith("http"):
            if name not in regions:
                raise UserInputError(
                    f"--prometheus {entry}: unknown region '{name}'",
                    hint=f"regions: {', '.join(regions)}",
                )
            targets = [name]
        else:
            url, targets = entry, regions
        if not re.match(r"^https?://[^\s/]+", url):
            raise UserInputError(f"--prometheus: '{url}' is not an http(s) URL")
        for region in targets:
            urls[region] = url.rstrip("/")
    missing = [region for region in regions if region not in urls]
    if missing:
        raise UserInputError(
            f"no Prometheus URL for region(s) {', '.join(missing)}",
            hint="pass --prometheus URL (every region) or --prometheus REGION=URL",
        )
    return urls


def select_regions(spec: StackSpec, text: str) -> list[str]:
    """Regions in wave order: the spec's order with the primary (canary region) first."""
    ordered = [spec.primary.name] + [r.name for r in spec.regions if r.role != "primary"]
    if text.strip() in ("", "all"):
        return ordered
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in ordered]
    if unknown:
        raise UserInputError(
            f"--regions: unknown region {', '.join(repr(n) for n in unknown)}",
            hint=f"regions in this stack: {', '.join(ordered)}",
        )
    if len(set(wanted)) != len(wanted):
        raise UserInputError(f"--regions: '{text}' names a region twice")
    return [name for name in ordered if name in wanted]


def deployment_name(release: str, component: str) -> str:
    """The chart's naming: <fullname>-<component>, fullname = release unless it lacks the chart."""
    fullname = release if "im-gateway" in release else f"{release}-im-gateway"
    return f"{fullname[:63].rstrip('-')}-{component}"[:63].rstrip("-")


def spec_drain_window(spec: StackSpec, region: str) -> float:
    """The region's drain window as the stack builders compute it for the chart
    (``gateway.drainWindowSeconds``): the same function, so the two cannot disagree."""
    from opsctl.stack._names import drain_window_seconds

    return float(drain_window_seconds(spec, spec.region(region)))


def build_plan(spec: StackSpec, request: StartRequest) -> RolloutPlan:
    """Validate every flag against the spec; raises UserInputError (exit 2) on the first problem."""
    if request.component not in COMPONENTS:
        raise UserInputError(f"--component: '{request.component}' is not gateway or dispatcher")
    if request.strategy not in STRATEGIES:
        raise UserInputError(f"--strategy: '{request.strategy}' is not canary or rolling")
    component: Component = "gateway" if request.component == "gateway" else "dispatcher"
    strategy: Strategy = "canary" if request.strategy == "canary" else "rolling"
    regions = select_regions(spec, request.regions)
    image = resolve_image(spec, component, request.image)
    steps = parse_steps(request.steps)
    interval = _duration("--interval", request.interval)
    bake = _duration("--bake", request.bake)
    if bake < interval:
        raise UserInputError(
            f"--bake {request.bake} is shorter than the analysis interval ({request.interval})",
            hint="the bake must hold at least one analysis",
        )
    override = None
    if request.drain_window is not None:
        override = _duration("--drain-window", request.drain_window)
    ready_timeout = _duration("--ready-timeout", request.ready_timeout)
    if request.min_samples < 1:
        raise UserInputError("--min-samples must be at least 1")
    if request.failure_limit < 0:
        raise UserInputError("--failure-limit must be 0 or more")
    if not 0 <= request.baseline_tolerance <= 10:
        raise UserInputError("--baseline-tolerance must be between 0 and 10 (0.2 = 20 % worse)")
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", request.namespace):
        raise UserInputError(f"--namespace: '{request.namespace}' is not a namespace name")
    urls = _prometheus_urls(request.prometheus, regions)
    targets = tuple(
        RegionTarget(
            name=name,
            context=spec.region(name).kube_context,
            prometheus=urls[name],
            connections_per_pod=spec.region(name).gateway.connections_per_pod,
            drain_window_s=override if override is not None else spec_drain_window(spec, name),
        )
        for name in regions
    )
    smallest_pod = min(target.connections_per_pod for target in targets)
    threshold = request.drain_threshold
    if threshold is None:
        threshold = max(1, smallest_pod // 100)  # 1 % of a pod's planned load
    slos = spec.slos
    return RolloutPlan(
        id=f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
        stack=request.stack,
        component=component,
        image=image,
        strategy=strategy,
        steps=steps,
        bake_s=bake,
        interval_s=interval,
        min_samples=request.min_samples,
        failure_limit=request.failure_limit,
        drain_threshold=threshold,
        reconnect_budget=spec.reconnect_budget.reconnects_per_second,
        namespace=request.namespace,
        deployment=deployment_name(request.release, component),
        regions=targets,
        thresholds=Thresholds(
            delivery_p99_ms=float(slos.delivery_latency_p99_ms),
            send_error_ratio=round(1 - slos.availability / 100, 9),
            connect_success=slos.connect_success / 100,
            max_consumer_lag=request.max_consumer_lag,
            baseline_tolerance=request.baseline_tolerance,
            abnormal_disconnects_per_1k=request.abnormal_disconnects_per_1k,
        ),
        rollback_promoted=request.rollback_promoted,
        ready_timeout_s=ready_timeout,
    )


# -- sizing ----------------------------------------------------------------------------------


def canary_replicas(stable_replicas: int, weight: int) -> int:
    """Canary pods for a step: the step's share of the stable size, at least one."""
    return max(1, math.ceil(stable_replicas * weight / 100))


def batch_size(budget: int, connections_per_pod: int, drain_window_s: float, replicas: int) -> int:
    """Pods that may drain at once so their reconnects stay within the budget.

    A draining pod sends its clients away evenly over 80 % of the drain window, so one pod
    causes ``connections / (0.8 * window)`` reconnects per second.
    """
    per_pod_rate = connections_per_pod / max(DRAIN_SPREAD * drain_window_s, 1e-9)
    return max(1, min(max(replicas, 1), math.floor(budget / per_pod_rate)))


def pods_per_batch(plan: RolloutPlan, region: RegionTarget, replicas: int) -> int:
    """Old pods that may leave at once. Gateways: sized to the reconnect budget. Dispatchers
    hold no client connections, but each one leaving rebalances the Kafka consumer group, so
    they go one at a time."""
    if plan.component == "dispatcher":
        return 1
    return batch_size(
        plan.reconnect_budget, region.connections_per_pod, region.drain_window_s, replicas
    )


def rolling_strategy(plan: RolloutPlan, region: RegionTarget, replicas: int) -> dict[str, Any]:
    """The Deployment's own update, paced to the reconnect budget.

    maxUnavailable 0 keeps capacity; maxSurge is the budget-sized batch, so at most that many
    old pods drain at once; minReadySeconds holds each batch for the drain window before the
    controller removes the next old pods. Both come from the region's drain window.
    """
    batch = pods_per_batch(plan, region, replicas)
    return {
        "minReadySeconds": math.ceil(region.drain_window_s),
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": batch, "maxUnavailable": 0},
        },
    }
