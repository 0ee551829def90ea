"""Grafana dashboards as code: build, lint (structure and live PromQL), ConfigMaps per region."""

from opsctl.dashboards._catalog import build_all, builders, write
from opsctl.dashboards._configmaps import SIDECAR_LABEL, configmaps
from opsctl.dashboards._lint import Expression, expressions, live_problems, structure_problems

__all__ = [
    "SIDECAR_LABEL",
    "Expression",
    "build_all",
    "builders",
    "configmaps",
    "expressions",
    "live_problems",
    "structure_problems",
    "write",
]
