"""scripts/setup/crds.sh against the real Go module proxy cache: fetched once, then a no-op."""

from __future__ import annotations

import os
import subprocess

import pytest

from opsctl.cluster.crds import crd_set, load_crds
from opsctl.paths import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "scripts" / "setup" / "crds.sh"


def run_setup() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, timeout=300, check=False, env=os.environ
    )


def test_warm_run_does_nothing_and_the_servicemonitor_crd_is_upstreams() -> None:
    first = run_setup()
    assert first.returncode == 0, first.stderr
    again = run_setup()
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert again.stderr == ""

    crds = crd_set("prometheus-operator")
    monitors = [d for d in load_crds(crds) if d["spec"]["names"]["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    # Upstream's own stamp of the release it was generated for.
    annotations = monitors[0]["metadata"]["annotations"]
    assert annotations["operator.prometheus.io/version"] == crds.version.removeprefix("v")
