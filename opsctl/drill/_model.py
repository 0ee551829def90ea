"""What a drill is (a typed definition: its fault, the alerts it must fire, its gates), what a run
measured, and the verdict: pure logic, no I/O, so the gating is unit-tested on its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.errors import ExitCode

if TYPE_CHECKING:
    from opsctl.local import LocalStack

# A run with fewer acknowledged probe messages than this proves nothing (exit 3).
MIN_ACKED = 20
# The stack must be back (healthy, a fresh message delivered everywhere) within this.
MAX_RECOVER_S = 120.0


@dataclass
class DrillContext:
    """What a fault's callables get: the running stack, and a place to keep what inject found
    (component names, counts before) for restore and the drill's own checks."""

    stack: LocalStack
    report_dir: Path
    suffix: str  # unique per run: user ids, group ids and records of this run carry it
    state: dict[str, Any] = field(default_factory=dict)


Action = Callable[[DrillContext], None]


@dataclass(frozen=True)
class Check:
    """One gate's outcome: ``ok`` None when it could not be decided (inconclusive)."""

    name: str
    ok: bool | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ExtraCheck = Callable[[DrillContext], list[Check]]


@dataclass(frozen=True)
class ExpectedAlert:
    """An alert the drill's fault must fire, with the labels it must carry ({gateway} etc. are
    filled from the drill's state when the labels are matched)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, alert_labels: Mapping[str, str], state: Mapping[str, Any]) -> bool:
        if alert_labels.get("alertname") != self.name:
            return False
        return all(
            alert_labels.get(key) == value.format(**state) for key, value in self.labels.items()
        )

    def describe(self, state: Mapping[str, Any] | None = None) -> str:
        if not self.labels:
            return self.name
        shown = ",".join(
            f"{k}={v.format(**state) if state is not None else v}" for k, v in self.labels.items()
        )
        return f"{self.name}{{{shown}}}"


@dataclass(frozen=True)
class Drill:
    """One rehearsal: the fault (inject, then restore), what must page, how it maps onto a
    Kubernetes cluster. ``unavailable`` says why the one-region local stack cannot produce it
    (then inject and restore are None and `drill run` refuses it with exit 2)."""

    name: str
    summary: str
    fault: str  # what inject and restore do, in words
    kubernetes: str  # the same fault on a cluster
    expected_alerts: tuple[ExpectedAlert, ...] = ()
    inject: Action | None = None
    restore: Action | None = None
    holding: Action | None = None  # called every couple of seconds while the fault is held
    # The expected alerts fire only once the fault is over (a restarted dispatcher records the
    # gaps it finds): the hold does not wait for them; the recovery does.
    alerts_after_restore: bool = False
    extra_checks: ExtraCheck | None = None
    unavailable: str | None = None
    max_recover_s: float = MAX_RECOVER_S
    # From the fault in place until the expected alerts' condition holds (a frozen broker is
    # fenced by the controller only after its session times out): added to the hold.
    onset_s: float = 0.0
    min_acked: int = MIN_ACKED
    # Runs on the multi-region local stack (opsctl local up --stack staging) instead of the
    # one-region one, with its own timeline (opsctl/drill/_region.py).
    multi_region: bool = False

    @property
    def available(self) -> bool:
        return self.unavailable is None and self.inject is not None and self.restore is not None

    def listing(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "fault": self.fault,
            "expected_alerts": [a.describe() for a in self.expected_alerts],
            "available": self.available,
            "unavailable": self.unavailable,
            "kubernetes": self.kubernetes,
            "stack": "multi-region" if self.multi_region else "one-region",
        }


@dataclass(frozen=True)
class Accounting:
    """Per-message figures of a run. The probe's are exact (by message id): ``acked`` sends,
    ``delivered`` (an acked message on every member device), ``lost`` (acked, missing on a
    device after the final sync), ``duplicated`` (one message twice on one connection, or under
    two seqs), ``reordered`` (a live seq below one already delivered live on the connection).
    ``load`` has the Locust users' own counters (sequence-based; ``lost`` there is a live-path
    miss that sync repaired, not a lost message)."""

    acked: int
    delivered: int
    lost: int
    duplicated: int
    reordered: int
    unacked: int = 0  # sends never acknowledged (the client may resend them; not lost)
    load: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_duplicated(self) -> int:
        return self.duplicated + int(self.load.get("duplicated", 0))

    @property
    def total_reordered(self) -> int:
        return self.reordered + int(self.load.get("out_of_order", 0))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["load"] = dict(self.load)
        return data


@dataclass(frozen=True)
class AlertSeen:
    """An alert Alertmanager held during the drill."""

    name: str
    labels: Mapping[str, str]
    starts_at: float  # epoch seconds
    before_fault: bool  # already active when the fault was injected

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "starts_at": self.starts_at,
            "before_fault": self.before_fault,
        }


class Status(Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> ExitCode:
        return {
            Status.PASS: ExitCode.OK,
            Status.FAIL: ExitCode.FAILED,
            Status.INCONCLUSIVE: ExitCode.INCONCLUSIVE,
        }[self]


@dataclass(frozen=True)
class Verdict:
    drill: str
    status: Status
    checks: tuple[Check, ...]
    accounting: Accounting
    recover_s: float | None
    alerts: tuple[AlertSeen, ...]
    timeline: Mapping[str, float] = field(default_factory=dict)
    # What a drill measured besides the accounting (region-down: RPO, failover time).
    figures: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "figures": dict(self.figures),
            "drill": self.drill,
            "status": self.status.value,
            "checks": [c.as_dict() for c in self.checks],
            "accounting": self.accounting.as_dict(),
            "recover_s": self.recover_s,
            "alerts_fired": [a.as_dict() for a in self.alerts],
            "timeline": dict(self.timeline),
        }


def alert_checks(
    expected: tuple[ExpectedAlert, ...], seen: tuple[AlertSeen, ...], state: Mapping[str, Any]
) -> list[Check]:
    """Each expected alert fired after the fault: passes. Never seen: fails. Seen only as
    already active before the fault: undecided (the drill cannot tell that its fault fired it)."""
    checks = []
    for alert in expected:
        matching = [a for a in seen if alert.matches({"alertname": a.name, **a.labels}, state)]
        name = f"alert {alert.describe(state)}"
        if any(not a.before_fault for a in matching):
            checks.append(Check(name, True, "fired"))
        elif matching:
            checks.append(
                Check(name, None, "already firing before the fault: cannot tell it fired again")
            )
        else:
            checks.append(Check(name, False, "did not fire"))
    return checks


def judge(
    drill: Drill,
    accounting: Accounting,
    *,
    recover_s: float | None,
    seen: tuple[AlertSeen, ...],
    state: Mapping[str, Any],
    extra: list[Check] | None = None,
    timeline: Mapping[str, float] | None = None,
    figures: Mapping[str, Any] | None = None,
) -> Verdict:
    """The gates: no acknowledged message lost, none duplicated, the stack recovered in time,
    every expected alert fired, the drill's own checks. Any failed gate fails the drill; else
    an undecided one (too little load to judge, an alert already firing) makes it
    inconclusive."""
    checks = [
        Check(
            "enough load",
            accounting.acked >= drill.min_acked or None,
            f"{accounting.acked} probe messages acked (at least {drill.min_acked} needed)",
        ),
        Check(
            "no acked message lost",
            accounting.lost == 0,
            f"{accounting.lost} acked message(s) missing on a device after the final sync",
        ),
        Check(
            "no duplicate to a device",
            accounting.total_duplicated == 0,
            f"{accounting.total_duplicated} duplicated",
        ),
    ]
    if recover_s is None:
        checks.append(Check("recovered", False, f"not within {drill.max_recover_s:.0f} s"))
    else:
        checks.append(
            Check(
                "recovered",
                recover_s <= drill.max_recover_s,
                f"in {recover_s:.1f} s (limit {drill.max_recover_s:.0f} s)",
            )
        )
    checks += alert_checks(drill.expected_alerts, seen, state)
    checks += extra or []
    if any(c.ok is False for c in checks):
        status = Status.FAIL
    elif any(c.ok is None for c in checks):
        status = Status.INCONCLUSIVE
    else:
        status = Status.PASS
    return Verdict(
        drill.name,
        status,
        tuple(checks),
        accounting,
        recover_s,
        seen,
        dict(timeline or {}),
        dict(figures or {}),
    )
