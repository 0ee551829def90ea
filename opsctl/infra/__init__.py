"""Drive the Pulumi program in infra/ through the Automation API (``opsctl infra ...``)."""

from opsctl.infra._driver import (
    DEFAULT_BACKEND_DIR,
    ENV_BACKEND_URL,
    ENV_PULUMI_BIN,
    ENV_SECRETS_PROVIDER,
    InfraConfig,
    Operation,
    OperationResult,
    find_pulumi,
    prepare,
    pulumi_home,
    resolve_config,
    run_operation,
)
from opsctl.infra._events import Step, StepLog

__all__ = [
    "DEFAULT_BACKEND_DIR",
    "ENV_BACKEND_URL",
    "ENV_PULUMI_BIN",
    "ENV_SECRETS_PROVIDER",
    "InfraConfig",
    "Operation",
    "OperationResult",
    "Step",
    "StepLog",
    "find_pulumi",
    "prepare",
    "pulumi_home",
    "resolve_config",
    "run_operation",
]
