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
    resolve_config,
    run_operation,
)

__all__ = [
    "DEFAULT_BACKEND_DIR",
    "ENV_BACKEND_URL",
    "ENV_PULUMI_BIN",
    "ENV_SECRETS_PROVIDER",
    "InfraConfig",
    "Operation",
    "OperationResult",
    "find_pulumi",
    "prepare",
    "resolve_config",
    "run_operation",
]
