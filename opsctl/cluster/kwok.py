"""Run simulated Kubernetes clusters with kwokctl's binary runtime: real kube-apiserver, etcd,
controller-manager and scheduler, with kwok-controller playing every kubelet.

Everything lives under one state directory (kwokctl's KWOK_WORKDIR): each cluster's config,
PKI, etcd data, pid files and logs, plus one merged kubeconfig whose contexts are the stack
spec's ``kubeContext`` values. Nothing is downloaded: every binary is the pinned build from
``make setup``, and kwokctl runs with an unusable HTTP proxy so a stray fetch fails fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from kubernetes.client import ApiClient, CoreV1Api, V1Node
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from opsctl.cluster import _kubeconfig
from opsctl.cluster._plan import ClusterPlan, node_manifests
from opsctl.cluster._tools import Toolset, build_tools, find_tools
from opsctl.errors import CheckFailed, ToolMissing, UserInputError
from opsctl.paths import REPO_ROOT, cache_dir
from opsctl.poll import WaitTimeout, wait_until

STATE_DIR_ENV = "OPSCTL_CLUSTER_STATE_DIR"
METADATA_FILE = "opsctl-cluster.json"
KWOK_KUBECONFIG = "kubeconfig.yaml"
MERGED_KUBECONFIG = "kubeconfig"
KWOKCTL_CONFIG = "kwokctl.yaml"
STAGES_DIR = Path(__file__).parent / "stages"
# Bumped when the Stages change, so a cluster made with older ones is replaced on `up`.
STAGES_REVISION = "2"  # 2: waits for the Certificate CRD in OpenAPI v3 first
# A loopback port nothing listens on: any download kwokctl attempts fails at once.
_NO_DOWNLOADS_PROXY = "http://127.0.0.1:9"

Step = Callable[[str], None]


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or REPO_ROOT / ".state" / "kwok")


@dataclass(frozen=True)
class ClusterStatus:
    """What ``opsctl cluster status`` reports for one cluster."""

    name: str
    stack: str
    region: str
    context: str
    apiserver: str | None
    healthy: bool
    nodes: int | None
    ready_nodes: int | None
    pids: list[int] = field(default_factory=list)
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["readyNodes"] = data.pop("ready_nodes")
        return data


def _noop(_: str) -> None:
    return None


class KwokClusters:
    """The simulated clusters under one state directory."""

    def __init__(self, state_dir: Path | None = None, *, tools: Toolset | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self._tools = tools

    # -- paths -------------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / MERGED_KUBECONFIG

    @property
    def _scratch_kubeconfig(self) -> Path:
        return self.state_dir / "kwokctl-scratch-kubeconfig"

    def cluster_dir(self, name: str) -> Path:
        return self.state_dir / "clusters" / name

    def names(self) -> list[str]:
        """Clusters that exist on disk (running or not)."""
        root = self.state_dir / "clusters"
        if not root.is_dir():
            return []
        return sorted(entry.name for entry in root.iterdir() if (entry / "kwok.yaml").is_file())

    @property
    def tools(self) -> Toolset:
        if self._tools is None:
            self._tools = find_tools(build=build_tools)  # first use builds what is missing
        return self._tools

    # -- up ----------------------------------------------------------------------------------

    def up(
        self,
        plans: Sequence[ClusterPlan],
        *,
        nodes_per_zone: int = 3,
        timeout: float = 180.0,
        on_step: Step = _noop,
    ) -> list[ClusterStatus]:
        """Create (or reuse, when already healthy) one cluster per plan; returns their status."""
        tools = self.tools  # fail on missing binaries before anything starts
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for plan in plans:
            self._up_one(plan, tools, nodes_per_zone=nodes_per_zone, timeout=timeout, step=on_step)
        self.write_kubeconfig(current=plans[0].context if plans else None)
        wanted = {plan.name for plan in plans}
        return [status for status in self.status() if status.name in wanted]

    def _up_one(
        self, plan: ClusterPlan, tools: Toolset, *, nodes_per_zone: int, timeout: float, step: Step
    ) -> None:
        deadline = time.monotonic() + timeout
        if plan.name in self.names():
            current = self._status_of(plan.name)
            stages = self._read_metadata(plan.name).get("stages")
            if current.healthy and current.context == plan.context and stages == STAGES_REVISION:
                step(f"{plan.context}: already running at {current.apiserver}")
                self._ensure_nodes(plan, nodes_per_zone, deadline, step)
                return
            step(f"{plan.context}: replacing a stopped or broken cluster")
            self._delete(plan.name)
        step(f"{plan.context}: starting etcd, kube-apiserver, controller-manager, scheduler, kwok")
        try:
            with _port_allocation_lock():
                self._create(plan, tools, deadline)
            step(f"{plan.context}: waiting for the API server and default service account")
            self._wait_serving(plan.name, deadline)
            self._ensure_stages(plan, deadline, step)
            self._write_metadata(plan)
            self._ensure_nodes(plan, nodes_per_zone, deadline, step)
        except BaseException:
            # Never leave half a cluster running; keep its logs for the post-mortem.
            kept = self._keep_logs(plan.name)
            with suppress(Exception):
                self._delete(plan.name)
            step(f"{plan.context}: failed; component logs kept in {kept}")
            raise

    def _keep_logs(self, name: str) -> Path:
        logs = self.cluster_dir(name) / "logs"
        kept = self.state_dir / "failed" / name
        if logs.is_dir():
            shutil.rmtree(kept, ignore_errors=True)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(logs, kept)
        return kept

    def _create(self, plan: ClusterPlan, tools: Toolset, deadline: float) -> None:
        self._kwokctl(
            [
                "create",
                "cluster",
                "--name",
                plan.name,
                "--runtime",
                "binary",
                "--kubeconfig",
                "",
                "--quiet-pull",
                "--disable-qps-limits",
                "--etcd-binary",
                str(tools["etcd"]),
                "--kube-apiserver-binary",
                str(tools["kube-apiserver"]),
                "--kube-controller-manager-binary",
                str(tools["kube-controller-manager"]),
                "--kube-scheduler-binary",
                str(tools["kube-scheduler"]),
                "--kwok-controller-binary",
                str(tools["kwok"]),
            ],
            timeout=max(deadline - time.monotonic(), 10.0),
            what=f"creating cluster {plan.name}",
        )

    def _ensure_stages(self, plan: ClusterPlan, deadline: float, step: Step) -> None:
        """kwok's resource lifecycles, as Stage objects (kwok runs with --enable-crds=Stage).

        kwok's own node and pod stages, plus what the operators and the cloud would do
        (opsctl/cluster/stages/): LoadBalancer addresses, and cert-manager issuing
        Certificates. The Certificate CRD (the pinned upstream one) goes in first, since kwok
        starts watching a kind only when its first Stage appears.
        """
        from kubernetes.client import CustomObjectsApi

        from opsctl.cluster.crds import install_crds

        documents = [
            yaml.safe_load(path.read_text(encoding="utf-8"))
            for path in sorted(STAGES_DIR.glob("*.yaml"))
        ]
        with self.api_client(plan.name) as api_client:
            try:
                install_crds(
                    api_client, ["cert-manager"], kinds={"Certificate"}, timeout=_left(deadline)
                )
            except ToolMissing as missing:
                step(f"{plan.context}: no Certificate stage ({missing.message})")
                documents = [
                    d for d in documents if d["spec"]["resourceRef"]["kind"] != "Certificate"
                ]
            else:
                # kwok reads a kind's schema from /openapi/v3 once, when its first Stage
                # appears, and gives up if the group is not published yet: an Established CRD
                # can still be missing there for a moment (seen: Certificates never issued).
                wait_until(
                    "cert-manager.io/v1 in the API server's OpenAPI v3",
                    lambda: _openapi_v3_has(api_client, "apis/cert-manager.io/v1"),
                    timeout=_left(deadline),
                    interval=0.2,
                )
            api = CustomObjectsApi(api_client)
            for document in documents:
                try:
                    api.create_cluster_custom_object(
                        "kwok.x-k8s.io", "v1alpha1", "stages", document
                    )
                except ApiException as error:
                    if error.status != 409:
                        raise CheckFailed(
                            f"{plan.context}: creating Stage {document['metadata']['name']} "
                            f"failed: {error.status} {error.reason}"
                        ) from error
        step(f"{plan.context}: kwok stages: {', '.join(d['metadata']['name'] for d in documents)}")

    def _ensure_nodes(self, plan: ClusterPlan, per_zone: int, deadline: float, step: Step) -> None:
        manifests = node_manifests(plan, per_zone=per_zone)
        with self.api_client(plan.name) as api_client:
            core = CoreV1Api(api_client)
            existing = {_name(node) for node in core.list_node().items}
            created = 0
            for manifest in manifests:
                if manifest["metadata"]["name"] in existing:
                    continue
                try:
                    core.create_node(body=V1Node.model_validate(manifest))
                    created += 1
                except ApiException as error:
                    if error.status != 409:
                        raise CheckFailed(
                            f"{plan.context}: creating node {manifest['metadata']['name']} "
                            f"failed: {error.status} {error.reason}"
                        ) from error
            if created:
                step(f"{plan.context}: created {created} nodes in zones {', '.join(plan.zones)}")
            wanted = {manifest["metadata"]["name"] for manifest in manifests}
            ready: set[str] = set()

            def all_ready() -> bool:
                nonlocal ready
                ready = {_name(node) for node in core.list_node().items if _node_ready(node)}
                return wanted <= ready

            try:
                wait_until("nodes to be Ready", all_ready, timeout=_left(deadline))
            except WaitTimeout:
                missing = ", ".join(sorted(wanted - ready))
                raise CheckFailed(
                    f"{plan.context}: nodes not Ready in time: {missing}",
                    hint=f"component logs: {self.state_dir / 'failed' / plan.name}",
                ) from None

    def _wait_serving(self, name: str, deadline: float) -> None:
        """Ready for workloads: /readyz passes and the default service account exists.

        Without that account, admission rejects every pod in 'default'.
        """
        last_problem = "not checked"

        def serving() -> bool:
            nonlocal last_problem
            try:
                with self.api_client(name) as api_client:
                    if _readyz(api_client, timeout=2.0):
                        CoreV1Api(api_client).read_namespaced_service_account(
                            "default", "default", _request_timeout=2.0
                        )
                        return True
                    last_problem = "/readyz is not ok yet"
            except Exception as error:  # the API server is still starting
                last_problem = f"{type(error).__name__}: {error}"
            return False

        try:
            wait_until(f"cluster {name} to serve", serving, timeout=_left(deadline))
        except WaitTimeout:
            raise CheckFailed(
                f"cluster {name}: API server not ready in time ({last_problem.splitlines()[0]})",
                hint=f"component logs: {self.state_dir / 'failed' / name}",
            ) from None

    # -- down --------------------------------------------------------------------------------

    def down(self, names: Sequence[str] | None = None) -> list[str]:
        """Delete the named clusters (default: all) and make sure none of their processes live."""
        existing = self.names()
        targets = existing if names is None else [name for name in names if name in existing]
        for name in targets:
            self._delete(name)
        self.write_kubeconfig()
        return targets

    def _delete(self, name: str) -> None:
        with suppress(CheckFailed):
            # kwokctl stops components by pid file; the sweep below catches any straggler.
            self._kwokctl(
                # kwokctl insists on a kubeconfig to clean; give it one nobody reads.
                [
                    "delete",
                    "cluster",
                    "--name",
                    name,
                    "--kubeconfig",
                    str(self._scratch_kubeconfig),
                ],
                timeout=60.0,
                what=f"deleting cluster {name}",
            )
        leftovers = _terminate(self.cluster_processes(name))
        if leftovers:
            raise CheckFailed(f"cluster {name}: processes survived SIGKILL: {leftovers}")
        directory = self.cluster_dir(name)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)

    def cluster_processes(self, name: str) -> list[int]:
        """Pids of every process whose command line points into the cluster's directory."""
        marker = str(self.cluster_dir(name)) + os.sep
        pids = set()
        for process in psutil.process_iter(["pid", "cmdline"]):
            cmdline = process.info.get("cmdline") or []
            if any(marker in argument for argument in cmdline):
                pids.add(int(process.info["pid"]))
        for pid_file in (self.cluster_dir(name) / "pids").glob("*.pid"):
            with suppress(ValueError, OSError):
                pid = int(pid_file.read_text().strip())
                if psutil.pid_exists(pid) and _cmdline_mentions(pid, marker):
                    pids.add(pid)
        return sorted(pids - {os.getpid()})

    # -- status ------------------------------------------------------------------------------

    def status(self) -> list[ClusterStatus]:
        return [self._status_of(name) for name in self.names()]

    def _status_of(self, name: str) -> ClusterStatus:
        meta = self._read_metadata(name)
        pids = self.cluster_processes(name)
        apiserver: str | None = None
        problem: str | None = None
        nodes = ready_nodes = None
        healthy = False
        try:
            apiserver = _kubeconfig.server_of(self._kwok_kubeconfig(name), name)
        except CheckFailed as error:
            problem = error.message
        if apiserver is not None and not pids:
            problem = "stopped: no component process is running"
        elif apiserver is not None:
            try:
                with self.api_client(name) as api_client:
                    if _readyz(api_client, timeout=2.0):
                        items = CoreV1Api(api_client).list_node(_request_timeout=3.0).items
                        nodes = len(items)
                        ready_nodes = sum(_node_ready(node) for node in items)
                        healthy = True
                    else:
                        problem = "/readyz is failing"
            except Exception as error:  # unreachable API server: report, don't raise
                problem = f"API server unreachable: {type(error).__name__}"
        return ClusterStatus(
            name=name,
            stack=meta.get("stack", "?"),
            region=meta.get("region", name),
            context=meta.get("context", f"kwok-{name}"),
            apiserver=apiserver,
            healthy=healthy,
            nodes=nodes,
            ready_nodes=ready_nodes,
            pids=pids,
            problem=problem,
        )

    # -- kubeconfig and clients ----------------------------------------------------------------

    def _kwok_kubeconfig(self, name: str) -> dict[str, Any]:
        path = self.cluster_dir(name) / KWOK_KUBECONFIG
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise CheckFailed(f"{path}: unreadable kubeconfig: {error}") from error
        if not isinstance(loaded, dict):
            raise CheckFailed(f"{path}: not a kubeconfig")
        return loaded

    def write_kubeconfig(self, current: str | None = None) -> Path:
        """Rewrite the merged kubeconfig from every cluster on disk."""
        entries = []
        for name in self.names():
            context = self._read_metadata(name).get("context", f"kwok-{name}")
            with suppress(CheckFailed):
                entries.append(_kubeconfig.renamed(self._kwok_kubeconfig(name), context, name))
        if current is None and self.kubeconfig_path.is_file():
            with suppress(OSError, yaml.YAMLError, AttributeError):
                current = yaml.safe_load(self.kubeconfig_path.read_text()).get("current-context")
        document = _kubeconfig.merged(entries, current)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        staging = self.kubeconfig_path.with_suffix(".tmp")
        staging.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        staging.chmod(0o600)
        staging.replace(self.kubeconfig_path)
        return self.kubeconfig_path

    @contextmanager
    def api_client(self, name: str) -> Iterator[ApiClient]:
        """A kubernetes client for one cluster, closed on exit."""
        path = self.cluster_dir(name) / KWOK_KUBECONFIG
        client: ApiClient = new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def name_for_context(self, context: str) -> str:
        for name in self.names():
            if self._read_metadata(name).get("context") == context:
                return name
        raise UserInputError(f"no simulated cluster has context '{context}'")

    # -- helpers -----------------------------------------------------------------------------

    def _write_metadata(self, plan: ClusterPlan) -> None:
        path = self.cluster_dir(plan.name) / METADATA_FILE
        data = {"stack": plan.stack, "region": plan.region, "context": plan.context}
        data["zones"] = ",".join(plan.zones)
        data["stages"] = STAGES_REVISION
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def _read_metadata(self, name: str) -> dict[str, str]:
        path = self.cluster_dir(name) / METADATA_FILE
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(key): str(value) for key, value in loaded.items()}

    def _kwokctl_env(self) -> dict[str, str]:
        tools = self.tools
        # kwokctl looks kubectl up on PATH (it polls the new API server with it); give it ours.
        bin_dir = self.state_dir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        link = bin_dir / "kubectl"
        if not link.is_symlink() or link.resolve() != tools["kubectl"].resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(tools["kubectl"])
        env = dict(os.environ)
        env.update(
            {
                "KWOK_WORKDIR": str(self.state_dir),
                "KWOK_KUBE_VERSION": tools.versions["kube-apiserver"],
                "KWOK_RUNTIME": "binary",
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
                "HTTP_PROXY": _NO_DOWNLOADS_PROXY,
                "HTTPS_PROXY": _NO_DOWNLOADS_PROXY,
                "http_proxy": _NO_DOWNLOADS_PROXY,
                "https_proxy": _NO_DOWNLOADS_PROXY,
                "NO_PROXY": "127.0.0.1,localhost,::1",
                "no_proxy": "127.0.0.1,localhost,::1",
            }
        )
        env.pop("KUBECONFIG", None)
        return env

    def _kwokctl_config(self) -> Path:
        """kwokctl defaults bind every component to 0.0.0.0; keep them on loopback."""
        path = self.state_dir / KWOKCTL_CONFIG
        document = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "bindAddress": "127.0.0.1",
                "runtime": "binary",
                "quietPull": True,
                "kubectlBinary": str(self.tools["kubectl"]),
                # Stages are objects in the cluster (see _ensure_stages), so lifecycles for
                # custom resources can be added once their CRDs exist.
                "enableCRDs": ["Stage"],
            },
        }
        text = yaml.safe_dump(document, sort_keys=False)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return path

    def _kwokctl(self, args: list[str], *, timeout: float, what: str) -> str:
        command = [str(self.tools["kwokctl"]), "--config", str(self._kwokctl_config()), *args]
        try:
            done = subprocess.run(
                command,
                env=self._kwokctl_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as error:
            raise CheckFailed(f"{what}: kwokctl did not finish within {timeout:.0f} s") from error
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise CheckFailed(f"{what}: kwokctl exited {done.returncode}:\n{tail}")
        return done.stdout


@contextmanager
def _port_allocation_lock() -> Iterator[None]:
    """kwokctl picks ports by probing which are free, so two creates at once (two test
    sessions, say) could pick the same ones. Serialise creates machine-wide: kwokctl returns
    once the components have bound their ports."""
    lock_path = cache_dir() / "locks" / "kwokctl-create.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _readyz(api_client: ApiClient, *, timeout: float) -> bool:
    host = api_client.configuration.host
    response = api_client.call_api("GET", f"{host}/readyz", _request_timeout=timeout)
    return bool(response.status == 200)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (monotonic), never negative."""
    return max(deadline - time.monotonic(), 0.0)


def _name(node: V1Node) -> str:
    return node.metadata.name if node.metadata and node.metadata.name else ""


def _node_ready(node: V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _cmdline_mentions(pid: int, marker: str) -> bool:
    try:
        return any(marker in argument for argument in psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _terminate(pids: list[int], grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns pids still alive after that."""
    processes = []
    for pid in pids:
        with suppress(psutil.Error):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            processes.append(process)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with suppress(psutil.Error):
            process.kill()
    _, still = psutil.wait_procs(alive, timeout=5.0)
    return [process.pid for process in still]


def _openapi_v3_has(api_client: ApiClient, group_version_path: str) -> bool:
    method, url, headers, _, _ = api_client.param_serialize(
        "GET", "/openapi/v3", auth_settings=["BearerToken"]
    )
    answer: Any = api_client.call_api(method, url, header_params=headers, _request_timeout=10)
    answer.read()
    paths = json.loads(answer.data).get("paths", {})
    return group_version_path in paths
