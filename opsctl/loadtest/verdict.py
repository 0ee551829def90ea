"""The verdict: a run's summary against the SLO thresholds that apply (opsctl/loadtest/slo.py:
the stack's, or a profile's named override), saying which they were.

pass -> exit 0; an SLO breached -> exit 1; a saturated generator makes the latency checks
unreliable, and an unreliable run is never a pass (exit 3, inconclusive).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from opsctl.errors import ExitCode
from opsctl.loadtest.slo import AppliedSlo


class Status(StrEnum):
    passed = "pass"
    failed = "fail"
    unreliable = "unreliable"


@dataclass(frozen=True)
class Check:
    name: str
    threshold: str
    measured: str
    status: Status


@dataclass(frozen=True)
class Verdict:
    status: Status
    checks: tuple[Check, ...]
    generator_saturated: bool
    slo: AppliedSlo

    @property
    def slo_source(self) -> str:
        """Which SLOs applied: "stack prod SLOs" or "profile smoke override: ..."."""
        return self.slo.source

    @property
    def exit_code(self) -> ExitCode:
        return {
            Status.passed: ExitCode.OK,
            Status.failed: ExitCode.FAILED,
            Status.unreliable: ExitCode.INCONCLUSIVE,
        }[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "exit_code": int(self.exit_code),
            "generator_saturated": self.generator_saturated,
            "slo_source": self.slo_source,
            "slo": self.slo.as_dict(),
            "checks": [asdict(check) for check in self.checks],
        }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:g}{unit}"


def storm_allowance_ms(dropped: int, reconnects_per_second: int) -> float:
    """How long ``dropped`` users may take to be back: the stack absorbing them at its
    reconnect budget, plus the longest first backoff a client waits before it even tries
    (loadtests/session.py ``backoff_s(0)``: 0.2 s with +50 % jitter)."""
    return 1000.0 * dropped / reconnects_per_second + FIRST_BACKOFF_MAX_MS


FIRST_BACKOFF_MAX_MS = 300.0


def storm_checks(storms: list[dict[str, Any]], slo: Any) -> list[Check]:
    checks = []
    for storm in storms:
        name = f"storm {storm['index']} at {storm['at_s']:g} s ({storm['share_pct']:g} %)"
        success = storm.get("connect_success_pct")
        checks.append(
            Check(
                f"{name}: connect success",
                f">= {slo.connect_success_pct:g} %",
                _fmt(success, " %"),
                Status.passed
                if success is not None and success >= slo.connect_success_pct
                else Status.failed,
            )
        )
        back = storm.get("all_back_ms")
        dropped = int(storm.get("dropped", 0))
        budget = slo.reconnects_per_second
        allowed = storm_allowance_ms(dropped, budget) if budget else None
        measured = (
            f"{back:g} ms for {dropped}"
            if back is not None
            else f"{storm.get('reconnected', 0)} of {dropped} back"
        )
        ok = back is not None and dropped > 0 and (allowed is None or back <= allowed)
        checks.append(
            Check(
                f"{name}: everyone back",
                f"<= {allowed:.0f} ms ({budget}/s budget)" if allowed else "all reconnect",
                measured,
                Status.passed if ok else Status.failed,
            )
        )
    return checks


def judge(summary: dict[str, Any], applied: AppliedSlo) -> Verdict:
    slo = applied.thresholds
    saturated = bool(summary.get("generator_saturated"))
    delivery = summary.get("delivery", {})
    checks: list[Check] = []
    for key, limit in (
        ("p50", slo.delivery_p50_ms),
        ("p95", slo.delivery_p95_ms),
        ("p99", slo.delivery_p99_ms),
    ):
        if limit is None:
            continue  # p50 and p95 bounds exist only as a profile's override
        measured = delivery.get(f"{key}_ms")
        if measured is None:
            status = Status.failed  # nothing was delivered: nothing meets a latency SLO
        elif measured > limit:
            status = Status.failed
        else:
            status = Status.unreliable if saturated else Status.passed
        checks.append(Check(f"delivery {key}", f"<= {limit:g} ms", _fmt(measured, " ms"), status))
    connect = summary.get("connect", {})
    attempts, failures = connect.get("attempts", 0), connect.get("failures", 0)
    success = 100.0 * (attempts - failures) / attempts if attempts else None
    checks.append(
        Check(
            "connect success",
            f">= {slo.connect_success_pct:g} %",
            _fmt(None if success is None else round(success, 3), " %"),
            Status.passed
            if success is not None and success >= slo.connect_success_pct
            else Status.failed,
        )
    )
    counters = summary.get("counters", {})
    for name, key, limit in (
        ("lost messages", "lost", slo.max_lost),
        ("duplicated messages", "duplicated", slo.max_duplicated),
        ("out-of-order messages", "out_of_order", slo.max_out_of_order),
    ):
        count = int(counters.get(key, 0))
        checks.append(
            Check(
                name,
                f"<= {limit}",
                str(count),
                Status.passed if count <= limit else Status.failed,
            )
        )
    requests = summary.get("requests", {})
    total, failed = requests.get("total", 0), requests.get("failures", 0)
    ratio = failed / total if total else None
    checks.append(
        Check(
            "error ratio",
            f"<= {slo.max_error_ratio:g}",
            _fmt(None if ratio is None else round(ratio, 5)),
            Status.passed if ratio is not None and ratio <= slo.max_error_ratio else Status.failed,
        )
    )
    checks += storm_checks(summary.get("storms", []), slo)
    checks.append(
        Check(
            "generator healthy",
            "cpu and hub lag under limits",
            "saturated" if saturated else "ok",
            Status.unreliable if saturated else Status.passed,
        )
    )
    if any(c.status is Status.failed for c in checks):
        status = Status.failed
    elif saturated:
        status = Status.unreliable
    else:
        status = Status.passed
    return Verdict(status=status, checks=tuple(checks), generator_saturated=saturated, slo=applied)
