"""What the local stack's tests expect of it, written once: the spec values and start order."""

from __future__ import annotations

from opsctl.local._config import SpecValues
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

SPEC = SpecValues.from_spec(load_stack(DEFAULT_INFRA_DIR, "local"))
# The stores, brokers, exporters and monitoring, in start order (exporters on).
INFRA_COMPONENTS = [
    "redis",
    "cassandra",
    "kafka",
    "redis-replica",
    "redis-exporter",
    "redis-replica-exporter",
    "alertmanager",
    "prometheus",
]
# Then the IM processes of a two-gateway stack.
IM_COMPONENTS = ["dispatcher", "gw-1", "gw-2"]
