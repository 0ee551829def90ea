"""Every domain error opsctl raises, and the stable exit codes they map to.

Domain code raises these; only the CLI edge (``opsctl.cli.run``) turns them into
exit codes, so the same code can be driven from tests, Pulumi or other tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes are part of opsctl's interface: scripts and CI gate on them."""

    OK = 0
    FAILED = 1  # the operation ran and failed its check (SLO breached, rolled back, ...)
    BAD_INPUT = 2  # bad input or usage; nothing was changed
    INCONCLUSIVE = 3  # paused or inconclusive; a human has to look
    INTERRUPTED = 130  # Ctrl-C


class OpsctlError(Exception):
    """Base of every error opsctl reports without a traceback."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UserInputError(OpsctlError):
    """The user gave something unusable: a file, a field, a flag. Nothing was changed."""

    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class InputProblem:
    """One problem in a user-supplied file, located as precisely as we can."""

    file: str
    path: str  # field path, e.g. ``regions[1].gateway.replicas``; "" for the whole file
    message: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        field = f"{self.path}: " if self.path else ""
        return f"{self.location()}: {field}{self.message}"


class InvalidInputFile(UserInputError):
    """A user file (stack spec, profile, values, rules) failed validation."""

    def __init__(self, what: str, file: str, problems: list[InputProblem]) -> None:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{file}: {count} {noun} in {what}")
        self.what = what
        self.file = file
        self.problems = problems


class StackNotFound(UserInputError):
    """No stack file for the requested stack name."""

    def __init__(self, stack: str, path: str, available: list[str]) -> None:
        listing = ", ".join(available) if available else "none"
        super().__init__(
            f"stack '{stack}' not found: {path} does not exist",
            hint=f"stacks available: {listing}",
        )
        self.stack = stack
        self.available = available


class CheckFailed(OpsctlError):
    """The operation ran and its check failed."""

    exit_code = ExitCode.FAILED


class KubeError(CheckFailed):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class Forbidden(KubeError):
    """The API server refused the call (HTTP 403): the identity lacks an RBAC permission."""


class Inconclusive(OpsctlError):
    """Not enough evidence to pass or fail; the operation paused."""

    exit_code = ExitCode.INCONCLUSIVE


class ToolMissing(OpsctlError):
    """A required external tool (pulumi, helm, promtool, ...) is not installed."""

    exit_code = ExitCode.FAILED
