"""Real test hosts for the playbooks: network namespaces, each running its own sshd.

Each host is a network namespace with only a loopback (and, for load generators, a dummy
interface), so no address ever appears in the machine's own namespace. Ansible reaches a
host over real SSH through an ssh wrapper that runs the client inside the namespace.

sshd runs in a private mount namespace with a tmpfs on /run (its privilege-separation
directory lives there), so nothing is created in the machine's /run. The namespaces share
the machine's filesystem: the roles get a per-host scratch root directory for their files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from opsctl.paths import REPO_ROOT
from opsctl.poll import WaitTimeout, wait_until

PLAYBOOKS_DIR = REPO_ROOT / "playbooks"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
SSHD = Path("/usr/sbin/sshd")
SSH_PORT = 2222  # every namespace is brand new, so any port is free in it; hosts add their index
SOURCE_INTERFACE = "im-src0"
SOURCE_BASE_ADDRESS = "10.77.0.1/24"
# The open-files hard limit sshd (and so every session) starts with: the "current" nofile
# the roles must not lower.
SESSION_NOFILE = 16384
# sysctls that are per network namespace on this kernel and that the roles change.
NETNS_SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
)
HOST_SYSCTLS = ("fs.file-max", "fs.nr_open", "net.netfilter.nf_conntrack_max")

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def require(path: Path, install: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is required; install {install}")
    return path


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kwargs)


def in_netns(netns: str, *argv: str) -> str:
    return run(["ip", "netns", "exec", netns, *argv]).stdout


def host_sysctl(key: str) -> str:
    return " ".join(Path("/proc/sys", *key.split(".")).read_text().split())


@dataclass
class NetnsHost:
    name: str
    netns: str
    workdir: Path
    root_dir: Path
    groups: tuple[str, ...]
    hostvars: dict[str, Any] = field(default_factory=dict)
    sshd: subprocess.Popen[bytes] | None = None

    def sysctl(self, key: str) -> str:
        return " ".join(in_netns(self.netns, "sysctl", "-n", key).split())

    def addresses(self, device: str) -> list[str]:
        out = in_netns(self.netns, "ip", "-o", "-4", "addr", "show", "dev", device)
        return re.findall(r"inet (\S+)", out)

    def files(self) -> dict[str, str]:
        """Every file the roles wrote under this host's scratch root, by path."""
        return {
            str(path.relative_to(self.root_dir)): path.read_text()
            for path in sorted(self.root_dir.rglob("*"))
            if path.is_file()
        }


@dataclass
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str

    def recap(self) -> dict[str, dict[str, int]]:
        return {
            match["host"]: {
                key: int(match[key]) for key in ("ok", "changed", "unreachable", "failed")
            }
            for match in _RECAP.finditer(self.stdout)
        }

    def explain(self) -> str:
        tail = f"--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-3000:]}"
        return f"exit {self.returncode}\n{tail}"


class NetnsLab:
    """Creates the hosts, writes an inventory for them, runs playbooks, and tears it all down."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hosts: dict[str, NetnsHost] = {}
        self._client_key = workdir / "client_ed25519"
        self._known_hosts = workdir / "known_hosts"
        self._tag = f"im9t{os.getpid() % 100000}"
        # SSH control sockets: a short path (sockets are limited to 108 bytes), one per host.
        self._control_dir = Path(tempfile.mkdtemp(prefix="im9cp", dir="/tmp"))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, hosts: Mapping[str, tuple[str, ...]]) -> None:
        require(SSHD, "Debian's openssh-server (scripts/setup/apt-packages.txt)")
        for tool in ("ip", "ssh", "ssh-keygen", "unshare", "sftp"):
            if shutil.which(tool) is None:
                pytest.fail(f"required tool '{tool}' is not installed; run `make setup`")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self._client_key)])
        for name, groups in hosts.items():
            self._start_host(name, groups)

    def _start_host(self, name: str, groups: tuple[str, ...]) -> None:
        netns = f"{self._tag}-{name}"
        port = SSH_PORT + len(self.hosts)
        workdir = self.workdir / name
        root_dir = workdir / "root"
        root_dir.mkdir(parents=True)
        host = NetnsHost(name, netns, workdir, root_dir, groups)
        self.hosts[name] = host  # registered first, so teardown finds a half-built host
        run(["ip", "netns", "add", netns])
        in_netns(netns, "ip", "link", "set", "lo", "up")
        # An interface for extra source addresses: a veth pair with both ends in here (this
        # kernel has no dummy driver), so its 10.x addresses exist only in the namespace.
        peer = f"{SOURCE_INTERFACE}p"
        in_netns(netns, "ip", "link", "add", SOURCE_INTERFACE, "type", "veth", "peer", "name", peer)
        in_netns(netns, "ip", "addr", "add", SOURCE_BASE_ADDRESS, "dev", SOURCE_INTERFACE)
        in_netns(netns, "ip", "link", "set", peer, "up")
        in_netns(netns, "ip", "link", "set", SOURCE_INTERFACE, "up")
        host_key = workdir / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        authorized = workdir / "authorized_keys"
        authorized.write_text(Path(f"{self._client_key}.pub").read_text())
        config = workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",  # no pam_limits: sessions keep sshd's own nofile
                    "StrictModes no",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )
        with self._known_hosts.open("a") as known:
            known.write(f"{name} {Path(f'{host_key}.pub').read_text()}")
        # A private /run for sshd's privilege-separation directory; the session shares it.
        script = (
            "mount -t tmpfs -o size=1m tmpfs /run && mkdir -m 0755 /run/sshd"
            f" && exec {SSHD} -D -e -f {config}"
        )
        with (workdir / "sshd.log").open("wb") as log:
            host.sshd = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    "prlimit",
                    f"--nofile={SESSION_NOFILE}:{SESSION_NOFILE}",
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for wrapper, tool in (("ssh", "/usr/bin/ssh"), ("sftp", "/usr/bin/sftp")):
            path = workdir / wrapper
            path.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {tool} "$@"\n')
            path.chmod(0o755)
        host.hostvars = {
            "ansible_host": "127.0.0.1",
            "ansible_port": port,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_executable": str(workdir / "ssh"),
            "ansible_sftp_executable": str(workdir / "sftp"),
            "ansible_ssh_private_key_file": str(self._client_key),
            "ansible_ssh_common_args": (
                f"-o HostKeyAlias={name} -o UserKnownHostsFile={self._known_hosts} "
                "-o StrictHostKeyChecking=yes"
            ),
            "ansible_control_path_dir": str(self._control_dir / name),
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        self._wait_for_ssh(host)

    def _wait_for_ssh(self, host: NetnsHost) -> None:
        argv = [
            str(host.workdir / "ssh"),
            "-p",
            str(host.hostvars["ansible_port"]),
            "-i",
            str(self._client_key),
            *host.hostvars["ansible_ssh_common_args"].split(),
            "-o",
            "BatchMode=yes",
            "root@127.0.0.1",
            "true",
        ]
        stderr = ""

        def refused(why: str) -> NoReturn:
            log = (host.workdir / "sshd.log").read_text()
            pytest.fail(f"sshd in {host.netns} {why}: {stderr}\n{log}")

        def accepts() -> bool:
            nonlocal stderr
            probe = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=15)
            stderr = probe.stderr
            if probe.returncode == 0:
                return True
            assert host.sshd is not None
            if host.sshd.poll() is not None:
                refused("exited before accepting SSH")
            return False

        try:
            wait_until(f"sshd in {host.netns} to accept SSH", accepts, timeout=15, interval=0.2)
        except WaitTimeout:
            refused("did not accept SSH")

    def stop(self) -> None:
        """Kill every sshd and delete every namespace; runs even when start failed midway."""
        for host in self.hosts.values():
            # SSH control masters and sessions run inside the namespace: all of them are ours.
            pids = subprocess.run(
                ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                if host.sshd is None or int(pid) != host.sshd.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGTERM)
            if host.sshd is not None and host.sshd.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.sshd.pid, signal.SIGTERM)
                try:
                    host.sshd.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(host.sshd.pid, signal.SIGKILL)
                    host.sshd.wait(timeout=10)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
        self.hosts.clear()
        shutil.rmtree(self._control_dir, ignore_errors=True)

    # -- inventory and runs ------------------------------------------------------------------

    def inventory(self, path: Path, extra_hostvars: Mapping[str, Mapping[str, Any]]) -> Path:
        groups: dict[str, dict[str, Any]] = {}
        for host in self.hosts.values():
            hostvars = {**host.hostvars, **extra_hostvars.get(host.name, {})}
            for group in host.groups:
                groups.setdefault(group, {"hosts": {}})["hosts"][host.name] = hostvars
        path.write_text(yaml.safe_dump({"all": {"children": groups}}, sort_keys=True))
        return path

    def playbook(
        self,
        playbook: str,
        inventory: Path,
        *args: str,
        extra_vars: Mapping[str, Any] | None = None,
    ) -> PlaybookRun:
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), *args]
        if extra_vars:
            vars_file = self.workdir / f"extra-vars-{time.monotonic_ns()}.yml"
            vars_file.write_text(yaml.safe_dump(dict(extra_vars)))
            argv += ["-e", f"@{vars_file}"]
        argv.append(str(PLAYBOOKS_DIR / playbook))
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=600,
            env=ansible_env(self.workdir),
            cwd=REPO_ROOT,
            check=False,
        )
        return PlaybookRun(done.returncode, done.stdout, done.stderr)


def ansible_env(workdir: Path) -> dict[str, str]:
    """Ansible's environment for tests: the repo's config, nothing left in ~/.ansible."""
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(PLAYBOOKS_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(workdir / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
            "ANSIBLE_REMOTE_TEMP": str(workdir / "ansible-remote"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            # Control masters live for the test only: teardown kills them with the namespace.
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=300s",
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        }
    )
    return env


@contextlib.contextmanager
def netns_lab(workdir: Path, hosts: Mapping[str, tuple[str, ...]]) -> Iterator[NetnsLab]:
    lab = NetnsLab(workdir)
    try:
        lab.start(hosts)
        yield lab
    finally:
        lab.stop()
