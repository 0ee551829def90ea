"""The Automation API driver: checks everything it can before touching a cluster, then runs the
program in ``infra/imstack`` **inline** (this process hosts the Python language runtime and
hands the engine ``--client``), so no ``pulumi-language-python`` binary is needed.

Order of checks, each failing with what to do: the stack spec (exit 2), every region's kube
context in the kubeconfig (exit 2, naming the field), the secrets passphrase (exit 2), the
policy packs (exit 2); then the pulumi CLI and the Kubernetes provider plugin (built on first
use by scripts/setup/gotools.sh, or ToolMissing with the `make setup-cluster` hint), and the
operators' CRD files for ``operators: external`` (ToolMissing). Only then is the Pulumi
workspace opened.

The engine runs with ``PULUMI_HOME=$OPSCTL_CACHE_DIR/pulumi-home`` (where gotools.sh installs
the pinned provider), no update check, no plugins from PATH and no plugin downloads, so what
runs is exactly what is pinned.

Defaults: a local file backend under ``.state/pulumi`` and the ``passphrase`` secrets
provider; both configurable by flag or environment. Note: selecting a stack with the
passphrase provider for the first time records its salt (``encryptionsalt``) in
``<infra-dir>/Pulumi.<stack>.yaml``, as the pulumi CLI always does.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opsctl.cluster._tools import Builder, pinned_path, pinned_versions
from opsctl.errors import CheckFailed, ToolMissing, UserInputError
from opsctl.infra._events import Step, StepLog, clean_diagnostic, pending, summary_counts
from opsctl.paths import REPO_ROOT, cache_dir
from opsctl.spec import StackSpec, load_stack, stack_file
from opsctl.stack import check_kube_contexts, kubeconfig_paths

if TYPE_CHECKING:
    from pulumi.automation import EngineEvent, Stack

ENV_PULUMI_BIN = "OPSCTL_PULUMI_BIN"
ENV_BACKEND_URL = "OPSCTL_PULUMI_BACKEND_URL"
ENV_SECRETS_PROVIDER = "OPSCTL_PULUMI_SECRETS_PROVIDER"
DEFAULT_BACKEND_DIR = REPO_ROOT / ".state" / "pulumi"
DEFAULT_SECRETS_PROVIDER = "passphrase"
POLICY_PACK_DIR = REPO_ROOT / "infra" / "policy"
PROJECT_NAME = "imstack"
_PASSPHRASE_VARS = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
_PROVIDER = "pulumi-resource-kubernetes"


class Operation(StrEnum):
    preview = "preview"
    up = "up"
    destroy = "destroy"
    refresh = "refresh"
    drift = "drift"  # a refresh in preview mode: what changed outside Pulumi
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
    # up: refresh the state from the clusters first, so objects changed outside Pulumi are
    # put back (without it the engine compares the program with its stale state only).
    refresh: bool = True


@dataclass(frozen=True)
class Engine:
    """What :func:`prepare` found: the CLI, its PULUMI_HOME and the validated spec."""

    pulumi: Path
    pulumi_home: Path
    spec: StackSpec


@dataclass(frozen=True)
class OperationResult:
    operation: Operation
    stack: str
    summary: dict[str, int]
    outputs: dict[str, Any]
    log: StepLog

    @property
    def pending(self) -> int:
        """Resources the operation would change (preview) or changed (up, destroy)."""
        return pending(self.summary)

    @property
    def drifted(self) -> list[Step]:
        return self.log.drifted() if self.operation is Operation.drift else []

    def to_json(self) -> dict[str, Any]:
        steps = self.drifted if self.operation is Operation.drift else self.log.changed()
        data: dict[str, Any] = {
            "operation": self.operation.value,
            "stack": self.stack,
            "changes": self.summary,
            "pending": self.pending,
            "regions": self.log.by_region(steps),
            "outputs": self.outputs,
        }
        if self.operation is Operation.drift:
            data["drifted"] = len(steps)
        return data


class Reporter(Protocol):
    """Progress of an operation, one resource at a time (opsctl.infra._progress)."""

    def started(self, step: Step) -> None: ...
    def finished(self, step: Step) -> None: ...
    def message(self, text: str) -> None: ...


class _Silent:
    def started(self, step: Step) -> None:
        return None

    def finished(self, step: Step) -> None:
        return None

    def message(self, text: str) -> None:
        return None


def pulumi_home() -> Path:
    """Where the pinned provider plugin is installed (scripts/setup/gotools.sh)."""
    return cache_dir() / "pulumi-home"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_pulumi(env: Mapping[str, str] | None = None, *, build: Builder | None = None) -> Path:
    """$OPSCTL_PULUMI_BIN > the pinned build in the cache > `pulumi` on PATH.

    Missing: built now with ``build`` (scripts/setup/gotools.sh pulumi), else ToolMissing.
    """
    env = os.environ if env is None else env
    explicit = env.get(ENV_PULUMI_BIN)
    if explicit:
        path = Path(explicit)
        if not _executable(path):
            raise ToolMissing(f"{ENV_PULUMI_BIN}={explicit} is not an executable file")
        return path
    pinned = pinned_path("pulumi", pinned_versions())
    if _executable(pinned):
        return pinned
    on_path = shutil.which("pulumi", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    if build is not None:
        build(["pulumi"])
        if _executable(pinned):
            return pinned
    raise ToolMissing(
        "the pulumi CLI is not installed: `opsctl infra` drives it through the Automation API",
        hint=f"run `make setup-cluster` (builds it at {pinned}), or set "
        f"{ENV_PULUMI_BIN}=/path/to/pulumi. `opsctl render` needs no Pulumi at all.",
    )


def provider_plugin(home: Path) -> Path:
    """The pinned Kubernetes provider as the engine looks it up under PULUMI_HOME."""
    version = pinned_versions()["PULUMI_KUBERNETES_PLUGIN_VERSION"]
    return home / "plugins" / f"resource-kubernetes-{version}" / _PROVIDER


def _check_provider(home: Path, build: Builder | None) -> None:
    plugin = provider_plugin(home)
    if _executable(plugin):
        return
    if build is not None:
        build([_PROVIDER])  # builds it if needed and installs it as the plugin
        if _executable(plugin):
            return
    raise ToolMissing(
        f"the Kubernetes provider plugin is not installed ({plugin})",
        hint="run `make setup-cluster` (scripts/setup/gotools.sh builds it and installs it "
        "under $OPSCTL_CACHE_DIR/pulumi-home)",
    )


def resolve_config(
    *,
    stack: str,
    infra_dir: Path,
    backend_url: str | None = None,
    secrets_provider: str | None = None,
    kubeconfig: Path | None = None,
    policy_packs: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    refresh: bool = True,
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
        policy_packs=tuple(policy_packs),
        env=env,
        refresh=refresh,
    )


def _check_policy_packs(packs: Sequence[Path]) -> None:
    for pack in packs:
        if not (pack / "PulumiPolicy.yaml").is_file():
            raise UserInputError(
                f"--policy-pack {pack}: not a policy pack (no PulumiPolicy.yaml there)",
                hint=f"this project's pack is {POLICY_PACK_DIR}",
            )


def _check_operator_crds(spec: StackSpec) -> None:
    if spec.operators != "external":
        return
    from opsctl.cluster.crds import crd_set
    from opsctl.stack._versions import CHART_PINS

    for pin in CHART_PINS:
        crd_set(pin.crd_project)  # ToolMissing names crds.sh


def prepare(config: InfraConfig, operation: Operation, *, build: Builder | None = None) -> Engine:
    """Every check that needs no Pulumi engine: bad input (exit 2) first, so a typo never
    waits for a tool build; then the tools (built now with ``build``, else ToolMissing)."""
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
    _check_policy_packs(config.policy_packs)
    pulumi_bin = find_pulumi(config.env, build=build)
    home = pulumi_home()
    if operation.needs_cluster:
        _check_provider(home, build)
        _check_operator_crds(spec)
    if config.backend_url.startswith("file://"):
        Path(config.backend_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return Engine(pulumi=pulumi_bin, pulumi_home=home, spec=spec)


def engine_env(config: InfraConfig, home: Path) -> dict[str, str]:
    """The engine's environment on top of ours: pinned plugins only, nothing fetched."""
    env = {
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": config.backend_url,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    for name in _PASSPHRASE_VARS:
        value = config.env.get(name)
        if value is not None:
            env[name] = value
    if config.kubeconfig is not None:
        env["KUBECONFIG"] = str(config.kubeconfig)
    elif config.env.get("KUBECONFIG"):
        env["KUBECONFIG"] = config.env["KUBECONFIG"]
    return env


def open_stack(
    config: InfraConfig, engine: Engine, program: Callable[[], None] | None = None
) -> Stack:
    """The stack in ``infra_dir`` (its Pulumi.yaml and Pulumi.<stack>.yaml), program inline:
    infra/imstack's (``program`` replaces it in engine tests of one piece of it)."""
    from pulumi import automation as auto

    from infra.imstack import pulumi_program

    search = kubeconfig_paths(config.kubeconfig, config.env)
    root = engine.pulumi.parent.parent if engine.pulumi.parent.name == "bin" else None
    command = auto.PulumiCommand(root=str(root)) if root else auto.PulumiCommand()
    options = auto.LocalWorkspaceOptions(
        work_dir=str(config.infra_dir),
        pulumi_home=str(engine.pulumi_home),
        env_vars=engine_env(config, engine.pulumi_home),
        secrets_provider=config.secrets_provider,
        pulumi_command=command,
    )
    return auto.create_or_select_stack(
        stack_name=config.stack,
        project_name=PROJECT_NAME,
        program=program or functools.partial(pulumi_program, search),
        opts=options,
    )


def _event_handler(log: StepLog, reporter: Reporter) -> Callable[[EngineEvent], None]:
    def handle(event: EngineEvent) -> None:
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            reporter.started(log.record(meta.urn, str(meta.op.value), meta.diffs))
        elif event.res_outputs_event is not None:
            meta = event.res_outputs_event.metadata
            reporter.finished(log.record(meta.urn, str(meta.op.value), meta.diffs))
        elif event.res_op_failed_event is not None:
            meta = event.res_op_failed_event.metadata
            reporter.finished(log.record(meta.urn, str(meta.op.value), meta.diffs, failed=True))
        elif event.diagnostic_event is not None:
            diagnostic = event.diagnostic_event
            if diagnostic.severity == "error":
                text = clean_diagnostic(diagnostic.message)
                if text and text not in log.diagnostics:
                    log.diagnostics.append(text)
                    reporter.message(text)
        elif event.policy_event is not None:
            policy = event.policy_event
            text = f"policy {policy.policy_name}: {policy.message.strip()}"
            log.policy_violations.append(text)
            reporter.message(text)

    return handle


# What the engine says when it cannot start a Python policy pack: it needs the Python
# language host (pulumi-language-python), which cannot be built here (see infra/README.md).
_POLICY_HOST_MARKERS = ("pulumi-language-python", "policy pack", "analyzer")


def _failure(
    operation: Operation, config: InfraConfig, error: Exception, log: StepLog
) -> Exception:
    text = str(error)
    if config.policy_packs and any(marker in text for marker in _POLICY_HOST_MARKERS):
        reason = next(
            (line.strip() for line in text.splitlines() if "pulumi-language-python" in line),
            text.strip().splitlines()[-1] if text.strip() else "unknown",
        )
        if "pulumi-language-python" in text:
            return UserInputError(
                "the engine cannot run a Python policy pack here: it needs the Python language "
                f"host (pulumi-language-python), which is not installed. Engine said: {reason}",
                hint="run without --policy-pack; the same rules run on the builders' output in "
                "the unit tests (tests/infra/test_policy_pack.py, opsctl/stack/policies.py)",
            )
    if log.policy_violations:
        return CheckFailed(
            f"pulumi {operation.value} on stack '{config.stack}': policy violations:\n  "
            + "\n  ".join(log.policy_violations)
        )
    detail = "\n  ".join(log.diagnostics[-10:]) or "\n  ".join(text.strip().splitlines()[-15:])
    return CheckFailed(f"pulumi {operation.value} on stack '{config.stack}' failed:\n  {detail}")


def run_operation(
    config: InfraConfig,
    operation: Operation,
    *,
    reporter: Reporter | None = None,
    on_output: Callable[[str], None] | None = None,
    build: Builder | None = None,
) -> OperationResult:
    engine = prepare(config, operation, build=build)
    from pulumi import automation as auto  # heavy; only once the checks passed

    reporter = reporter or _Silent()
    log = StepLog(regions=tuple(region.name for region in engine.spec.regions))
    on_event = _event_handler(log, reporter)
    packs = [str(path) for path in config.policy_packs]
    try:
        stack = open_stack(config, engine)
        summary: dict[str, int] = {}
        if operation is Operation.preview:
            preview = stack.preview(
                policy_packs=packs, on_output=on_output, on_event=on_event, diff=True
            )
            summary = summary_counts(preview.change_summary)
        elif operation is Operation.up:
            up = stack.up(
                policy_packs=packs,
                on_output=on_output,
                on_event=on_event,
                refresh=config.refresh,
            )
            summary = summary_counts(up.summary.resource_changes)
        elif operation is Operation.destroy:
            destroyed = stack.destroy(on_output=on_output, on_event=on_event)
            summary = summary_counts(destroyed.summary.resource_changes)
        elif operation is Operation.refresh:
            refreshed = stack.refresh(on_output=on_output, on_event=on_event)
            summary = summary_counts(refreshed.summary.resource_changes)
        elif operation is Operation.drift:
            drift = stack.preview_refresh(on_output=on_output, on_event=on_event)
            summary = summary_counts(drift.change_summary)
        outputs = {key: value.value for key, value in stack.outputs().items()}
    except auto.CommandError as error:
        raise _failure(operation, config, error, log) from error
    return OperationResult(operation, config.stack, summary, outputs, log)
