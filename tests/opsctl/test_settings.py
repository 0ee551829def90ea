"""Settings resolve once, in the order CLI > env var > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.settings import OutputFormat, resolve

pytestmark = pytest.mark.unit


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('stack = "from-file"\noutput = "json"\n')
    return path


def test_defaults(tmp_path: Path) -> None:
    settings = resolve({}, env={}, config_path=tmp_path / "absent.toml")
    assert (settings.stack, settings.output) == ("local", OutputFormat.table)
    assert settings.sources["stack"] == "default"


def test_file_beats_default(config: Path) -> None:
    settings = resolve({}, env={}, config_path=config)
    assert (settings.stack, settings.output) == ("from-file", OutputFormat.json)


def test_env_beats_file(config: Path) -> None:
    settings = resolve({}, env={"OPSCTL_STACK": "from-env"}, config_path=config)
    assert settings.stack == "from-env"
    assert settings.sources["stack"] == "env OPSCTL_STACK"


def test_cli_beats_env(config: Path) -> None:
    settings = resolve({"stack": "from-cli"}, env={"OPSCTL_STACK": "from-env"}, config_path=config)
    assert settings.stack == "from-cli"


def test_config_file_path_from_env(config: Path) -> None:
    assert resolve({}, env={"OPSCTL_CONFIG": str(config)}).stack == "from-file"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('stak = "prod"\n', "stak: unknown setting"),
        ("stack = 3\n", "stack: must be a string"),
        ("stack = \n", "not valid TOML"),
        ('output = "xml"\n', "'xml' is not one of: table, json"),
    ],
)
def test_bad_config_file_is_bad_input(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(InvalidInputFile) as caught:
        resolve({}, env={}, config_path=path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert any(words in str(problem) for problem in caught.value.problems)
