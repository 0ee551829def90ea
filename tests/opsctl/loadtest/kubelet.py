"""A kubelet for kwok: runs a load-test run's pods as local processes, from their pod specs.

kwok runs no containers, so this plays the node's part for the pods of one run, the way a
kubelet would, and nothing more:

- starts each pod once kwok has scheduled it and marked it running: the container's exact
  command, args and environment from the API server's pod object (``fieldRef`` resolved,
  ``KUBERNETES_SERVICE_HOST``/``_PORT`` pointing at the kwok API server);
- mounts its volumes as directories: ConfigMaps and Secrets read from the API, ``emptyDir``,
  and the ServiceAccount's projected token (a TokenRequest bound to the pod, the cluster CA
  from ``kube-root-ca.crt``, the namespace), rewriting mount paths in args and environment;
- the pod network is loopback: 0.0.0.0 binds 127.0.0.1, ``<service>.<namespace>.svc`` is
  127.0.0.1, and the master port is a free local port;
- the image's working directory (/opt/app) is this repository;
- reports each exit as the pod's status (terminated, exit code), and kills the process when
  the pod is deleted.

kwok's own ``pod-complete`` Stage marks Job pods Succeeded at once; ``without_job_completion``
removes it for the test and puts it back.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from opsctl.cluster.kwok import STAGES_DIR
from opsctl.loadtest.oncluster import APP_DIR, MASTER_PORT
from opsctl.loadtest.targets import free_port
from opsctl.paths import REPO_ROOT

LABEL = "app.kubernetes.io/instance"


@contextmanager
def without_job_completion(api_client: Any, namespace: str) -> Iterator[None]:
    """kwok without its pod-complete Stage; returns once a probe Job's pod stays Running."""
    from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi

    api = CustomObjectsApi(api_client)
    document = yaml.safe_load((STAGES_DIR / "pod-complete.yaml").read_text())
    api.delete_cluster_custom_object("kwok.x-k8s.io", "v1alpha1", "stages", "pod-complete")
    try:
        _wait_for_running_job_pods(BatchV1Api(api_client), CoreV1Api(api_client), namespace)
        yield
    finally:
        api.create_cluster_custom_object("kwok.x-k8s.io", "v1alpha1", "stages", document)


def _wait_for_running_job_pods(batch: Any, core: Any, namespace: str) -> None:
    for attempt in range(20):
        name = f"kwok-probe-{attempt}"
        container = {"name": "probe", "image": "probe"}
        batch.create_namespaced_job(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "backoffLimit": 0,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
                },
            },
        )
        phases: list[str] = []
        for _ in range(30):
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
            phases = [pod.status.phase for pod in pods]
            if phases == ["Running"] or "Succeeded" in phases:
                break
            time.sleep(0.2)
        if phases == ["Running"]:
            time.sleep(1.5)
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
            phases = [pod.status.phase for pod in pods]
        batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        if phases == ["Running"]:
            return
        time.sleep(0.5)
    raise AssertionError("kwok kept completing Job pods after its pod-complete Stage was deleted")


class ProcessKubelet:
    """Plays kubelet for the pods of ``run``, or with ``run=None`` of every run in the
    namespace (a capacity search creates one run per step)."""

    def __init__(self, api_client: Any, namespace: str, run: str | None, workdir: Path) -> None:
        from kubernetes.client import CoreV1Api

        self.api_client = api_client
        self.core = CoreV1Api(api_client)
        self.namespace = namespace
        self.run = run
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.reported: set[str] = set()
        self.gone: set[str] = set()
        self.master_ports: dict[str, int] = {}  # run -> its master's local port
        server = urlsplit(api_client.configuration.host)
        self.api_host, self.api_port = server.hostname or "127.0.0.1", str(server.port or 443)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[BaseException] = []

    def __enter__(self) -> ProcessKubelet:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def pods(self, component: str) -> list[str]:
        return sorted(name for name in self.procs if f"-{component}-" in name)

    def kill(self, pod: str) -> None:
        """The process dies (OOM kill, node loss): SIGKILL; the status follows from the exit."""
        self.procs[pod].send_signal(signal.SIGKILL)

    def log(self, pod: str) -> str:
        path = self.workdir / pod / "log"
        return path.read_text(errors="replace") if path.is_file() else ""

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as error:
                self.errors.append(error)
            self._stop.wait(0.3)

    def _sync(self) -> None:
        from kubernetes.client.exceptions import ApiException

        selector = LABEL if self.run is None else f"{LABEL}={self.run}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        present = set()
        for pod in pods.items:
            name = pod.metadata.name
            present.add(name)
            if pod.metadata.deletion_timestamp is not None:
                self._terminate(name)
            elif name not in self.procs and name not in self.gone and pod.status.phase == "Running":
                try:
                    self.procs[name] = self._start(pod)
                except ApiException as error:
                    if error.status != 404:
                        raise
                    self.gone.add(name)  # its run was deleted before it started: never runs
            elif name in self.procs and name not in self.reported:
                code = self.procs[name].poll()
                if code is not None:
                    self._report_exit(pod, code)
        for name in set(self.procs) - present:
            self._terminate(name)

    def _terminate(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _report_exit(self, pod: Any, code: int) -> None:
        self.reported.add(pod.metadata.name)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        container = pod.spec.containers[0]
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": code if code >= 0 else 128 - code,
                            "reason": "Completed" if code == 0 else "Error",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.patch_namespaced_pod_status(
                pod.metadata.name, self.namespace, {"status": status}
            )
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile (its run was cleaned up): nothing to say
                raise

    # -- starting a pod ------------------------------------------------------------------

    def _start(self, pod: Any) -> subprocess.Popen[bytes]:
        spec = self.api_client.sanitize_for_serialization(pod)
        name = spec["metadata"]["name"]
        root = self.workdir / name
        root.mkdir(parents=True)
        container = spec["spec"]["containers"][0]
        volumes = {v["name"]: v for v in spec["spec"].get("volumes", [])}
        paths: dict[str, str] = {APP_DIR: str(REPO_ROOT)}
        for mount in container.get("volumeMounts", []):
            local = self._volume(volumes[mount["name"]], root / mount["name"], spec)
            if "subPath" in mount:
                local = local / mount["subPath"]
            paths[mount["mountPath"]] = str(local)
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": self.api_port,
        }
        for item in container.get("env", []):
            if "valueFrom" not in item:  # the API server leaves out an empty value
                env[item["name"]] = self._local(item.get("value", ""), paths)
            else:
                field = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": name, "metadata.namespace": self.namespace}[
                    field
                ]
        command = [sys.executable if part == "python" else part for part in container["command"]]
        port = self.master_ports.setdefault(spec["metadata"]["labels"][LABEL], free_port())
        args = [self._network(self._local(arg, paths), port) for arg in container.get("args", [])]
        log = (root / "log").open("wb")
        return subprocess.Popen(
            [*command, *args],
            cwd=self._local(container.get("workingDir", APP_DIR), paths),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _volume(self, volume: dict[str, Any], where: Path, pod: dict[str, Any]) -> Path:
        where.mkdir(parents=True)
        if "configMap" in volume:
            self._write(
                where,
                self.core.read_namespaced_config_map(
                    volume["configMap"]["name"], self.namespace
                ).data
                or {},
            )
        elif "secret" in volume:
            secret = self.core.read_namespaced_secret(
                volume["secret"]["secretName"], self.namespace
            )
            data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            self._write(where, data)
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    self._write(where, {source["serviceAccountToken"]["path"]: self._token(pod)})
                elif "configMap" in source:
                    data = (
                        self.core.read_namespaced_config_map(
                            source["configMap"]["name"], self.namespace
                        ).data
                        or {}
                    )
                    self._write(
                        where, {i["path"]: data[i["key"]] for i in source["configMap"]["items"]}
                    )
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"]["items"]:
                        assert item["fieldRef"]["fieldPath"] == "metadata.namespace"
                        self._write(where, {item["path"]: self.namespace})
        else:
            assert "emptyDir" in volume, volume
        return where

    def _token(self, pod: dict[str, Any]) -> str:
        from kubernetes.client import (
            AuthenticationV1TokenRequest,
            V1BoundObjectReference,
            V1TokenRequestSpec,
        )

        request = AuthenticationV1TokenRequest(
            spec=V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=3600,
                bound_object_ref=V1BoundObjectReference(
                    kind="Pod",
                    api_version="v1",
                    name=pod["metadata"]["name"],
                    uid=pod["metadata"]["uid"],
                ),
            )
        )
        answer = self.core.create_namespaced_service_account_token(
            pod["spec"]["serviceAccountName"], self.namespace, request
        )
        return str(answer.status.token)

    @staticmethod
    def _write(where: Path, files: dict[str, str]) -> None:
        for key, value in files.items():
            (where / key).write_text(value, encoding="utf-8")

    @staticmethod
    def _local(value: str, paths: dict[str, str]) -> str:
        for mount in sorted(paths, key=len, reverse=True):
            if value == mount or value.startswith(mount + "/") or f"={mount}" in value:
                return value.replace(mount, paths[mount], 1)
        return value

    @staticmethod
    def _network(arg: str, port: int) -> str:
        if arg == "--master-bind-host=0.0.0.0":
            return "--master-bind-host=127.0.0.1"
        if arg.startswith("--master-host="):
            return "--master-host=127.0.0.1"
        if arg in (f"--master-bind-port={MASTER_PORT}", f"--master-port={MASTER_PORT}"):
            return arg.replace(str(MASTER_PORT), str(port))
        return arg
