"""Rollout state in the cluster: one ConfigMap per region, so any machine can read or steer it.

ConfigMap ``opsctl-rollout-<component>`` in the release namespace holds JSON documents:

* ``region.json`` (every region): this region's progress, previous template, analyses, events;
* ``rollout.json`` (the lead region, the plan's first): the plan, overall phase, current wave,
  the driving process and its heartbeat;
* ``control.json`` (lead): what people asked for (run, pause, abort); only commands write it;
* ``history.json`` (lead): summaries of earlier rollouts.

Each key is written with a merge patch of that key alone, so the driver and the control
commands never overwrite each other's documents.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from opsctl.errors import CheckFailed, KubeError
from opsctl.rollout._kube import KubeApi
from opsctl.rollout._objects import MANAGED_BY

REGION_KEY = "region.json"
ROLLOUT_KEY = "rollout.json"
CONTROL_KEY = "control.json"
HISTORY_KEY = "history.json"
MAX_ANALYSES = 30
MAX_EVENTS = 60
MAX_HISTORY = 20


class Phase(StrEnum):
    """Every phase of a rollout (``rollout.json``) and of one region (``region.json``).

    The values are what the ConfigMaps hold; a member equals its string, so reports and
    comparisons with plain strings keep working.
    """

    # A region's progress, in order.
    PENDING = "pending"
    CANARY = "canary"
    PROMOTING = "promoting"
    DRAINING = "draining"
    BAKING = "baking"
    DONE = "done"
    # The rollout as a whole, while it runs.
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    # How a rollout, and each region it touched, can end besides succeeding.
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    UNDONE = "undone"


# How a rollout or region may end when it does not succeed; a region then keeps that phase.
REVERTED_PHASES = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.UNDONE})
# A rollout in one of these is over: nothing resumes, pauses or aborts it.
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, *REVERTED_PHASES})
# A region in one of these has nothing left to do in its rollout.
REGION_FINISHED_PHASES = frozenset({Phase.DONE, *REVERTED_PHASES})
ROLLOUT_PHASES = frozenset({Phase.RUNNING, Phase.PAUSED, Phase.SUCCEEDED, *REVERTED_PHASES})
REGION_PHASES = frozenset(Phase) - {Phase.RUNNING, Phase.PAUSED, Phase.SUCCEEDED}
# What a report says for a region whose state belongs to another rollout (or is missing).
UNKNOWN_REGION = "unknown"


class Desired(StrEnum):
    """What the commands ask the driver for, in ``control.json``."""

    RUN = "run"
    PAUSE = "pause"
    ABORT = "abort"


def _phase(value: Any, allowed: frozenset[Phase], where: str) -> Phase:
    """A stored phase as a member, or a clear refusal (a hand edit, or a newer opsctl)."""
    if isinstance(value, str) and value in allowed:
        return Phase(value)
    raise CheckFailed(
        f"{where}: unknown phase {value!r}",
        hint=f"known: {', '.join(sorted(allowed))}; was it written by a newer opsctl?",
    )


def configmap_name(component: str) -> str:
    return f"opsctl-rollout-{component}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Owner:
    """The process driving a rollout; its heartbeat tells others whether it still lives."""

    host: str
    pid: int
    started: float  # process create time, to tell a reused pid apart
    heartbeat: float = 0.0

    @classmethod
    def me(cls) -> Owner:
        import psutil

        pid = os.getpid()
        return cls(socket.gethostname(), pid, psutil.Process(pid).create_time(), time.time())

    def alive(self, stale_after: float) -> bool:
        if self.host == socket.gethostname():
            import psutil

            try:
                return bool(psutil.Process(self.pid).create_time() == self.started)
            except psutil.Error:
                return False
        return time.time() - self.heartbeat < stale_after

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"


@dataclass
class _Document:
    """A dataclass kept as one JSON document of the state ConfigMap.

    Reading drops keys it does not know (a newer opsctl may write more); each document checks
    its phase in ``__post_init__``, so a stored phase this opsctl does not know is refused.
    """

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class RegionProgress(_Document):
    """One region's part of a rollout."""

    rollout_id: str
    region: str
    phase: Phase = Phase.PENDING  # one of REGION_PHASES
    step: int = 0  # index into plan.steps
    failures: int = 0
    canary_replicas: int = 0
    stable_replicas: int = 0
    previous: dict[str, Any] | None = None  # template/strategy/minReadySeconds before the change
    previous_image: str = ""
    previous_hash: str = ""  # pod-template-hash of the stable pods before the change
    template_changed: bool = False
    bake_started: float | None = None
    analyses: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str = field(default_factory=now_iso)

    def event(self, message: str, **data: Any) -> dict[str, Any]:
        entry = {"at": now_iso(), "t": time.time(), "message": message, **data}
        self.events = [*self.events, entry][-MAX_EVENTS:]
        return entry

    def __post_init__(self) -> None:
        self.phase = _phase(self.phase, REGION_PHASES, f"region {self.region} ({REGION_KEY})")


@dataclass
class RolloutRecord(_Document):
    """The overall rollout, kept in the lead region."""

    plan: dict[str, Any]
    phase: Phase = Phase.RUNNING  # one of ROLLOUT_PHASES
    wave: int = 0
    reason: str = ""
    owner: dict[str, Any] | None = None
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None

    @property
    def id(self) -> str:
        return str(self.plan["id"])

    def __post_init__(self) -> None:
        where = f"rollout {self.plan.get('id')} ({ROLLOUT_KEY})"
        self.phase = _phase(self.phase, ROLLOUT_PHASES, where)

    def owner_alive(self, stale_after: float) -> bool:
        return self.owner is not None and Owner(**self.owner).alive(stale_after)


class StateStore:
    """Reads and writes the state ConfigMap of one region."""

    def __init__(self, api: KubeApi, namespace: str, component: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = configmap_name(component)

    def read(self) -> dict[str, Any]:
        """Every JSON document in the ConfigMap ({} when there is none)."""
        found = self.api.get("configmaps", self.namespace, self.name)
        if found is None:
            return {}
        documents: dict[str, Any] = {}
        for key, text in (found.get("data") or {}).items():
            try:
                documents[key] = json.loads(text)
            except ValueError as error:
                raise CheckFailed(
                    f"{self.api.context}: {self.namespace}/{self.name} key {key} is not JSON",
                    hint="delete the key or the ConfigMap if it was edited by hand",
                ) from error
        return documents

    def write(self, key: str, document: Any) -> None:
        data = {key: json.dumps(document, separators=(",", ":"), sort_keys=True)}

        def patch() -> None:
            self.api.patch("configmaps", self.namespace, self.name, {"data": data}, "merge")

        try:
            patch()
        except KubeError as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": MANAGED_BY},
                "data": data,
            }
            try:
                self.api.create("configmaps", self.namespace, body)
            except KubeError as again:
                if again.status != 409:  # someone created it meanwhile: patch theirs
                    raise
                patch()

    def region(self) -> RegionProgress | None:
        data = self.read().get(REGION_KEY)
        return RegionProgress.from_json(data) if isinstance(data, dict) else None

    def rollout(self) -> RolloutRecord | None:
        data = self.read().get(ROLLOUT_KEY)
        return RolloutRecord.from_json(data) if isinstance(data, dict) else None

    def control(self, rollout_id: str) -> tuple[Desired, str]:
        """What was asked of ``rollout_id``, and by whom. A request for another rollout, or
        one this opsctl does not know, asks for nothing (the driver carries on)."""
        data = self.read().get(CONTROL_KEY)
        if not isinstance(data, dict) or data.get("rollout") != rollout_id:
            return Desired.RUN, ""
        try:
            desired = Desired(str(data.get("desired", Desired.RUN)))
        except ValueError:
            desired = Desired.RUN
        return desired, str(data.get("by", "someone"))

    def set_control(self, desired: Desired, rollout_id: str) -> None:
        self.write(
            CONTROL_KEY,
            {
                "desired": desired,
                "rollout": rollout_id,
                "by": Owner.me().describe(),
                "at": now_iso(),
            },
        )

    def history(self) -> list[dict[str, Any]]:
        data = self.read().get(HISTORY_KEY)
        return (
            [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []
        )

    def append_history(self, entry: dict[str, Any]) -> None:
        kept = [old for old in self.history() if old.get("id") != entry.get("id")]
        self.write(HISTORY_KEY, [*kept, entry][-MAX_HISTORY:])
