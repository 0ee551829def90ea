"""Suite-wide rules: every test declares exactly one tier, and opsctl runs in-process here."""

from __future__ import annotations

import os
import signal

import pytest

from opsctl.local import _procs
from tests.support import OpsctlRunner

# Session fixtures for real components: the local process stack and the simulated clusters.
pytest_plugins = ["opsctl.local.pytest_plugin", "opsctl.cluster.pytest_plugin"]

TIERS = ("unit", "integration", "e2e")

# Session fixtures that start real processes: (fixture, the fixture that owns the processes,
# xdist group). Each costs a start (15-90 s) and, idle, up to half a core (the multi-region
# stack), so it should run for as short a time as it is needed:
# - its tests run back to back: one xdist group per resource, so under pytest-xdist (`make
#   test`: two workers, --dist loadgroup) they all go to one worker, in collection order, and
#   collection order puts them together for a serial run too;
# - it stops right after the last of them (nextitem no longer uses it), not at session end.
# A test using two resources goes with the first listed, and runs first in its group, so the
# other resource stops early on that worker too.
SESSION_RESOURCES = (
    ("multi_region_stack", "multi_region_stack", "multi-region-stack"),
    # region ops on clusters use both; the rollout test (only prod_clusters) joins them so the
    # three prod clusters start once, on one worker
    ("prod_clusters", "prod_clusters", "multi-region-stack"),
    ("local_stack", "_local_stack_of_session", "local-stack"),
    ("local_stack_with_cluster", "local_stack_with_cluster", "kube-cluster"),  # watches it
    ("kube_cluster", "kube_cluster", "kube-cluster"),
    ("stack_clusters", "stack_clusters", "engine-clusters"),  # tests/infra/test_engine.py
)
GROUP_OF = {name: group for name, _, group in SESSION_RESOURCES}
GROUP_ORDER = tuple(dict.fromkeys(GROUP_OF.values()))
LEAD_OF = {group: name for name, group in reversed(list(GROUP_OF.items()))}  # first listed


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the processes the tests start, and under pytest-xdist each worker takes
    stack ports from its own share of the range, so two workers starting stacks at once never
    probe the same block."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started as a background job (`.ci/run &`): SIGINT is ignored, and every child would
        # inherit that, so the tests that press Ctrl-C on opsctl saw it ignored (exit 0).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker is None:
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    low, high = _procs.PORT_RANGE
    share = (high - low) // count
    start = low + int(worker.removeprefix("gw")) * share
    _procs.PORT_RANGE = (start, start + share)


def resources_used(item: pytest.Item) -> list[str]:
    """The session resources a test uses, in SESSION_RESOURCES order."""
    used = set(getattr(item, "fixturenames", ()))
    return [name for name, _, _ in SESSION_RESOURCES if name in used]


def session_resource_group(item: pytest.Item) -> str | None:
    """The xdist group of a test: that of the first session resource it uses, else None."""
    used = resources_used(item)
    return GROUP_OF[used[0]] if used else None


def _run_order(item: pytest.Item) -> tuple[int, int, int]:
    """Ungrouped tests first, then each group together. In a group: tests that do not use the
    group's lead resource first, then those that use it and another, then those that use only
    it; so each other resource starts once and stops before the lead's long tail, and the lead
    never stops between two of its tests."""
    group = session_resource_group(item)
    if group is None:
        return (0, 0, 0)
    used = resources_used(item)
    return (1 + GROUP_ORDER.index(group), int(LEAD_OF[group] in used), -len(used))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    untiered = []
    for item in items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        if len(set(tiers)) != 1:
            untiered.append(f"{item.nodeid} (tiers: {tiers or 'none'})")
        group = session_resource_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            if getattr(config.option, "loadgroup", False):  # an xdist worker, --dist loadgroup
                _group_in_nodeid(item, group)
    if untiered:
        raise pytest.UsageError(
            "every test needs exactly one of the markers unit, integration, e2e:\n  "
            + "\n  ".join(untiered)
        )
    items.sort(key=_run_order)  # stable: file order within each part


def _group_in_nodeid(item: pytest.Item, group: str) -> None:
    """xdist's loadgroup scheduler groups tests by an ``@group`` suffix of their node id. xdist
    3.8 writes it to ``item._nodeid``, which pytest 9 no longer reads (the id is ``item._id``),
    so every group was silently spread over both workers, each starting its own stack. Write
    it where pytest reads it, and fail loudly should that ever stop working too."""
    from _pytest.nodeid import NodeId

    if not item.nodeid.endswith(f"@{group}"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")  # type: ignore[attr-defined]
    if not item.nodeid.endswith(f"@{group}"):
        raise pytest.UsageError(f"cannot put {item.nodeid} in xdist group {group!r}")


@pytest.hookimpl(trylast=True)  # after the item's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop a session resource as soon as the next test (on this worker) does not use it.
    Should a later test ask for it again, pytest starts it again (a cost, not an error)."""
    later = set(resources_used(nextitem)) if nextitem is not None else set()
    for name, owner, _ in SESSION_RESOURCES:
        if name in later or name not in resources_used(item):
            continue
        # pytest has no public call for this; finishing the owner's FixtureDef is what the
        # session's own teardown does (dependent fixtures are finished first).
        for fixturedef in item._fixtureinfo.name2fixturedefs.get(owner, ()):
            fixturedef.finish(item._request)


@pytest.fixture
def opsctl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> OpsctlRunner:
    """Run opsctl in-process through the same edge as the console script."""
    # Isolate from the developer's own config file and environment.
    monkeypatch.setenv("OPSCTL_CONFIG", "/nonexistent/opsctl-config.toml")
    for name in ("OPSCTL_STACK", "OPSCTL_OUTPUT", "OPSCTL_INFRA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return OpsctlRunner(capsys)
