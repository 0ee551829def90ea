"""Suite-wide rules: every test declares exactly one tier, and opsctl runs in-process here."""

from __future__ import annotations

import pytest

from tests.support import OpsctlRunner

# Session fixtures for real components: the local process stack and the simulated clusters.
pytest_plugins = ["opsctl.local.pytest_plugin", "opsctl.cluster.pytest_plugin"]

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    untiered = []
    for item in items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        if len(set(tiers)) != 1:
            untiered.append(f"{item.nodeid} (tiers: {tiers or 'none'})")
    if untiered:
        raise pytest.UsageError(
            "every test needs exactly one of the markers unit, integration, e2e:\n  "
            + "\n  ".join(untiered)
        )


@pytest.fixture
def opsctl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> OpsctlRunner:
    """Run opsctl in-process through the same edge as the console script."""
    # Isolate from the developer's own config file and environment.
    monkeypatch.setenv("OPSCTL_CONFIG", "/nonexistent/opsctl-config.toml")
    for name in ("OPSCTL_STACK", "OPSCTL_OUTPUT", "OPSCTL_INFRA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return OpsctlRunner(capsys)
