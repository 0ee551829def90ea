"""The engine's event stream, reduced to what opsctl reports: one step per resource, by region.

Pure logic (no Pulumi import at module level), so it is unit-tested on plain events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STACK_GROUP = "(stack)"  # resources outside any region: the stack itself
# Steps that change nothing in a cluster.
QUIET_OPS = frozenset({"same", "read", "refresh", "discard", "discard-replaced"})


@dataclass(frozen=True)
class Step:
    """One engine step on one resource."""

    urn: str
    type: str
    name: str
    op: str
    region: str
    diffs: tuple[str, ...] = ()
    failed: bool = False

    @property
    def changes(self) -> bool:
        return self.op not in QUIET_OPS

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "type": self.type, "name": self.name}
        if self.diffs:
            data["diffs"] = list(self.diffs)
        if self.failed:
            data["failed"] = True
        return data


def urn_parts(urn: str) -> tuple[str, str]:
    """(type, name) of a URN ``urn:pulumi:<stack>::<project>::<parent$type>::<name>``."""
    parts = urn.split("::", 3)
    if len(parts) < 4:
        return "", urn
    return parts[2].rsplit("$", 1)[-1], parts[3]


def region_of(name: str, regions: Iterable[str]) -> str:
    """The region a resource belongs to, from its name (``<region>``, ``<region>/...``,
    ``<region>-...``); the longest region name wins, so ``eu`` never claims ``eu-west/...``."""
    best = ""
    for region in regions:
        matches = name == region or name.startswith((f"{region}/", f"{region}-"))
        if matches and len(region) > len(best):
            best = region
    return best or STACK_GROUP


@dataclass
class StepLog:
    """Collects the steps of one operation, in the order the engine finishes them."""

    regions: tuple[str, ...]
    steps: dict[str, Step] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)

    def record(
        self, urn: str, op: str, diffs: Iterable[str] | None = None, *, failed: bool = False
    ) -> Step:
        typ, name = urn_parts(urn)
        step = Step(
            urn=urn,
            type=typ,
            name=name,
            op=op,
            region=region_of(name, self.regions),
            diffs=tuple(diffs or ()),
            failed=failed,
        )
        self.steps[urn] = step
        return step

    def changed(self) -> list[Step]:
        return [step for step in self.steps.values() if step.changes]

    def drifted(self) -> list[Step]:
        """After a preview refresh: resources whose live object no longer matches the state."""
        return [
            step
            for step in self.steps.values()
            if step.op in ("update", "delete") or (step.op == "refresh" and step.diffs)
        ]

    def by_region(self, steps: Iterable[Step]) -> dict[str, dict[str, Any]]:
        """``{region: {"changes": {op: count}, "resources": [...]}}``, every region listed."""
        grouped: dict[str, dict[str, Any]] = {
            region: {"changes": {}, "resources": []} for region in self.regions
        }
        for step in steps:
            entry = grouped.setdefault(step.region, {"changes": {}, "resources": []})
            entry["changes"][step.op] = entry["changes"].get(step.op, 0) + 1
            entry["resources"].append(step.to_json())
        return grouped


def summary_counts(changes: Mapping[Any, int] | None) -> dict[str, int]:
    """The engine's summary (``{OpType: n}``) as plain ``{op: n}``."""
    return {str(getattr(op, "value", op)): count for op, count in (changes or {}).items()}


def pending(summary: Mapping[str, int]) -> int:
    """How many resources a summary would change."""
    return sum(count for op, count in summary.items() if op not in QUIET_OPS)


def clean_diagnostic(text: str) -> str:
    """An engine diagnostic without the inline runtime's Python traceback (``-v`` shows the
    engine's full output). Empty when nothing is left worth showing."""
    lines: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith(("Traceback (most recent call last)", "grpc._channel.")):
            break
        lines.append(line)
    cleaned = "\n".join(lines).strip()
    if "resource monitor shut down" in cleaned:  # a consequence of an earlier error
        return ""
    return cleaned
