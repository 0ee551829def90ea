"""Every playbook passes ansible-lint's production profile and ansible-playbook's syntax check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.playbooks.netns_hosts import PLAYBOOKS_DIR, VENV_BIN, ansible_env, require

pytestmark = pytest.mark.integration

PLAYBOOKS = sorted(path.name for path in PLAYBOOKS_DIR.glob("*.yml"))


def test_every_playbook_is_covered() -> None:
    assert set(PLAYBOOKS) >= {
        "site.yml",
        "gateway_nodes.yml",
        "loadgen_hosts.yml",
        "k8s_cluster.yml",
        "gateway_pool_drain.yml",
        "gateway_pool_uncordon.yml",
        "verify_host_limits.yml",
    }


def test_ansible_lint_production_profile_passes(tmp_path: Path) -> None:
    lint = require(VENV_BIN / "ansible-lint", "ansible-lint (make setup)")
    done = subprocess.run(
        [str(lint), "-c", str(PLAYBOOKS_DIR / ".ansible-lint"), "--nocolor", str(PLAYBOOKS_DIR)],
        capture_output=True,
        text=True,
        timeout=600,
        env=ansible_env(tmp_path),
        cwd=PLAYBOOKS_DIR.parent,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output


@pytest.mark.parametrize("playbook", PLAYBOOKS)
@pytest.mark.parametrize("stack", ["prod"])
def test_syntax_check(playbook: str, stack: str, tmp_path: Path) -> None:
    tool = require(VENV_BIN / "ansible-playbook", "ansible-core (make setup)")
    done = subprocess.run(
        [
            str(tool),
            "--syntax-check",
            "-i",
            str(PLAYBOOKS_DIR / "inventories" / stack),
            str(PLAYBOOKS_DIR / playbook),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ansible_env(tmp_path),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"playbook: {PLAYBOOKS_DIR / playbook}" in done.stdout
