"""The dashboard set, built from the stack spec into Grafana JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsctl.spec import StackSpec

Builder = Callable[[StackSpec], Any]


def builders() -> dict[str, Builder]:
    """uid -> build function; imported lazily (the SDK is large)."""
    from dashboards import cassandra, gateway, loadtest, pipeline, redis, slo

    modules = (slo, gateway, pipeline, cassandra, redis, loadtest)
    return {module.UID: module.build for module in modules}


def build_all(spec: StackSpec) -> dict[str, dict[str, Any]]:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    built = {}
    for uid, build in builders().items():
        document = json.loads(JSONEncoder(sort_keys=True).encode(build(spec).build()))
        built[uid] = document
    return built


def write(dashboards: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, document in dashboards.items():
        path = out / f"{uid}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
