"""Load-test helpers: short profiles written from the shipped ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from opsctl.loadtest.profiles import PROFILES_DIR


def write_profile(tmp_path: Path, name: str = "smoke", **changes: Any) -> Path:
    """A copy of a shipped profile with top-level or nested (dict) fields replaced."""
    document = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    path = tmp_path / f"{name}-test.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def target_args(stack: Any, urls: list[str] | None = None) -> list[str]:
    info = stack.info
    args: list[str] = []
    for url in urls or list(info.gateway_ws_urls):
        args += ["--target", url]
    return [
        *args,
        "--jwt-secret-file",
        str(info.jwt_secret_file),
        "--jwt-issuer",
        info.jwt_issuer,
        "--jwt-audience",
        info.jwt_audience,
    ]
