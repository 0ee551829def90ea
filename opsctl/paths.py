"""Where the project's files live. One place, so nothing hard-codes a path."""

from __future__ import annotations

import os
from pathlib import Path

# opsctl is installed editable from the repository, so the repo root is the package's parent.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INFRA_DIR = REPO_ROOT / "infra"


def cache_dir() -> Path:
    """The git-ignored project cache for built and downloaded tools, keyed by version."""
    return Path(os.environ.get("OPSCTL_CACHE_DIR", REPO_ROOT / ".cache"))
