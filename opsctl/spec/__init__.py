"""The stack spec: one typed description of an environment, shared by opsctl and Pulumi.

Also home of the one "YAML file -> validated pydantic model, errors with line and column"
helper every opsctl loader uses (``load_yaml_model``, ``read_yaml_model``; see ``_yaml``).
"""

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
    Auth,
    CassandraSpec,
    DispatcherSizing,
    GatewaySizing,
    ImageRef,
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
from opsctl.spec._yaml import (
    FieldPath,
    Finding,
    Positions,
    format_path,
    load_yaml_model,
    read_yaml_model,
    validate_model,
)

__all__ = [
    "CONFIG_NAMESPACE",
    "SPEC_KEY",
    "Alerting",
    "Auth",
    "CassandraSpec",
    "DispatcherSizing",
    "FieldPath",
    "Finding",
    "GatewaySizing",
    "ImageRef",
    "Images",
    "KafkaSpec",
    "MonitoringSpec",
    "Positions",
    "Receiver",
    "ReconnectBudget",
    "RedisSpec",
    "Region",
    "Slos",
    "StackSpec",
    "Team",
    "format_path",
    "list_stacks",
    "load_spec_file",
    "load_stack",
    "load_yaml_model",
    "parse_duration",
    "parse_spec",
    "parse_storage",
    "read_yaml_model",
    "stack_file",
    "validate_model",
]
