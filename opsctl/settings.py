"""opsctl's settings, resolved once per invocation: CLI flag > env var > config file > default.

The config file is TOML, at ``$OPSCTL_CONFIG`` or ``$XDG_CONFIG_HOME/opsctl/config.toml``::

    stack = "staging"
    output = "table"
    infra_dir = "/path/to/repo/infra"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from opsctl.errors import InputProblem, InvalidInputFile
from opsctl.paths import DEFAULT_INFRA_DIR


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


DEFAULT_STACK = "local"
DEFAULT_OUTPUT = OutputFormat.table

# setting name -> environment variable
ENV_VARS: dict[str, str] = {
    "stack": "OPSCTL_STACK",
    "output": "OPSCTL_OUTPUT",
    "infra_dir": "OPSCTL_INFRA_DIR",
}


@dataclass(frozen=True)
class Settings:
    stack: str
    output: OutputFormat
    infra_dir: Path
    sources: Mapping[str, str]  # setting -> where its value came from (cli, env, file, default)


def config_file_path(env: Mapping[str, str]) -> Path:
    explicit = env.get("OPSCTL_CONFIG")
    if explicit:
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opsctl" / "config.toml"


def _read_config_file(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputFile(
            "opsctl config", str(path), [InputProblem(str(path), "", f"not valid TOML: {exc}")]
        ) from exc
    unknown = sorted(set(data) - set(ENV_VARS))
    if unknown:
        problems = [
            InputProblem(str(path), key, f"unknown setting; known: {', '.join(ENV_VARS)}")
            for key in unknown
        ]
        raise InvalidInputFile("opsctl config", str(path), problems)
    for key, value in data.items():
        if not isinstance(value, str):
            problem = InputProblem(str(path), key, f"must be a string, got {type(value).__name__}")
            raise InvalidInputFile("opsctl config", str(path), [problem])
    return data


def _output_format(value: str, origin: str) -> OutputFormat:
    try:
        return OutputFormat(value)
    except ValueError:
        known = ", ".join(OutputFormat)
        problem = InputProblem(origin, "output", f"'{value}' is not one of: {known}")
        raise InvalidInputFile("opsctl settings", origin, [problem]) from None


def resolve(
    cli: Mapping[str, str | None],
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Merge the layers. ``cli`` holds flag values, None where the flag was not given."""
    env = os.environ if env is None else env
    path = config_path or config_file_path(env)
    file_values = _read_config_file(path)
    defaults = {
        "stack": DEFAULT_STACK,
        "output": DEFAULT_OUTPUT.value,
        "infra_dir": str(DEFAULT_INFRA_DIR),
    }

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, env_var in ENV_VARS.items():
        cli_value = cli.get(key)
        if cli_value is not None:
            values[key], sources[key] = cli_value, "cli"
        elif env.get(env_var):
            values[key], sources[key] = env[env_var], f"env {env_var}"
        elif key in file_values:
            values[key], sources[key] = str(file_values[key]), f"file {path}"
        else:
            values[key], sources[key] = defaults[key], "default"

    return Settings(
        stack=values["stack"],
        output=_output_format(values["output"], sources["output"]),
        infra_dir=Path(values["infra_dir"]),
        sources=sources,
    )
