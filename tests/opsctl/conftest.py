from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import SpecWriter


@pytest.fixture
def infra_dir(tmp_path: Path) -> Path:
    path = tmp_path / "infra"
    path.mkdir()
    return path


@pytest.fixture
def write_spec(infra_dir: Path) -> SpecWriter:
    """Write a spec mapping as stack 'candidate' and return the file."""

    def write(spec: dict[str, Any]) -> Path:
        path = infra_dir / "Pulumi.candidate.yaml"
        path.write_text(yaml.safe_dump({"config": {"imstack:spec": spec}}, sort_keys=False))
        return path

    return write
