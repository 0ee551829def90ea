"""The state dir: the recorded config, the secret, wiping only what `up` owns (no processes)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from opsctl.errors import ToolMissing, UserInputError
from opsctl.local import LocalStack, StackNotRunning, UnknownComponent, resolve_config
from opsctl.local._config import SpecValues
from opsctl.local._stack import read_recorded
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit


def _stack(tmp_path: Path, **kwargs: object) -> LocalStack:
    config = resolve_config(state_dir=tmp_path / "state", base_port=20000, env={}, **kwargs)  # type: ignore[arg-type]
    return LocalStack(config)


def test_the_recorded_stack_round_trips(tmp_path: Path) -> None:
    stack = _stack(tmp_path, gateways=3, rule_globs=("a/*.yaml",))
    stack._prepare_state_dir()
    recorded = read_recorded(stack.config.state_dir)
    assert recorded == (stack.config, stack.spec)
    again = LocalStack.recorded(stack.config.state_dir)
    assert again.config == stack.config
    assert again.names() == stack.names()


def test_recorded_spec_values_are_used_even_if_the_spec_changed(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack._prepare_state_dir()
    recorded = LocalStack.recorded(stack.config.state_dir)
    # A stack recorded elsewhere (e.g. with a broken infra dir) still loads: no spec parsing.
    broken = stack.config.model_copy(update={"infra_dir": tmp_path / "nowhere"})
    assert LocalStack(broken, spec=recorded.spec).names() == stack.names()
    assert isinstance(recorded.spec, SpecValues)


def test_no_recorded_stack(tmp_path: Path) -> None:
    with pytest.raises(StackNotRunning, match="nothing was started there"):
        LocalStack.recorded(tmp_path)


def test_a_corrupt_recorded_stack_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"config": {"ports": 1}}')
    with pytest.raises(UserInputError, match="not a valid recorded local stack"):
        LocalStack.recorded(tmp_path)


def test_the_secret_is_created_once_and_private(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack._prepare_state_dir()
    secret_file = stack.info.jwt_secret_file
    secret = secret_file.read_text()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert len(secret) >= 48
    stack._prepare_state_dir()
    assert secret_file.read_text() == secret


def test_wipe_deletes_only_what_up_created(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack._prepare_state_dir()
    (stack.config.state_dir / "cassandra" / "data").mkdir(parents=True)
    keep = stack.config.state_dir / "notes.txt"
    keep.write_text("mine")
    stack.wipe()
    assert sorted(p.name for p in stack.config.state_dir.iterdir()) == ["notes.txt"]
    keep.unlink()
    stack.wipe()
    assert not stack.config.state_dir.exists()


def test_unknown_component(tmp_path: Path) -> None:
    with pytest.raises(UnknownComponent, match="unknown component 'zookeeper'") as caught:
        _stack(tmp_path).stop("zookeeper")
    assert "gw-1" in (caught.value.hint or "")


def test_missing_tools_are_reported_before_anything_starts(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    missing = stack.config.model_copy(update={"redis_server": tmp_path / "no-redis"})
    with pytest.raises(ToolMissing, match="redis-server not found"):
        LocalStack(missing).up()
    no_jars = stack.config.model_copy(update={"cache_dir": tmp_path / "empty-cache"})
    with pytest.raises(ToolMissing, match="jars are not in the cache"):
        LocalStack(no_jars).up()
    assert not stack.config.state_dir.exists()


def test_follow_prints_the_tail_then_new_lines(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    log = stack.log_file("kafka")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    lines = stack.follow("kafka", 2, poll_s=0.01)
    assert [next(lines), next(lines)] == ["line 8", "line 9"]
    with log.open("a") as handle:
        handle.write("new 1\nnew ")
    assert next(lines) == "new 1"
    with log.open("a") as handle:
        handle.write("2\n")
    assert next(lines) == "new 2"  # a partial line is held back until it is complete
    assert stack.tail("kafka", 1) == ["new 2"]
    assert stack.log_file("migrate").name == "migrate.log"


def test_cli_on_an_empty_state_dir(tmp_path: Path, opsctl: OpsctlRunner) -> None:
    status = opsctl("local", "status", "--state-dir", str(tmp_path))
    assert status.exit_code == 1
    assert "nothing was started there" in status.stderr
    down = opsctl("local", "down", "--state-dir", str(tmp_path))
    assert (down.exit_code, "nothing to stop" in down.stderr) == (0, True)
    logs = opsctl("local", "logs", "kafka", "--state-dir", str(tmp_path))
    assert logs.exit_code == 1


def test_cli_rejects_bad_flags_before_touching_anything(
    tmp_path: Path, opsctl: OpsctlRunner
) -> None:
    state = str(tmp_path / "state")
    for argv, message in [
        (["--base-port", "80"], "base port 80 is out of range"),
        (["--port", "kafka"], "expected NAME=PORT"),
        (["--port", "zookeeper=20000"], "unknown port name"),
        (["--gateways", "0"], "gateways"),
    ]:
        result = opsctl("local", "up", "--state-dir", state, *argv)
        assert result.exit_code == 2, argv
        assert message in result.stderr, (argv, result.stderr)
    assert not (tmp_path / "state").exists()
