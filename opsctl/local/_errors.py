"""Errors of the local stack. Each derives from an opsctl.errors class, so exit codes follow."""

from __future__ import annotations

from opsctl.errors import CheckFailed, ToolMissing, UserInputError


class PortInUse(UserInputError):
    """A port a component needs is taken by another process. Nothing was started."""

    def __init__(self, component: str, port: int, holder: str | None = None) -> None:
        held = f" (held by {holder})" if holder else ""
        super().__init__(
            f"port {port} needed by {component} is already in use{held}",
            hint="stop whatever holds it, or pick other ports with --base-port / --port",
        )
        self.component = component
        self.port = port


class StackConflict(UserInputError):
    """The state directory holds a running stack started with a different configuration."""


class UnknownComponent(UserInputError):
    """A component name that is not part of this stack."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown component '{name}'", hint=f"components: {', '.join(known)}")
        self.name = name


class ComponentFailed(CheckFailed):
    """A component did not start or did not become healthy; the stack was rolled back."""

    def __init__(self, component: str, reason: str, log_file: str, log_tail: list[str]) -> None:
        message = f"{component} failed to start: {reason}"
        if log_tail:
            message += f"\n  last {len(log_tail)} lines of {log_file}:\n" + "\n".join(
                f"    {line}" for line in log_tail
            )
        else:
            message += f"\n  ({log_file} is empty)"
        super().__init__(message, hint=f"full log: {log_file}")
        self.component = component
        self.reason = reason
        self.log_file = log_file
        self.log_tail = log_tail


class StackNotRunning(CheckFailed):
    """status/logs/restart asked about a stack that was never started in this state dir."""


class ArtifactMissing(ToolMissing):
    """A downloaded artifact (the Kafka or Cassandra jars) is not in the project cache."""
