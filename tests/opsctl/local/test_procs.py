"""Process supervision with real (tiny) processes: pid files, stale pids, groups, sweeps."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import psutil
import pytest

from opsctl.local._config import ENV_MARKER
from opsctl.local._procs import (
    PidRecord,
    find_free_port_block,
    is_alive,
    marked_processes,
    port_free,
    port_holder,
    read_tail,
    running_record,
    spawn,
    sweep,
    terminate,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _spawn(tmp_path: Path, script: str, marker: str = "test-marker") -> PidRecord:
    spawned = spawn(
        ["/bin/sh", "-c", script],
        env=dict(os.environ),
        cwd=tmp_path,
        log_file=tmp_path / "logs" / "p.log",
        pid_file=tmp_path / "run" / "p.pid",
        stack_marker=marker,
    )
    return spawned.record


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its reaper counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _children(record: PidRecord, count: int) -> list[psutil.Process]:
    """The spawned process's ``count`` descendants, once they all exist (else [])."""
    children: list[psutil.Process] = psutil.Process(record.pid).children(recursive=True)
    return children if len(children) == count else []


def _sleeps(marker: str) -> list[psutil.Process]:
    """The two marked processes, once both have exec'd ``sleep`` (else [])."""
    marked = marked_processes(marker)
    return marked if len(marked) == 2 and all(p.name() == "sleep" for p in marked) else []


def test_spawn_records_pid_and_runs_in_its_own_session(tmp_path: Path) -> None:
    record = _spawn(tmp_path, "echo hello; exec sleep 30")
    try:
        assert running_record(tmp_path / "run" / "p.pid") == record
        assert os.getsid(record.pid) == record.pid  # its own session and process group
        log = tmp_path / "logs" / "p.log"
        wait_for("its output", lambda: "hello" in read_tail(log, 5), timeout=5, interval=0.05)
        # Only once the command runs: between fork and exec /proc still shows the parent's env
        # (a loaded run read it too early even after the output appeared), so poll for it.
        wait_for(
            "the command's own environment",
            lambda: psutil.Process(record.pid).environ().get(ENV_MARKER) == "test-marker",
            timeout=5,
            interval=0.05,
        )
    finally:
        terminate(record, 5)
    assert not is_alive(record)


def test_terminate_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    record = _spawn(tmp_path, "trap '' TERM; sleep 60 & sleep 60 & wait")
    children = wait_for("both children", lambda: _children(record, 2), timeout=5, interval=0.05)
    started = time.monotonic()
    assert terminate(record, 1.0) is True  # had to SIGKILL
    assert time.monotonic() - started < 5
    assert _gone(record.pid)
    assert all(_gone(child.pid) for child in children)


def test_stale_pid_file_is_detected_and_removed(tmp_path: Path) -> None:
    record = _spawn(tmp_path, "exit 0")
    pid_file = tmp_path / "run" / "p.pid"
    wait_for("it to exit", lambda: not is_alive(record), timeout=5, interval=0.05)
    assert pid_file.exists()
    assert running_record(pid_file) is None
    assert not pid_file.exists()


def test_a_recycled_pid_is_not_mistaken_for_ours() -> None:
    me = psutil.Process()
    assert is_alive(PidRecord(me.pid, me.create_time()))
    assert not is_alive(PidRecord(me.pid, me.create_time() - 100))


def test_sweep_finds_escaped_processes_by_marker(tmp_path: Path) -> None:
    # A grandchild that left the group (its own session) still carries the marker.
    record = _spawn(tmp_path, "setsid sleep 60 & exec sleep 60", marker=str(tmp_path))
    marked = wait_for("two marked sleeps", lambda: _sleeps(str(tmp_path)), timeout=5, interval=0.05)
    assert record.pid in {proc.pid for proc in marked}
    sweep(str(tmp_path), timeout_s=5)
    assert marked_processes(str(tmp_path)) == []


def test_port_checks() -> None:
    base = find_free_port_block(size=4)
    assert all(port_free(port) for port in range(base, base + 4))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", base))
        listener.listen()
        assert not port_free(base)
        holder = port_holder(base)
        assert holder is not None
        assert f"pid {os.getpid()}" in holder
    assert port_free(base)


def test_read_tail_from_offset(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old 1\nold 2\n")
    offset = log.stat().st_size
    with log.open("a") as handle:
        handle.write("".join(f"new {i}\n" for i in range(30)))
    assert read_tail(log, 3, offset) == ["new 27", "new 28", "new 29"]
    assert read_tail(log, 100, offset)[0] == "new 0"
    assert read_tail(tmp_path / "missing.log", 5) == []
