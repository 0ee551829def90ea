"""The stack spec: one typed description of an environment, shared by opsctl and Pulumi."""

from opsctl.spec._loader import (
    CONFIG_NAMESPACE,
    SPEC_KEY,
    list_stacks,
    load_spec_file,
    load_stack,
    parse_spec,
    stack_file,
)
from opsctl.spec._model import (
    Alerting,
    CassandraSpec,
    DispatcherSizing,
    GatewaySizing,
    Images,
    KafkaSpec,
    MonitoringSpec,
    Receiver,
    ReconnectBudget,
    RedisSpec,
    Region,
    Slos,
    StackSpec,
    Team,
)
from opsctl.spec._units import parse_duration, parse_storage

__all__ = [
    "CONFIG_NAMESPACE",
    "SPEC_KEY",
    "Alerting",
    "CassandraSpec",
    "DispatcherSizing",
    "GatewaySizing",
    "Images",
    "KafkaSpec",
    "MonitoringSpec",
    "Receiver",
    "ReconnectBudget",
    "RedisSpec",
    "Region",
    "Slos",
    "StackSpec",
    "Team",
    "list_stacks",
    "load_spec_file",
    "load_stack",
    "parse_duration",
    "parse_spec",
    "parse_storage",
    "stack_file",
]
