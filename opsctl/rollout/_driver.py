"""The rollout engine: waves of regions, canary steps with analysis, promotion, bake, rollback.

Every step is idempotent and its progress is saved in the cluster before and after it runs,
so a driver that dies (or is paused) can be resumed from any machine and repeats at most the
step it was in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opsctl.errors import CheckFailed, ExitCode, KubeError, UserInputError
from opsctl.poll import WaitTimeout, wait_until
from opsctl.rollout import _objects as objects
from opsctl.rollout._analysis import (
    Analysis,
    Metrics,
    MetricsError,
    analyze,
    connections,
    reconnect_rate,
)
from opsctl.rollout._kube import KubeApi, check_permissions
from opsctl.rollout._plan import RegionTarget, RolloutPlan, canary_replicas, pods_per_batch
from opsctl.rollout._state import (
    MAX_ANALYSES,
    REGION_FINISHED_PHASES,
    REGION_KEY,
    ROLLOUT_KEY,
    TERMINAL_PHASES,
    UNKNOWN_REGION,
    Desired,
    Owner,
    Phase,
    RegionProgress,
    RolloutRecord,
    StateStore,
    now_iso,
)

HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0
CONTROL_POLL_S = 0.5


@dataclass
class RegionHandle:
    target: RegionTarget
    api: KubeApi
    metrics: Metrics | None
    store: StateStore


Connector = Callable[[RegionTarget], tuple[KubeApi, Metrics | None]]
EventSink = Callable[[str, str], None]  # (region, message)


@dataclass
class Outcome:
    phase: Phase
    reason: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> ExitCode:
        if self.phase in (Phase.SUCCEEDED, Phase.UNDONE):
            return ExitCode.OK
        if self.phase in (Phase.PAUSED, Phase.RUNNING):
            return ExitCode.INCONCLUSIVE
        return ExitCode.FAILED


class _Stop(Exception):
    """Unwinds the driver to its top with the phase the rollout ends in."""

    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


def _quiet(_region: str, _message: str) -> None:
    return None


class Driver:
    def __init__(
        self,
        plan: RolloutPlan,
        connect: Connector,
        *,
        on_event: EventSink = _quiet,
        poll_s: float = 0.25,
    ) -> None:
        self.plan = plan
        self.on_event = on_event
        self.poll_s = poll_s
        self.regions: dict[str, RegionHandle] = {}
        for target in plan.regions:
            api, metrics = connect(target)
            store = StateStore(api, plan.namespace, plan.component)
            self.regions[target.name] = RegionHandle(target, api, metrics, store)
        self.lead = self.regions[plan.regions[0].name].store
        self.record = RolloutRecord(plan=plan.to_json())
        self._owner: Owner | None = None
        self._last_beat = 0.0
        self._last_control = 0.0
        self._rolling_back = False

    # -- entry points --------------------------------------------------------------------------

    def start(self) -> Outcome:
        """Preflight every region (nothing changes if one fails), then drive."""
        for handle in self.regions.values():
            check_permissions(handle.api, self.plan.namespace, handle.store.name)
        for handle in self.regions.values():
            stable = handle.api.get("deployments", self.plan.namespace, self.plan.deployment)
            if stable is None:
                raise UserInputError(
                    f"{handle.target.context}: deployment {self.plan.namespace}/"
                    f"{self.plan.deployment} not found",
                    hint="check --namespace and --release (the chart's release name)",
                )
            objects.container_index(stable, self.plan.container)
            self._refuse_if_in_flight(handle)
        lead_docs = self.lead.read()
        previous = lead_docs.get(ROLLOUT_KEY)
        if isinstance(previous, dict):
            self.lead.append_history(_summary(RolloutRecord.from_json(previous)))
        self._owner = Owner.me()
        self.record = RolloutRecord(plan=self.plan.to_json(), owner=vars(self._owner))
        self.lead.set_control(Desired.RUN, self.plan.id)
        for handle in self.regions.values():
            progress = RegionProgress(rollout_id=self.plan.id, region=handle.target.name)
            progress.event(
                "planned",
                image=self.plan.image,
                strategy=self.plan.strategy,
                drain_window_s=handle.target.drain_window_s,
            )
            handle.store.write(REGION_KEY, progress.to_json())
        self._save_record()
        self._emit(self.plan.regions[0].name, f"rollout {self.plan.id} started")
        return self._drive()

    def resume(self, record: RolloutRecord) -> Outcome:
        if record.phase in TERMINAL_PHASES:
            raise UserInputError(f"rollout {record.id} is {record.phase}; nothing to resume")
        if record.phase == Phase.RUNNING and record.owner_alive(STALE_AFTER_S):
            owner = Owner(**record.owner or {})
            raise UserInputError(
                f"rollout {record.id} is being driven by {owner.describe()}",
                hint="pause or abort it instead, or wait for that process to end",
            )
        self._owner = Owner.me()
        self.record = record
        self.record.phase, self.record.reason = Phase.RUNNING, ""
        self.record.owner = vars(self._owner)
        self.lead.set_control(Desired.RUN, self.plan.id)
        self._save_record()
        self._emit(self._current_region(), f"rollout {self.plan.id} resumed")
        return self._drive()

    # -- the loop ------------------------------------------------------------------------------

    def _drive(self) -> Outcome:
        try:
            while self.record.wave < len(self.plan.regions):
                handle = self.regions[self.plan.regions[self.record.wave].name]
                self._run_region(handle)
                self.record.wave += 1
                self._save_record()
            self._finish(Phase.SUCCEEDED, "every region promoted")
        except _Stop as stop:
            if stop.phase != Phase.PAUSED:
                self._finish(stop.phase, stop.reason)
            else:
                self.record.phase, self.record.reason = Phase.PAUSED, stop.reason
                self.record.owner = None
                self._save_record()
        return Outcome(self.record.phase, self.record.reason, self.report())

    def _finish(self, phase: Phase, reason: str) -> None:
        self.record.phase, self.record.reason = phase, reason
        self.record.finished_at = now_iso()
        self.record.owner = None
        self._save_record()
        self._emit(self._current_region(), f"rollout {phase}: {reason}")

    def _run_region(self, handle: RegionHandle) -> None:
        progress = self._progress(handle)
        if progress.phase in REGION_FINISHED_PHASES:
            return
        if progress.phase == Phase.PENDING:
            stable = self._stable(handle)
            progress.previous = objects.previous_state(stable)
            progress.previous_image = objects.current_image(stable, self.plan.container)
            progress.previous_hash = _current_hash(handle, self.plan, stable)
            progress.stable_replicas = int(stable["spec"].get("replicas", 1))
            progress.phase = Phase.CANARY if self.plan.strategy == "canary" else Phase.PROMOTING
            self._note(handle, progress, f"wave {self.record.wave + 1}: {progress.phase}")
        if progress.phase == Phase.CANARY:
            self._canary_steps(handle, progress)
        if progress.phase == Phase.PROMOTING:
            self._promote(handle, progress)
        if progress.phase == Phase.DRAINING:
            self._drain_canary(handle, progress)
        if progress.phase == Phase.BAKING:
            self._bake(handle, progress)

    def _canary_steps(self, handle: RegionHandle, progress: RegionProgress) -> None:
        while progress.phase == Phase.CANARY:
            weight = self.plan.steps[progress.step]
            if weight >= 100:
                progress.phase = Phase.PROMOTING
                self._note(handle, progress, "canary passed every step; promoting")
                return
            replicas = canary_replicas(progress.stable_replicas, weight)
            self._ensure_canary(handle, replicas)
            progress.canary_replicas = replicas
            self._note(
                handle,
                progress,
                f"step {progress.step + 1}: canary at {weight}% "
                f"({replicas} pods beside {progress.stable_replicas})",
            )
            self._wait_ready(handle, progress, self.plan.canary_deployment, replicas)
            self._sleep(self.plan.interval_s)
            result = self._analyze(handle, progress, weight, compare=True)
            if result.verdict == "pass":
                progress.step += 1
                self._save(handle, progress)
            elif result.verdict == "fail":
                self._failed_analysis(handle, progress, result)
            else:
                self._inconclusive(handle, progress, result)

    def _promote(self, handle: RegionHandle, progress: RegionProgress) -> None:
        plan = self.plan
        if not progress.template_changed:
            from opsctl.rollout._plan import rolling_strategy

            pacing = rolling_strategy(plan, handle.target, progress.stable_replicas)
            body = objects.promote_patch(plan.container, plan.image, plan.id, pacing)
            progress.template_changed = True
            self._note(
                handle,
                progress,
                f"updating {plan.deployment} to {plan.image} "
                f"(maxSurge {pacing['strategy']['rollingUpdate']['maxSurge']}, "
                f"minReadySeconds {pacing['minReadySeconds']})",
            )
            handle.api.patch("deployments", plan.namespace, plan.deployment, body, "strategic")
        self._wait_rolled_out(handle, progress)
        old = progress.previous_hash
        if old:
            old_pods = f'namespace="{plan.namespace}",pod=~"{plan.deployment}-{old}-[a-z0-9]+"'
            self._wait_drained(handle, progress, old_pods, "old pods")
        if progress.previous is not None:
            handle.api.patch(
                "deployments",
                plan.namespace,
                plan.deployment,
                objects.restore_pacing_patch(progress.previous),
                "json",
            )
        canary = handle.api.get("deployments", plan.namespace, plan.canary_deployment)
        progress.phase = Phase.DRAINING if canary is not None else Phase.BAKING
        self._note(handle, progress, f"{plan.deployment} runs {plan.image}")

    def _drain_canary(self, handle: RegionHandle, progress: RegionProgress) -> None:
        """The promoted stable pods take over; the canary's pods leave in budget-sized batches."""
        plan = self.plan
        while True:
            canary = handle.api.get("deployments", plan.namespace, plan.canary_deployment)
            if canary is None:
                break
            current = int(canary["spec"].get("replicas", 0))
            if current == 0:
                handle.api.delete("deployments", plan.namespace, plan.canary_deployment)
                break
            batch = pods_per_batch(plan, handle.target, current)
            before = set(self._canary_pods(handle))
            target = max(0, current - batch)
            handle.api.patch(
                "deployments",
                plan.namespace,
                plan.canary_deployment,
                objects.scale_patch(target),
                "strategic",
            )
            progress.canary_replicas = target
            self._note(handle, progress, f"canary scaled {current} -> {target}")
            self._wait_canary_pods(handle, at_most=target)
            leaving = sorted(before - set(self._canary_pods(handle)))
            if leaving:
                selector = f'namespace="{plan.namespace}",pod=~"{"|".join(leaving)}"'
                self._wait_drained(handle, progress, selector, "leaving canary pods")
        progress.canary_replicas = 0
        progress.phase = Phase.BAKING
        self._note(handle, progress, "canary removed")

    def _bake(self, handle: RegionHandle, progress: RegionProgress) -> None:
        if progress.bake_started is None:
            progress.bake_started = time.time()
            self._note(handle, progress, f"baking for {self.plan.bake_s:g} s")
        while time.time() - progress.bake_started < self.plan.bake_s - 1e-3:
            self._sleep(min(self.plan.interval_s, self.plan.bake_s))
            result = self._analyze(handle, progress, 100, compare=False)
            if result.verdict == "fail":
                self._failed_analysis(handle, progress, result)
            elif result.verdict == "inconclusive":
                self._inconclusive(handle, progress, result)
        progress.phase = Phase.DONE
        self._note(handle, progress, "region done")

    # -- analysis outcomes ---------------------------------------------------------------------

    def _analyze(
        self, handle: RegionHandle, progress: RegionProgress, weight: int, *, compare: bool
    ) -> Analysis:
        if handle.metrics is None:
            raise CheckFailed(f"{handle.target.name}: no Prometheus to analyse with")
        result = analyze(
            handle.metrics, self.plan, handle.target.name, progress.step, weight, compare=compare
        )
        progress.analyses = [*progress.analyses, result.to_json()][-MAX_ANALYSES:]
        self._note(handle, progress, f"analysis {result.verdict}: {result.summary()}")
        return result

    def _failed_analysis(
        self, handle: RegionHandle, progress: RegionProgress, result: Analysis
    ) -> None:
        progress.failures += 1
        self._save(handle, progress)
        if progress.failures <= self.plan.failure_limit:
            self._emit(
                handle.target.name,
                f"failure {progress.failures} of {self.plan.failure_limit} allowed; retrying",
            )
            return
        self._rollback(handle, progress, Phase.ROLLED_BACK)
        if self.plan.rollback_promoted:
            self._rollback_promoted(Phase.ROLLED_BACK)
        raise _Stop(Phase.ROLLED_BACK, f"{handle.target.name}: analysis failed: {result.summary()}")

    def _inconclusive(
        self, handle: RegionHandle, progress: RegionProgress, result: Analysis
    ) -> None:
        self._save(handle, progress)
        raise _Stop(Phase.PAUSED, f"{handle.target.name}: inconclusive: {result.summary()}")

    # -- rollback --------------------------------------------------------------------------------

    def _rollback(self, handle: RegionHandle, progress: RegionProgress, phase: Phase) -> None:
        self._rolling_back = True  # a pause or abort must not interrupt a rollback
        try:
            self._revert(handle, progress, phase)
        finally:
            self._rolling_back = False

    def _revert(self, handle: RegionHandle, progress: RegionProgress, phase: Phase) -> None:
        plan = self.plan
        started = time.time()
        if handle.api.get("deployments", plan.namespace, plan.canary_deployment) is not None:
            handle.api.delete("deployments", plan.namespace, plan.canary_deployment)
        if progress.template_changed and progress.previous is not None:
            handle.api.patch(
                "deployments",
                plan.namespace,
                plan.deployment,
                objects.revert_patch(progress.previous),
                "json",
            )
            progress.template_changed = False
        self._wait_canary_pods(handle, at_most=0)
        self._wait_until(
            lambda: objects.rollout_complete(self._stable(handle)), 300.0, "stable to roll back"
        )
        progress.canary_replicas = 0
        progress.phase = phase
        progress.event("rollback complete", seconds=round(time.time() - started, 3))
        self._save(handle, progress)
        self._emit(handle.target.name, f"rolled back in {time.time() - started:.2f} s")

    def _rollback_promoted(self, phase: Phase) -> None:
        """Earlier waves, newest first."""
        for target in reversed(self.plan.regions[: self.record.wave]):
            handle = self.regions[target.name]
            progress = self._progress(handle)
            if progress.template_changed:
                self._rollback(handle, progress, phase)

    def abort_here(self, reason: str) -> Outcome:
        """Roll back the current wave (and promoted ones if planned) without a live driver."""
        handle = self.regions[self._current_region()]
        self._rollback(handle, self._progress(handle), Phase.ABORTED)
        if self.plan.rollback_promoted:
            self._rollback_promoted(Phase.ABORTED)
        self._finish(Phase.ABORTED, reason)
        return Outcome(self.record.phase, self.record.reason, self.report())

    def undo(self) -> Outcome:
        """Every touched region back to its previous template, in reverse wave order."""
        for target in reversed(self.plan.regions):
            handle = self.regions[target.name]
            progress = self._progress(handle)
            if progress.phase == Phase.PENDING and not progress.template_changed:
                continue
            self._rollback(handle, progress, Phase.UNDONE)
        self._finish(Phase.UNDONE, "every region reverted to its previous version")
        return Outcome(self.record.phase, self.record.reason, self.report())

    # -- waiting, with control and heartbeat ---------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._tick()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.poll_s, left))

    def _wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """``opsctl.poll.wait_until`` with the driver's sleep, so control and heartbeat keep
        being served while it waits; a timeout is a CheckFailed."""
        try:
            wait_until(what, check, timeout=timeout, interval=self.poll_s, sleep=self._sleep)
        except WaitTimeout:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}") from None

    def _tick(self) -> None:
        """Heartbeat, and obey pause/abort written by any machine."""
        if self._owner is None:
            return
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_S:
            self._owner.heartbeat = time.time()
            self.record.owner = vars(self._owner)
            self._save_record()
        if self._rolling_back or now - self._last_control < CONTROL_POLL_S:
            return
        self._last_control = now
        desired, by = self.lead.control(self.plan.id)
        if desired is Desired.PAUSE:
            raise _Stop(Phase.PAUSED, f"paused by {by}")
        if desired is Desired.ABORT:
            handle = self.regions[self._current_region()]
            self._rollback(handle, self._progress(handle), Phase.ABORTED)
            if self.plan.rollback_promoted:
                self._rollback_promoted(Phase.ABORTED)
            raise _Stop(Phase.ABORTED, f"aborted by {by}")

    def _wait_ready(
        self, handle: RegionHandle, progress: RegionProgress, name: str, replicas: int
    ) -> None:
        def ready() -> bool:
            found = handle.api.get("deployments", self.plan.namespace, name)
            return found is not None and objects.ready_replicas(found) >= replicas

        try:
            self._wait_until(ready, self.plan.ready_timeout_s, f"{name} to have {replicas} ready")
        except CheckFailed as error:
            self._rollback(handle, progress, Phase.ROLLED_BACK)
            raise _Stop(Phase.ROLLED_BACK, f"{handle.target.name}: {error.message}") from None

    def _wait_rolled_out(self, handle: RegionHandle, progress: RegionProgress) -> None:
        """Until the Deployment finished; abort when the reconnects exceed the budget."""
        plan = self.plan
        timeout = plan.ready_timeout_s + handle.target.drain_window_s * max(
            1, progress.stable_replicas
        )
        last_check = 0.0

        def rolled_out() -> bool:
            nonlocal last_check
            if objects.rollout_complete(self._stable(handle)):
                return True
            if time.monotonic() - last_check >= min(plan.interval_s, 5.0):
                last_check = time.monotonic()
                self._check_reconnects(handle, progress)
            return False

        try:
            wait_until(
                f"{plan.deployment} to finish its update",
                rolled_out,
                timeout=timeout,
                interval=self.poll_s,
                sleep=self._sleep,
            )
        except WaitTimeout:
            self._rollback(handle, progress, Phase.ROLLED_BACK)
            raise _Stop(
                Phase.ROLLED_BACK, f"{handle.target.name}: update did not finish in time"
            ) from None

    def _check_reconnects(self, handle: RegionHandle, progress: RegionProgress) -> None:
        """Abort (revert the region, exit 1) when the reconnects the rollout causes exceed the
        spec's budget. Gateways only: dispatchers hold no client connections."""
        plan = self.plan
        if plan.component != "gateway" or handle.metrics is None:
            return
        try:
            rate = reconnect_rate(handle.metrics, plan)
        except MetricsError:
            return  # Prometheus hiccup: the next check decides
        if rate <= plan.reconnect_budget:
            return
        progress.event("reconnect budget exceeded", rate=round(rate, 3))
        self._rollback(handle, progress, Phase.ABORTED)
        raise _Stop(
            Phase.ABORTED,
            f"{handle.target.name}: measured reconnect rate {rate:.1f}/s exceeds the reconnect "
            f"budget of {plan.reconnect_budget}/s (reconnectBudget.reconnectsPerSecond); "
            "region reverted",
        )

    def _wait_drained(
        self, handle: RegionHandle, progress: RegionProgress, selector: str, what: str
    ) -> None:
        """Until the pods' connection gauge is under the threshold, or the region's drain
        window ends; the reconnect budget is checked meanwhile, since this is when clients
        reconnect."""
        if self.plan.component != "gateway" or handle.metrics is None:
            return
        metrics, window = handle.metrics, handle.target.drain_window_s

        def drained() -> bool:
            self._check_reconnects(handle, progress)
            try:
                left = connections(metrics, selector)
            except MetricsError:
                left = 0.0
            return left < self.plan.drain_threshold

        try:
            wait_until(
                f"{what} to drain",
                drained,
                timeout=window,
                interval=min(1.0, window),
                sleep=self._sleep,
            )
        except WaitTimeout:
            self._emit(handle.target.name, f"{what}: drain window ended with connections left")

    # -- cluster helpers -----------------------------------------------------------------------

    def _stable(self, handle: RegionHandle) -> dict[str, Any]:
        found = handle.api.get("deployments", self.plan.namespace, self.plan.deployment)
        if found is None:
            raise CheckFailed(
                f"{handle.target.context}: deployment {self.plan.namespace}/"
                f"{self.plan.deployment} disappeared during the rollout"
            )
        return found

    def _ensure_canary(self, handle: RegionHandle, replicas: int) -> None:
        plan = self.plan
        canary = handle.api.get("deployments", plan.namespace, plan.canary_deployment)
        if canary is None:
            body = objects.canary_deployment(
                self._stable(handle),
                name=plan.canary_deployment,
                image=plan.image,
                container=plan.container,
                rollout_id=plan.id,
            )
            handle.api.create("deployments", plan.namespace, body)
        if canary is None or int(canary["spec"].get("replicas", 0)) != replicas:
            handle.api.patch(
                "deployments",
                plan.namespace,
                plan.canary_deployment,
                objects.scale_patch(replicas),
                "strategic",
            )

    def _wait_canary_pods(self, handle: RegionHandle, *, at_most: int) -> None:
        self._wait_until(
            lambda: len(self._canary_pods(handle)) <= at_most, 120.0, f"<= {at_most} canary pods"
        )

    def _canary_pods(self, handle: RegionHandle) -> list[str]:
        """Canary pods not yet terminating."""
        pods = handle.api.list("pods", self.plan.namespace, f"{objects.TRACK_LABEL}=canary")
        return [
            str(pod["metadata"]["name"])
            for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            and str(pod["metadata"]["name"]).startswith(self.plan.canary_deployment + "-")
        ]

    # -- state ---------------------------------------------------------------------------------

    def _progress(self, handle: RegionHandle) -> RegionProgress:
        progress = handle.store.region()
        if progress is None or progress.rollout_id != self.plan.id:
            return RegionProgress(rollout_id=self.plan.id, region=handle.target.name)
        return progress

    def _save(self, handle: RegionHandle, progress: RegionProgress) -> None:
        progress.updated_at = now_iso()
        handle.store.write(REGION_KEY, progress.to_json())

    def _note(self, handle: RegionHandle, progress: RegionProgress, message: str) -> None:
        progress.event(message)
        self._save(handle, progress)
        self._emit(handle.target.name, message)

    def _save_record(self) -> None:
        self._last_beat = time.monotonic()
        self.lead.write(ROLLOUT_KEY, self.record.to_json())

    def _emit(self, region: str, message: str) -> None:
        self.on_event(region, message)

    def _current_region(self) -> str:
        index = min(self.record.wave, len(self.plan.regions) - 1)
        return self.plan.regions[index].name

    def _refuse_if_in_flight(self, handle: RegionHandle) -> None:
        documents = handle.store.read()
        record = documents.get(ROLLOUT_KEY)
        if isinstance(record, dict) and record.get("phase") not in TERMINAL_PHASES:
            rollout = RolloutRecord.from_json(record)
            raise UserInputError(
                f"{handle.target.name}: rollout {rollout.id} is {rollout.phase}",
                hint="resume, abort or undo it first (opsctl rollout status shows it)",
            )
        region = documents.get(REGION_KEY)
        if isinstance(region, dict) and region.get("phase") not in (*REGION_FINISHED_PHASES, None):
            lead_phase = _lead_phase_for(self, str(region.get("rollout_id")))
            if lead_phase not in TERMINAL_PHASES:
                raise UserInputError(
                    f"{handle.target.name}: rollout {region.get('rollout_id')} is still in "
                    f"phase {region.get('phase')} here",
                    hint="resume, abort or undo it first",
                )

    def report(self) -> dict[str, Any]:
        regions = []
        for target in self.plan.regions:
            try:
                progress = self.regions[target.name].store.region()
            except KubeError as error:
                regions.append({"region": target.name, "error": error.message})
                continue
            regions.append(region_report(self.plan, target.name, progress))
        return {
            "id": self.plan.id,
            "phase": self.record.phase,
            "reason": self.record.reason,
            "wave": self.record.wave,
            "component": self.plan.component,
            "image": self.plan.image,
            "strategy": self.plan.strategy,
            "steps": list(self.plan.steps),
            "startedAt": self.record.started_at,
            "finishedAt": self.record.finished_at,
            "owner": self.record.owner,
            "regions": regions,
        }


def region_report(
    plan: RolloutPlan, region: str, progress: RegionProgress | None
) -> dict[str, Any]:
    if progress is None or progress.rollout_id != plan.id:
        return {"region": region, "phase": UNKNOWN_REGION}
    last = progress.analyses[-1] if progress.analyses else None
    step = min(progress.step, len(plan.steps) - 1)
    return {
        "region": region,
        "phase": progress.phase,
        "step": progress.step + 1,
        "weight": plan.steps[step],
        "canaryReplicas": progress.canary_replicas,
        "stableReplicas": progress.stable_replicas,
        "failures": progress.failures,
        "previousImage": progress.previous_image,
        "lastAnalysis": last,
        "analyses": len(progress.analyses),
        "events": progress.events[-5:],
    }


def _summary(record: RolloutRecord) -> dict[str, Any]:
    plan = record.plan
    return {
        "id": record.id,
        "phase": record.phase,
        "reason": record.reason,
        "image": plan.get("image"),
        "component": plan.get("component"),
        "strategy": plan.get("strategy"),
        "regions": [region.get("name") for region in plan.get("regions", [])],
        "startedAt": record.started_at,
        "finishedAt": record.finished_at,
    }


def _lead_phase_for(driver: Driver, rollout_id: str) -> str:
    for handle in driver.regions.values():
        record = handle.store.read().get(ROLLOUT_KEY)
        if isinstance(record, dict) and record.get("plan", {}).get("id") == rollout_id:
            return str(record.get("phase"))
    return Phase.SUCCEEDED  # its lead is gone or outside this plan: treat as finished


def _current_hash(handle: RegionHandle, plan: RolloutPlan, stable: dict[str, Any]) -> str:
    """pod-template-hash of the stable Deployment's current ReplicaSet (for its old pods)."""
    revision = (stable["metadata"].get("annotations") or {}).get(
        "deployment.kubernetes.io/revision"
    )
    labels = stable["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    for replicaset in handle.api.list("replicasets", plan.namespace, selector):
        meta = replicaset["metadata"]
        owners = meta.get("ownerReferences") or []
        if not any(owner.get("name") == plan.deployment for owner in owners):
            continue
        if (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision") == revision:
            return str((meta.get("labels") or {}).get("pod-template-hash", ""))
    return ""


def summary_of(record: RolloutRecord) -> dict[str, Any]:
    return _summary(record)


__all__ = ["STALE_AFTER_S", "Driver", "Outcome", "RegionHandle", "region_report", "summary_of"]
