"""Safe rollouts of the gateway or dispatcher across regions (`opsctl rollout`).

Public surface: build a plan from flags (:func:`build_plan`), then :func:`start`; the control
commands (:func:`status`, :func:`pause`, :func:`resume`, :func:`abort`, :func:`undo`,
:func:`history`) find the rollout from its state in the clusters, so they work from any
machine. Domain errors follow opsctl.errors: bad input exits 2 before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsctl.errors import CheckFailed, KubeError, UserInputError
from opsctl.poll import WaitTimeout, wait_until
from opsctl.rollout._analysis import Metrics, PrometheusMetrics
from opsctl.rollout._driver import STALE_AFTER_S, Driver, Outcome, summary_of
from opsctl.rollout._kube import KubeApi, RestKubeApi
from opsctl.rollout._plan import (
    COMPONENTS,
    DEFAULT_STEPS,
    STRATEGIES,
    RegionTarget,
    RolloutPlan,
    StartRequest,
    batch_size,
    build_plan,
    canary_replicas,
    parse_steps,
    rolling_strategy,
)
from opsctl.rollout._state import (
    HISTORY_KEY,
    ROLLOUT_KEY,
    TERMINAL_PHASES,
    Desired,
    Phase,
    RolloutRecord,
    StateStore,
)
from opsctl.spec import StackSpec

EventSink = Callable[[str, str], None]
KubeFactory = Callable[[str], KubeApi]  # kube context -> API


def _quiet(_region: str, _message: str) -> None:
    return None


def rest_factory(kubeconfig: Path | None) -> KubeFactory:
    def make(context: str) -> KubeApi:
        return RestKubeApi(context=context, kubeconfig=kubeconfig)

    return make


def _connector(
    kube: KubeFactory, with_metrics: bool
) -> Callable[[RegionTarget], tuple[KubeApi, Metrics | None]]:
    def connect(target: RegionTarget) -> tuple[KubeApi, Metrics | None]:
        metrics = PrometheusMetrics(target.prometheus) if with_metrics else None
        return kube(target.context), metrics

    return connect


def start(
    spec: StackSpec, request: StartRequest, kube: KubeFactory, *, on_event: EventSink = _quiet
) -> Outcome:
    plan = build_plan(spec, request)
    return Driver(plan, _connector(kube, True), on_event=on_event).start()


def locate(
    spec: StackSpec,
    component: str,
    namespace: str,
    kube: KubeFactory,
    *,
    on_event: EventSink = _quiet,
) -> RolloutRecord:
    """The newest rollout of ``component`` recorded in any of the stack's regions."""
    if component not in COMPONENTS:
        raise UserInputError(f"--component: '{component}' is not gateway or dispatcher")
    found: list[RolloutRecord] = []
    errors: list[KubeError] = []
    for region in spec.regions:
        try:
            record = StateStore(kube(region.kube_context), namespace, component).rollout()
        except KubeError as error:
            on_event(region.name, f"skipped: {error.message}")
            errors.append(error)
            continue
        if record is not None:
            found.append(record)
    if not found and errors:
        raise errors[0]  # unreachable or forbidden everywhere: say so, not "no rollout"
    if not found:
        raise UserInputError(
            f"no {component} rollout recorded in namespace '{namespace}' of any region",
            hint="start one with `opsctl rollout start`",
        )
    return max(found, key=lambda record: record.started_at)


def _driver(
    record: RolloutRecord,
    kube: KubeFactory,
    *,
    with_metrics: bool,
    prometheus: tuple[str, ...] = (),
    on_event: EventSink = _quiet,
) -> Driver:
    plan = RolloutPlan.from_json(record.plan)
    if prometheus:
        from dataclasses import replace

        from opsctl.rollout._plan import _prometheus_urls

        urls = _prometheus_urls(prometheus, [region.name for region in plan.regions])
        regions = tuple(replace(region, prometheus=urls[region.name]) for region in plan.regions)
        plan = replace(plan, regions=regions)
    driver = Driver(plan, _connector(kube, with_metrics), on_event=on_event)
    driver.record = record
    return driver


def status(record: RolloutRecord, kube: KubeFactory) -> dict[str, Any]:
    report = _driver(record, kube, with_metrics=False).report()
    report["driverAlive"] = record.phase == Phase.RUNNING and record.owner_alive(STALE_AFTER_S)
    return report


def resume(
    record: RolloutRecord,
    kube: KubeFactory,
    *,
    prometheus: tuple[str, ...] = (),
    on_event: EventSink = _quiet,
) -> Outcome:
    driver = _driver(record, kube, with_metrics=True, prometheus=prometheus, on_event=on_event)
    return driver.resume(record)


def _wait_for_phase(
    store: StateStore, rollout_id: str, phases: frozenset[Phase], timeout: float
) -> RolloutRecord:
    """Until the driver has recorded one of ``phases`` for the rollout (it obeys a control
    request within CONTROL_POLL_S, then finishes what it must, e.g. a rollback)."""

    def reached() -> RolloutRecord | None:
        record = store.rollout()
        if record is not None and record.id == rollout_id and record.phase in phases:
            return record
        return None

    try:
        found = wait_until(
            f"rollout {rollout_id} to be {'/'.join(sorted(phases))}",
            reached,
            timeout=timeout,
            interval=0.2,
        )
        assert found is not None  # wait_until returns only a truthy answer
        return found
    except WaitTimeout:
        raise CheckFailed(
            f"rollout {rollout_id}: the driver did not reach {'/'.join(sorted(phases))} "
            f"within {timeout:.0f} s"
        ) from None


def _lead(record: RolloutRecord, kube: KubeFactory) -> StateStore:
    plan = RolloutPlan.from_json(record.plan)
    return StateStore(kube(plan.regions[0].context), plan.namespace, plan.component)


def pause(record: RolloutRecord, kube: KubeFactory, *, timeout: float = 120.0) -> Outcome:
    if record.phase in TERMINAL_PHASES:
        raise UserInputError(f"rollout {record.id} is {record.phase}; nothing to pause")
    lead = _lead(record, kube)
    lead.set_control(Desired.PAUSE, record.id)
    if record.phase == Phase.RUNNING and record.owner_alive(STALE_AFTER_S):
        record = _wait_for_phase(lead, record.id, TERMINAL_PHASES | {Phase.PAUSED}, timeout)
    elif record.phase != Phase.PAUSED:
        record.phase, record.reason = Phase.PAUSED, "paused (no driver was running)"
        record.owner = None
        lead.write(ROLLOUT_KEY, record.to_json())
    return Outcome(record.phase, record.reason, status(record, kube))


def abort(
    record: RolloutRecord,
    kube: KubeFactory,
    *,
    timeout: float = 600.0,
    on_event: EventSink = _quiet,
) -> Outcome:
    if record.phase in TERMINAL_PHASES:
        raise UserInputError(f"rollout {record.id} is {record.phase}; nothing to abort")
    lead = _lead(record, kube)
    lead.set_control(Desired.ABORT, record.id)
    if record.phase == Phase.RUNNING and record.owner_alive(STALE_AFTER_S):
        record = _wait_for_phase(lead, record.id, TERMINAL_PHASES, timeout)
        return Outcome(record.phase, record.reason, status(record, kube))
    driver = _driver(record, kube, with_metrics=False, on_event=on_event)
    return driver.abort_here("aborted by request")


def undo(record: RolloutRecord, kube: KubeFactory, *, on_event: EventSink = _quiet) -> Outcome:
    if record.phase == Phase.UNDONE:
        raise UserInputError(f"rollout {record.id} is already undone")
    if record.phase == Phase.RUNNING and record.owner_alive(STALE_AFTER_S):
        raise UserInputError(
            f"rollout {record.id} is running; abort it (or pause it) before undoing"
        )
    driver = _driver(record, kube, with_metrics=False, on_event=on_event)
    return driver.undo()


def history(
    spec: StackSpec, component: str, namespace: str, kube: KubeFactory
) -> list[dict[str, Any]]:
    """Every rollout remembered in any region, newest first."""
    entries: dict[str, dict[str, Any]] = {}
    for region in spec.regions:
        try:
            store = StateStore(kube(region.kube_context), namespace, component)
            documents = store.read()
        except KubeError:
            continue
        for entry in documents.get(HISTORY_KEY) or []:
            if isinstance(entry, dict) and "id" in entry:
                entries.setdefault(str(entry["id"]), entry)
        current = documents.get(ROLLOUT_KEY)
        if isinstance(current, dict):
            summary = summary_of(RolloutRecord.from_json(current))
            entries[summary["id"]] = summary
    return sorted(entries.values(), key=lambda entry: str(entry.get("startedAt")), reverse=True)


__all__ = [
    "COMPONENTS",
    "DEFAULT_STEPS",
    "STRATEGIES",
    "Driver",
    "Outcome",
    "Phase",
    "RolloutPlan",
    "RolloutRecord",
    "StartRequest",
    "abort",
    "batch_size",
    "build_plan",
    "canary_replicas",
    "history",
    "locate",
    "parse_steps",
    "pause",
    "rest_factory",
    "resume",
    "rolling_strategy",
    "start",
    "status",
    "undo",
]
