"""The master's results, published through the Kubernetes API with its own ServiceAccount.

On a cluster (``opsctl loadtest run --on-cluster``) the master pod patches one ConfigMap,
``<run>-results``, which opsctl created empty before the Jobs: live progress every
``PROGRESS_INTERVAL_S`` and, when it quits, the final summary and timeline (gzip, base64, as
``binaryData``). Its Role allows exactly ``get`` and ``patch`` on that one ConfigMap; it can
create, list or read nothing else.

Standard library only (no Kubernetes client in the image): the API server's address comes from
``KUBERNETES_SERVICE_HOST``/``_PORT`` as the kubelet sets them, the token, CA and namespace from
the ServiceAccount directory (``LOADTEST_KUBE_CREDENTIALS``, in the pod
/var/run/secrets/kubernetes.io/serviceaccount). The token is re-read for every request: the
kubelet rotates projected tokens.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROGRESS_INTERVAL_S = 2.0
REQUEST_TIMEOUT_S = 10.0
# A ConfigMap holds at most 1 MiB; the results leave room for the object's own fields.
MAX_RESULTS_BYTES = 900 * 1024


class PublishError(Exception):
    """The API server refused or could not be reached."""


@dataclass(frozen=True)
class InClusterApi:
    """Just enough of the Kubernetes API for one ConfigMap, from ServiceAccount credentials."""

    server: str
    credentials: Path  # token, ca.crt, namespace

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> InClusterApi:
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise PublishError("KUBERNETES_SERVICE_HOST is not set: not inside a cluster")
        if ":" in host:  # IPv6
            host = f"[{host}]"
        credentials = Path(
            env.get("LOADTEST_KUBE_CREDENTIALS", "/var/run/secrets/kubernetes.io/serviceaccount")
        )
        return cls(server=f"https://{host}:{port}", credentials=credentials)

    @property
    def namespace(self) -> str:
        return (self.credentials / "namespace").read_text(encoding="utf-8").strip()

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.credentials / "ca.crt"))

    def patch_configmap(self, name: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of ConfigMap ``name`` in this pod's namespace."""
        token = (self.credentials / "token").read_text(encoding="utf-8").strip()
        url = f"{self.server}/api/v1/namespaces/{self.namespace}/configmaps/{name}"
        request = urllib.request.Request(
            url,
            data=json.dumps(patch).encode(),
            method="PATCH",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(
                request, timeout=REQUEST_TIMEOUT_S, context=self._context()
            ) as response:
                response.read()
        except urllib.error.HTTPError as error:
            body = error.read()[:300].decode(errors="replace")
            raise PublishError(f"PATCH configmaps/{name}: {error.code} {body}") from None
        except (OSError, ssl.SSLError) as error:
            raise PublishError(f"PATCH configmaps/{name}: {error}") from None


def pack(data: bytes) -> str:
    """gzip, then base64 (a ConfigMap's binaryData value)."""
    return base64.b64encode(gzip.compress(data, compresslevel=6)).decode()


def unpack(value: str) -> bytes:
    return gzip.decompress(base64.b64decode(value))


def fit_timeline(lines: list[str], limit: int = MAX_RESULTS_BYTES // 2) -> tuple[str, int]:
    """The packed timeline, thinned (every k-th second kept) until it fits ``limit``; returns
    it with the k used (1: complete)."""
    step = 1
    while True:
        packed = pack("".join(lines[::step]).encode())
        if len(packed) <= limit or step >= len(lines):
            return packed, step
        step *= 2


class ResultsPublisher:
    """The master's side: progress while running, results when done."""

    def __init__(self, api: InClusterApi, configmap: str) -> None:
        self.api = api
        self.configmap = configmap
        self.errors = 0
        self.last_error = ""
        self.finished = False
        # One request at a time (gevent makes this a greenlet lock): a progress update still
        # in flight must not land after the results and set the phase back to running.
        self._lock = threading.Lock()

    def progress(self, progress: dict[str, Any]) -> None:
        """Best effort: a failed progress update is counted, the run goes on."""
        with self._lock:
            if self.finished:
                return
            try:
                self.api.patch_configmap(
                    self.configmap,
                    {"data": {"phase": "running", "progress": json.dumps(progress)}},
                )
            except PublishError as error:
                self.errors += 1
                self.last_error = str(error)

    def results(self, master: dict[str, Any], timeline_lines: list[str]) -> None:
        """The final summary and timeline; raises PublishError (the master exits non-zero)."""
        master = {**master, "publish_errors": self.errors}
        summary = pack(json.dumps(master).encode())
        timeline, step = fit_timeline(timeline_lines, MAX_RESULTS_BYTES - len(summary))
        with self._lock:
            self.finished = True
            self.api.patch_configmap(
                self.configmap,
                {
                    "data": {"phase": "done", "timeline_step": str(step)},
                    "binaryData": {"master.json.gz": summary, "timeline.jsonl.gz": timeline},
                },
            )
