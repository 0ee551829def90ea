"""The Automation API driver: checks everything it can before touching a cluster.

Order of checks, each failing with what to do: the pulumi CLI (ToolMissing), the stack spec
(exit 2), every region's kube context in the kubeconfig (exit 2, naming the field), the
secrets passphrase (exit 2). Only then is the Pulumi workspace opened.

Defaults: a local file backend under ``.state/pulumi`` and the ``passphrase`` secrets
provider; both configurable by flag or environment. Note: selecting a stack with the
passphrase provider for the first time records its salt (``encryptionsalt``) in
``infra/Pulumi.<stack>.yaml``, as the pulumi CLI always does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from opsctl.errors import CheckFailed, ToolMissing, UserInputError
from opsctl.paths import REPO_ROOT, cache_dir
from opsctl.spec import StackSpec, load_stack, stack_file
from opsctl.stack import check_kube_contexts, kubeconfig_paths

ENV_PULUMI_BIN = "OPSCTL_PULUMI_BIN"
ENV_BACKEND_URL = "OPSCTL_PULUMI_BACKEND_URL"
ENV_SECRETS_PROVIDER = "OPSCTL_PULUMI_SECRETS_PROVIDER"
DEFAULT_BACKEND_DIR = REPO_ROOT / ".state" / "pulumi"
DEFAULT_SECRETS_PROVIDER = "passphrase"
POLICY_PACK_DIR = REPO_ROOT / "infra" / "policy"
_PASSPHRASE_VARS = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")


class Operation(StrEnum):
    preview = "preview"
    up = "up"
    destroy = "destroy"
    refresh = "refresh"
    outputs = "outputs"

    @property
    def needs_cluster(self) -> bool:
        return self is not Operation.outputs


@dataclass(frozen=True)
class InfraConfig:
    stack: str
    infra_dir: Path
    backend_url: str
    secrets_provider: str
    kubeconfig: Path | None
    policy_packs: tuple[Path, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OperationResult:
    operation: Operation
    stack: str
    summary: dict[str, int]
    outputs: dict[str, Any]


def find_pulumi(env: Mapping[str, str] | None = None) -> Path:
    """$OPSCTL_PULUMI_BIN > `pulumi` on PATH > $OPSCTL_CACHE_DIR/bin/pulumi, else ToolMissing."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_PULUMI_BIN)
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ToolMissing(f"{ENV_PULUMI_BIN}={explicit} is not an executable file")
        return path
    on_path = shutil.which("pulumi", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    cached = cache_dir() / "bin" / "pulumi"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    raise ToolMissing(
        "the pulumi CLI is not installed: `opsctl infra` drives it through the Automation API",
        hint=f"put `pulumi` on PATH, at {cached}, or set {ENV_PULUMI_BIN}=/path/to/pulumi "
        "(https://www.pulumi.com/docs/install/). `opsctl render` needs no Pulumi at all.",
    )


def resolve_config(
    *,
    stack: str,
    infra_dir: Path,
    backend_url: str | None = None,
    secrets_provider: str | None = None,
    kubeconfig: Path | None = None,
    policy: bool = True,
    env: Mapping[str, str] | None = None,
) -> InfraConfig:
    env = dict(os.environ if env is None else env)
    backend = backend_url or env.get(ENV_BACKEND_URL) or DEFAULT_BACKEND_DIR.as_uri()
    provider = secrets_provider or env.get(ENV_SECRETS_PROVIDER) or DEFAULT_SECRETS_PROVIDER
    return InfraConfig(
        stack=stack,
        infra_dir=infra_dir,
        backend_url=backend,
        secrets_provider=provider,
        kubeconfig=kubeconfig,
        policy_packs=(POLICY_PACK_DIR,) if policy else (),
        env=env,
    )


def prepare(config: InfraConfig, operation: Operation) -> tuple[Path, StackSpec]:
    """Every check that needs no Pulumi engine. Returns the CLI path and the spec."""
    pulumi_bin = find_pulumi(config.env)
    spec = load_stack(config.infra_dir, config.stack)
    if operation.needs_cluster:
        paths = kubeconfig_paths(config.kubeconfig, config.env)
        check_kube_contexts(spec, paths, file=str(stack_file(config.infra_dir, config.stack)))
    if config.secrets_provider == "passphrase" and not any(
        config.env.get(name) is not None for name in _PASSPHRASE_VARS
    ):
        raise UserInputError(
            "the passphrase secrets provider needs PULUMI_CONFIG_PASSPHRASE "
            "or PULUMI_CONFIG_PASSPHRASE_FILE",
            hint=f"or choose another provider with --secrets-provider / ${ENV_SECRETS_PROVIDER}",
        )
    if config.policy_packs and importlib.util.find_spec("pulumi_policy") is None:
        raise ToolMissing(
            "the policy pack needs the pulumi-policy package, which is not installed",
            hint="install the project's dependencies (`make setup`), or pass --no-policy",
        )
    if config.backend_url.startswith("file://"):
        Path(config.backend_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return pulumi_bin, spec


def _workspace_env(config: InfraConfig) -> dict[str, str]:
    env = {"PULUMI_BACKEND_URL": config.backend_url, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    if config.kubeconfig is not None:
        env["KUBECONFIG"] = str(config.kubeconfig)
    return env


def _summary(changes: Mapping[Any, int] | None) -> dict[str, int]:
    return {str(getattr(op, "value", op)): count for op, count in (changes or {}).items()}


def run_operation(
    config: InfraConfig, operation: Operation, on_output: Callable[[str], None] | None = None
) -> OperationResult:
    pulumi_bin, _spec = prepare(config, operation)
    from pulumi import automation as auto  # heavy; only once the checks passed

    root = pulumi_bin.parent.parent if pulumi_bin.parent.name == "bin" else None
    command = auto.PulumiCommand(root=str(root)) if root else auto.PulumiCommand()
    options = auto.LocalWorkspaceOptions(
        work_dir=str(config.infra_dir),
        env_vars=_workspace_env(config),
        secrets_provider=config.secrets_provider,
        pulumi_command=command,
    )
    packs = [str(path) for path in config.policy_packs]
    try:
        stack = auto.create_or_select_stack(
            stack_name=config.stack, work_dir=str(config.infra_dir), opts=options
        )
        summary: dict[str, int] = {}
        if operation is Operation.preview:
            preview = stack.preview(policy_packs=packs, on_output=on_output, diff=True)
            summary = _summary(preview.change_summary)
        elif operation is Operation.up:
            up = stack.up(policy_packs=packs, on_output=on_output)
            summary = _summary(up.summary.resource_changes)
        elif operation is Operation.destroy:
            destroyed = stack.destroy(on_output=on_output)
            summary = _summary(destroyed.summary.resource_changes)
        elif operation is Operation.refresh:
            refreshed = stack.refresh(on_output=on_output)
            summary = _summary(refreshed.summary.resource_changes)
        outputs = {key: value.value for key, value in stack.outputs().items()}
    except auto.CommandError as error:
        raise CheckFailed(
            f"pulumi {operation.value} on stack '{config.stack}' failed: {error}"
        ) from error
    return OperationResult(operation, config.stack, summary, outputs)
