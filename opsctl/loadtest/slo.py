"""Which SLOs a load test is judged against: the stack spec's, or a profile's named override.

The stack spec (``slos`` in infra/Pulumi.<stack>.yaml) is the one home of the SLO numbers. A
verdict reads them from the stack under load (the target's: the region's stack, the local
stack's spec, or the stack named for a bare ``--target`` URL):

    delivery p99      <= slos.deliveryLatencyP99Ms
    connect success   >= slos.connectSuccess
    error ratio       <= 1 - slos.availability / 100   (failed requests of every kind)

Lost, duplicated and out-of-order messages must be 0: the protocol guarantees them; they are
not SLOs and have no stack field.

A profile's ``slo:`` block overrides single thresholds by name, for a reason its comment gives
(smoke's looser latency on a loaded laptop); delivery p50 and p95 bounds exist only as
overrides. The verdict says which applied, in its table, JSON and report: ``stack prod SLOs``,
or ``profile smoke override: delivery p99 <= 2500 ms (stack local: 250 ms), ...; otherwise
stack local SLOs``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from opsctl.errors import InputProblem, InvalidInputFile
from opsctl.loadtest.profiles import WHAT, Profile, SloOverride
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.settings import DEFAULT_STACK
from opsctl.spec import Slos, load_stack, read_yaml_model


@dataclass(frozen=True)
class StackSlos:
    """A stack's SLOs, with the stack's name to show where they came from."""

    stack: str
    slos: Slos
    # The stack's reconnect budget (cluster-wide reconnects/s): what a storm is judged against.
    reconnects_per_second: int | None = None

    @classmethod
    def load(cls, infra_dir: Path, stack: str) -> StackSlos:
        spec = load_stack(infra_dir, stack)
        return cls(stack, spec.slos, spec.reconnect_budget.reconnects_per_second)

    @classmethod
    def default(cls) -> StackSlos:
        """The default stack's (``local``), for a target that names no stack."""
        return cls.load(DEFAULT_INFRA_DIR, DEFAULT_STACK)


@dataclass(frozen=True)
class Thresholds:
    """Every threshold a verdict checks; p50 and p95 only when an override sets them."""

    delivery_p99_ms: float
    connect_success_pct: float
    max_error_ratio: float
    delivery_p50_ms: float | None = None
    delivery_p95_ms: float | None = None
    max_lost: int = 0
    max_duplicated: int = 0
    max_out_of_order: int = 0
    reconnects_per_second: int | None = None  # the stack's reconnect budget (storms)

    @classmethod
    def of_stack(cls, slos: Slos, reconnects_per_second: int | None = None) -> Thresholds:
        return cls(
            delivery_p99_ms=float(slos.delivery_latency_p99_ms),
            connect_success_pct=slos.connect_success,
            # 99.95 % available: at most 0.0005 of requests may fail (rounded off float noise).
            max_error_ratio=round((100.0 - slos.availability) / 100.0, 12),
            reconnects_per_second=reconnects_per_second,
        )


_LABELS = {
    "delivery_p50_ms": ("delivery p50 <=", " ms"),
    "delivery_p95_ms": ("delivery p95 <=", " ms"),
    "delivery_p99_ms": ("delivery p99 <=", " ms"),
    "connect_success_pct": ("connect success >=", " %"),
    "max_error_ratio": ("error ratio <=", ""),
    "max_lost": ("lost <=", ""),
    "max_duplicated": ("duplicated <=", ""),
    "max_out_of_order": ("out-of-order <=", ""),
}


def describe(name: str, value: float | None) -> str:
    """``delivery_p99_ms``, 250 -> ``delivery p99 <= 250 ms``."""
    return f"{_LABELS[name][0]} {_bare(name, value)}"


_FROM_STACK = ("delivery_p99_ms", "connect_success_pct", "max_error_ratio")


@dataclass(frozen=True)
class AppliedSlo:
    """The thresholds a run is judged against and, in words, where they came from."""

    thresholds: Thresholds
    stack: str
    stack_thresholds: Thresholds
    profile: str
    overridden: tuple[str, ...] = ()  # the fields the profile's slo: block set

    @property
    def source(self) -> str:
        if not self.overridden:
            return f"stack {self.stack} SLOs"
        changes = ", ".join(self._change(name) for name in self.overridden)
        return f"profile {self.profile} override: {changes}; otherwise stack {self.stack} SLOs"

    def _change(self, name: str) -> str:
        text = describe(name, getattr(self.thresholds, name))
        if name in _FROM_STACK:
            stack_value = _bare(name, getattr(self.stack_thresholds, name))
            return f"{text} (stack {self.stack}: {stack_value})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "stack": self.stack,
            "overridden": list(self.overridden),
            "thresholds": asdict(self.thresholds),
        }


def _bare(name: str, value: float | None) -> str:
    unit = _LABELS[name][1]
    return "none" if value is None else f"{value:g}{unit}"


def apply_slo(profile: Profile, stack: StackSlos, profile_file: Path | str) -> AppliedSlo:
    """The stack's SLOs with the profile's override applied, checked for sense.

    An override that leaves the percentiles out of order against the stack's (p95 above the
    stack's p99, say) can never pass: that is bad input (exit 2), named by file and field.
    """
    base = Thresholds.of_stack(stack.slos, stack.reconnects_per_second)
    override: SloOverride | None = profile.slo
    overridden: tuple[str, ...] = ()
    effective = base
    if override is not None:
        changes = override.model_dump(exclude_none=True)
        overridden = tuple(name for name in _LABELS if name in changes)
        effective = replace(base, **changes)
    problems = _unmeetable(effective, overridden, stack.stack)
    if problems:
        _report(profile_file, problems)
    return AppliedSlo(effective, stack.stack, base, profile.name, overridden)


def _unmeetable(
    thresholds: Thresholds, overridden: tuple[str, ...], stack: str
) -> list[tuple[str, str]]:
    """(field, problem) for every overridden percentile above a higher one in effect."""
    order = ("delivery_p50_ms", "delivery_p95_ms", "delivery_p99_ms")
    problems = []
    for low_index, low in enumerate(order):
        low_value = getattr(thresholds, low)
        if low not in overridden or low_value is None:
            continue
        for high in order[low_index + 1 :]:
            high_value = getattr(thresholds, high)
            if high_value is not None and low_value > high_value:
                whose = "the override's" if high in overridden else f"stack {stack}'s"
                problems.append(
                    (
                        low,
                        f"{low_value:g} ms is above {whose} {describe(high, high_value)}: "
                        f"cannot be met; lower it, or override {high} too",
                    )
                )
                break
    return problems


def _report(profile_file: Path | str, problems: list[tuple[str, str]]) -> NoReturn:
    """Raise the problems as the profile file's, located at their fields' lines."""
    findings = [(("slo", name), message) for name, message in problems]
    shown = str(profile_file)
    # Read the file again through the shared loader, only to locate the fields.
    read_yaml_model(Profile, Path(profile_file), what=WHAT, shown=shown, check=lambda _: findings)
    problem_list = [InputProblem(shown, f"slo.{name}", message) for name, message in problems]
    raise InvalidInputFile(WHAT, shown, problem_list)  # the file changed under us: no lines
