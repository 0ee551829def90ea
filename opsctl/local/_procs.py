"""Supervising local processes: start each in its own session, track it by pid file, stop it.

A pid file records the pid *and* the process start time, so a recycled pid is never mistaken
for our process. Every process gets an environment marker naming its stack, so a sweep can find
anything that escaped its pid file (e.g. `up` was killed between spawn and pid-file write).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from opsctl.errors import UserInputError
from opsctl.local._config import ENV_MARKER, PORT_BLOCK_SIZE
from opsctl.local._errors import ComponentFailed
from opsctl.poll import WaitTimeout, wait_until

# Popen objects of the processes this Python process started, so their exit status is ours
# to collect (and they never linger as zombies in long-lived callers such as a test session).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

# Start times from psutil are floats rounded by the kernel's clock ticks; allow for that.
_START_TIME_TOLERANCE_S = 0.05
LOG_TAIL_LINES = 20  # lines of a failed component's log shown in its error


@dataclass(frozen=True)
class PidRecord:
    pid: int
    started_at: float  # psutil create_time of the process

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "started_at": self.started_at})


@dataclass(frozen=True)
class Spawned:
    record: PidRecord
    log_offset: int  # where this run's output starts in the (appended) log file


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PidRecord(pid=int(data["pid"]), started_at=float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_alive(record: PidRecord) -> bool:
    """True if the recorded process still runs (not a zombie, not a recycled pid)."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.started_at) > _START_TIME_TOLERANCE_S:
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(record.pid)
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return True


def running_record(pid_file: Path) -> PidRecord | None:
    """The live process behind a pid file; a stale pid file is removed."""
    record = read_pid_file(pid_file)
    if record is None:
        pid_file.unlink(missing_ok=True)
        return None
    if not is_alive(record):
        pid_file.unlink(missing_ok=True)
        return None
    return record


def _popen_logged(
    argv: list[str], log_file: Path, header: str, *, env: Mapping[str, str], cwd: Path | None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` in a new session, output appended to ``log_file`` after a header line.

    Returns the process and the log offset where its output starts.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"==== opsctl local: {header}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # own process group: the whole tree can be signalled
            close_fds=True,
        )
    return proc, offset


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_file: Path,
    pid_file: Path,
    stack_marker: str,
) -> Spawned:
    """Start ``argv`` in a new session, output appended to ``log_file``; write its pid file."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    proc, offset = _popen_logged(
        argv,
        log_file,
        f"starting at {stamp}: {' '.join(argv)}",
        env={**env, ENV_MARKER: stack_marker},
        cwd=cwd,
    )
    _CHILDREN[proc.pid] = proc
    try:
        started_at = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        started_at = 0.0  # died at once; is_alive() will say so
    record = PidRecord(proc.pid, started_at)
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(record.to_json(), encoding="utf-8")
    tmp.replace(pid_file)
    return Spawned(record, offset)


def terminate(record: PidRecord, timeout_s: float, *, hard: bool = False) -> bool:
    """SIGTERM the process group, wait, then SIGKILL. True if it had to be killed."""
    procs = _group_members(record)
    if not procs:
        return False
    first = signal.SIGKILL if hard else signal.SIGTERM
    _signal_group(record.pid, procs, first)
    alive = _wait_gone(procs, 0 if hard else timeout_s)
    killed = hard
    if alive:
        _signal_group(record.pid, alive, signal.SIGKILL)
        _wait_gone(alive, 10)
        killed = True
    for proc in procs:
        _reap(proc.pid)
    return killed


def terminate_many(records: Iterable[PidRecord], timeout_s: float) -> None:
    """Like terminate() for several processes at once: signal all, then wait once."""
    groups = [(record, _group_members(record)) for record in records]
    everyone: list[psutil.Process] = []
    for record, procs in groups:
        _signal_group(record.pid, procs, signal.SIGTERM)
        everyone += procs
    _kill_stragglers(everyone, timeout_s, kill_wait_s=10)


def marked_processes(stack_marker: str) -> list[psutil.Process]:
    """Every process of this stack: it carries the environment marker, or (for processes that
    rewrite their environment area, like redis-server's process title) it leads its own session
    and names the stack's directory on its command line."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(ENV_MARKER) == stack_marker or (
                os.getsid(proc.pid) == proc.pid and f"{stack_marker}/" in " ".join(proc.cmdline())
            ):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def sweep(stack_marker: str, timeout_s: float = 10) -> list[int]:
    """Kill whatever still carries the marker; returns the pids it had to stop."""
    procs = [p for p in marked_processes(stack_marker) if p.status() != psutil.STATUS_ZOMBIE]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _kill_stragglers(procs, timeout_s, kill_wait_s=5)
    return [proc.pid for proc in procs]


def _kill_stragglers(procs: list[psutil.Process], timeout_s: float, *, kill_wait_s: float) -> None:
    """After a SIGTERM: wait up to ``timeout_s``, SIGKILL whatever is left, then reap all."""
    alive = _wait_gone(procs, timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, kill_wait_s)
    for proc in procs:
        _reap(proc.pid)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (a server could bind it now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so TIME_WAIT leftovers do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """'name (pid N)' of the process listening on ``port``, when we may see it."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


# Where local stacks take their ports: below Linux's ephemeral range, so client sockets do not
# take them meanwhile. The test suite gives each pytest-xdist worker its own share of it.
PORT_RANGE = (20000, 32000)


def find_free_port_block(
    size: int = PORT_BLOCK_SIZE,
    low: int | None = None,
    high: int | None = None,
    attempts: int = 200,
) -> int:
    """A base port whose whole block is free now, from PORT_RANGE unless ``low``/``high``
    say otherwise. Random, so parallel test sessions rarely collide."""
    low = PORT_RANGE[0] if low is None else low
    high = PORT_RANGE[1] if high is None else high
    chooser = random.SystemRandom()
    for _ in range(attempts):
        base = chooser.randrange(low, high - size)
        if all(port_free(port) for port in range(base, base + size)):
            return base
    raise UserInputError(f"no block of {size} free ports found between {low} and {high}")


def read_tail(path: Path, lines: int, offset: int = 0) -> list[str]:
    """The last ``lines`` lines of ``path`` from byte ``offset`` on."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset, size - 256 * 1024)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return [line.rstrip() for line in text.splitlines()][-lines:] if lines > 0 else []


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until the processes exit (reaping our own children); returns those still alive."""
    alive = list(procs)

    def all_gone() -> bool:
        nonlocal alive
        alive = [proc for proc in alive if _running(proc)]
        return not alive

    with contextlib.suppress(WaitTimeout):
        wait_until("processes to exit", all_gone, timeout=timeout_s, interval=0.05)
    return alive


def _running(proc: psutil.Process) -> bool:
    """Still running; reaps it first when it is our own exited child."""
    _reap(proc.pid)
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _group_members(record: PidRecord) -> list[psutil.Process]:
    if not is_alive(record):
        return []
    try:
        leader = psutil.Process(record.pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_group(pgid: int, procs: list[psutil.Process], sig: signal.Signals) -> None:
    # The leader's pid is its group id (start_new_session); children that left the group
    # are signalled one by one.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def child_exit_code(pid: int) -> int | None:
    """Exit code of a process we spawned if it has exited, else None (-1: gone, code unknown)."""
    proc = _CHILDREN.get(pid)
    if proc is None:
        return None if psutil.pid_exists(pid) else -1
    code = proc.poll()
    if code is not None:
        _CHILDREN.pop(pid, None)
    return code


def _reap(pid: int) -> None:
    """Collect the exit status of our own dead child, so it does not linger as a zombie."""
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        if proc.poll() is None:
            _CHILDREN[pid] = proc  # still running
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def run_once(
    component: str,
    argv: list[str],
    log_file: Path,
    *,
    timeout_s: float,
    env: dict[str, str],
    cwd: Path | None = None,
) -> None:
    """Run a one-shot step (storage format, migrations), output appended to ``log_file``.

    Raises ComponentFailed with the tail of this run's output when it fails or times out.
    """
    proc, offset = _popen_logged(argv, log_file, f"running {' '.join(argv)}", env=env, cwd=cwd)
    try:
        code = proc.wait(timeout=timeout_s)
        reason = f"`{' '.join(argv[-3:])}` exited with {code}"
        failed = code != 0
    except subprocess.TimeoutExpired:
        # The step runs in its own session: kill the whole group, not just the leader.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reason, failed = f"`{' '.join(argv[-3:])}` did not finish within {timeout_s:.0f}s", True
    if failed:
        tail = read_tail(log_file, LOG_TAIL_LINES, offset)
        raise ComponentFailed(component, reason, str(log_file), tail)
