"""Capacity search: step load, then binary search on concurrent users, until an SLO breaks.

Every step is its own short run: ramp and warm up, settle, then measure (delivery latency is
only counted in the measurement window). The knee is the most users that still met every SLO
(the target's stack's, or the profile's override: opsctl/loadtest/slo.py);
the plan divides a stack's peak users by the per-pod figure, less the headroom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl import console
from opsctl.errors import UserInputError
from opsctl.loadtest.profiles import Capacity, Profile, pods_needed
from opsctl.loadtest.runner import RunOptions, new_run_dir, run_locust
from opsctl.loadtest.slo import AppliedSlo, apply_slo
from opsctl.loadtest.targets import Target, check_reachable
from opsctl.loadtest.verdict import Status, judge

if TYPE_CHECKING:
    from rich.console import Console

    from opsctl.spec import StackSpec


@dataclass(frozen=True)
class Step:
    users: int
    status: str
    p99_ms: float | None
    msgs_per_s: float
    failed_checks: tuple[str, ...]
    out_dir: str


@dataclass
class CapacityResult:
    profile: str
    gateways: int
    headroom_pct: float
    slo_source: str  # which SLOs the knee is at: "stack prod SLOs" or the profile's override
    steps: list[Step] = field(default_factory=list)
    knee_users: int | None = None
    first_breach_users: int | None = None
    generator_limited: bool = False

    @property
    def users_per_pod(self) -> float | None:
        return None if self.knee_users is None else self.knee_users / max(self.gateways, 1)

    @property
    def safe_users(self) -> int | None:
        if self.knee_users is None:
            return None
        return int(self.knee_users * (1 - self.headroom_pct / 100))

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "gateways": self.gateways,
            "headroom_pct": self.headroom_pct,
            "slo_source": self.slo_source,
            "knee_users": self.knee_users,
            "safe_users": self.safe_users,
            "first_breach_users": self.first_breach_users,
            "users_per_pod": self.users_per_pod,
            "generator_limited": self.generator_limited,
            "steps": [asdict(step) for step in self.steps],
        }


def _settings(profile: Profile) -> Capacity:
    if profile.capacity is None:
        raise UserInputError(
            f"profile '{profile.name}' has no 'capacity' section",
            hint="use --profile capacity or add start_users/max_users/... to the profile",
        )
    return profile.capacity


# One step's run: (users, sending window, measure from, out dir) -> the run's summary.
StepRun = Callable[[int, float, float, Path], dict[str, Any]]


def local_steps(profile: Profile, profile_file: Path, target: Target, workers: int) -> StepRun:
    """Each step as Locust processes on this machine."""

    def run(users: int, duration_s: float, measure_from_s: float, out_dir: Path) -> dict[str, Any]:
        options = RunOptions(
            profile=profile,
            profile_file=profile_file,
            target=target,
            workers=workers,
            out_dir=out_dir,
            users=users,
            duration_s=duration_s,
            worker_env=[],
        )
        extra = {"LOADTEST_MEASURE_FROM_S": str(measure_from_s)}
        return run_locust(options, extra_env=extra).summary

    return run


def run_step(profile: Profile, *, users: int, base: Path, slo: AppliedSlo, run: StepRun) -> Step:
    cap = _settings(profile)
    out_dir = base / f"step-{users:06d}"
    measure_from = cap.warmup_s + cap.settle_s
    summary = run(users, measure_from + cap.measure_s, measure_from, out_dir)
    verdict = judge(summary, slo)
    measured = [row["msgs_per_s"] for row in summary["timeline"] if row["t"] >= measure_from]
    return Step(
        users=users,
        status=verdict.status.value,
        p99_ms=summary["delivery"].get("p99_ms"),
        msgs_per_s=round(sum(measured) / len(measured), 1) if measured else 0.0,
        failed_checks=tuple(c.name for c in verdict.checks if c.status is not Status.passed),
        out_dir=str(out_dir),
    )


def search(
    profile: Profile,
    profile_file: Path,
    target: Target,
    *,
    workers: int = 1,
    out_dir: Path | None = None,
    steps: StepRun | None = None,
) -> CapacityResult:
    """Step, then search. ``steps`` runs each step (default: locally, after checking that the
    target answers; on a cluster, opsctl/loadtest/oncluster.py's ``cluster_steps``)."""
    cap = _settings(profile)
    slo = apply_slo(profile, target.stack_slos(), profile_file)
    if steps is None:
        check_reachable(target)
        steps = local_steps(profile, profile_file, target, workers)
    base = out_dir or new_run_dir(profile=f"{profile.name}-capacity")
    base.mkdir(parents=True, exist_ok=True)
    result = CapacityResult(profile.name, target.gateways, cap.headroom_pct, slo.source)

    def step(users: int) -> bool:
        console.info(f"step: {users} users ...")
        outcome = run_step(profile, users=users, base=base, slo=slo, run=steps)
        result.steps.append(outcome)
        breached = ", ".join(outcome.failed_checks) or "-"
        console.info(
            f"  {users} users: {outcome.status} (p99 {outcome.p99_ms} ms,"
            f" {outcome.msgs_per_s} msg/s; not passed: {breached})"
        )
        if outcome.status == Status.unreliable.value:
            result.generator_limited = True
        return outcome.status == Status.passed.value

    users = cap.start_users
    passed: int | None = None
    breach: int | None = None
    while users <= cap.max_users:
        if step(users):
            passed = users
            users = max(users + 1, math.ceil(users * cap.step_factor))
        else:
            breach = users
            break
    if breach is not None and passed is not None:
        low, high = passed, breach
        for _ in range(cap.search_steps):
            if high - low <= 1:
                break
            middle = (low + high) // 2
            if step(middle):
                low = middle
            else:
                high = middle
        passed, breach = low, high
    result.knee_users = passed
    result.first_breach_users = breach
    return result


def plan_for_stack(spec: StackSpec, result: CapacityResult) -> list[dict[str, Any]]:
    """Gateway pods per region for its peak users, from the measured per-pod figure."""
    per_pod = result.users_per_pod
    rows = []
    for region in spec.regions:
        pods = (
            pods_needed(region.peak_concurrent_users, per_pod, result.headroom_pct)
            if per_pod
            else None
        )
        rows.append(
            {
                "stack": spec.environment,
                "region": region.name,
                "peak_users": region.peak_concurrent_users,
                "measured_users_per_pod": per_pod,
                "pods_needed": pods,
                "spec_replicas": region.gateway.replicas,
                "spec_max_replicas": region.gateway.max_replicas,
                "spec_connections_per_pod": region.gateway.connections_per_pod,
                "fits_max_replicas": pods is not None and pods <= region.gateway.max_replicas,
            }
        )
    return rows


def render_plan(out: Console, result: CapacityResult, plan: list[dict[str, Any]]) -> None:
    from rich.table import Table

    steps = Table(title=f"capacity search ({result.profile})", caption=result.slo_source)
    for column in ("users", "status", "p99 ms", "msg/s", "not passed"):
        steps.add_column(column)
    for step in result.steps:
        steps.add_row(
            str(step.users),
            step.status,
            str(step.p99_ms),
            str(step.msgs_per_s),
            ", ".join(step.failed_checks),
        )
    out.print(steps)
    if result.knee_users is None:
        out.print("knee: not found - even the first step breached an SLO")
    else:
        bound = (
            " (lower bound: nothing breached up to max_users)"
            if not result.first_breach_users
            else ""
        )
        if result.generator_limited:
            bound += " (the load generator saturated first: a lower bound)"
        out.print(
            f"knee: {result.knee_users} users at {result.slo_source}{bound}; "
            f"with {result.headroom_pct:g}% "
            f"headroom: {result.safe_users} users; {result.users_per_pod:g} users per gateway "
            f"pod ({result.gateways} pods measured)"
        )
    table = Table(title="capacity plan: gateway pods per region")
    for column in ("region", "peak users", "users/pod (measured)", "pods needed", "spec", "fits"):
        table.add_column(column)
    for row in plan:
        table.add_row(
            f"{row['stack']}/{row['region']}",
            str(row["peak_users"]),
            f"{row['measured_users_per_pod']:g}" if row["measured_users_per_pod"] else "n/a",
            str(row["pods_needed"]) if row["pods_needed"] is not None else "n/a",
            f"{row['spec_replicas']}..{row['spec_max_replicas']} x "
            f"{row['spec_connections_per_pod']} conns",
            "yes" if row["fits_max_replicas"] else "NO",
        )
    out.print(table)
