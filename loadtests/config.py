"""What one Locust process is told to do: the ``LOADTEST_*`` environment, read in one place.

``opsctl loadtest`` sets these for every process it starts (opsctl/loadtest/runner.py for local
runs, opsctl/loadtest/oncluster.py for the Jobs); a hand-started ``locust -f
loadtests/locustfile.py`` reads the same ones.

LOADTEST_PROFILE           profile name or file (loadtests/profiles/*.yaml); default smoke
LOADTEST_TARGETS           comma-separated ws:// URLs; users spread over them
LOADTEST_REGION_TARGETS    with a profile's ``regions``: each region's URLs,
                           ``region=url,url;region=url`` (opsctl/loadtest/targets.py)
LOADTEST_JWT_SECRET_FILE   HS256 secret that signs the simulated users' tokens
LOADTEST_JWT_ISSUER, LOADTEST_JWT_AUDIENCE   the tokens' iss and aud (empty: left out). Set
                           both: the local stack's gateways, and every gateway with a JWKS,
                           refuse a token without them (docs/protocol.md section 1.1)
LOADTEST_RUN_ID            prefix of user and group ids, so every run starts at seq 1
LOADTEST_OUT               where the master writes timeline.jsonl and workers worker-<i>.json
LOADTEST_WORKERS           worker processes in the run (user numbering interleaves them)
LOADTEST_DURATION_S        sending window; overrides the profile's (capacity steps)
LOADTEST_MEASURE_FROM_S    forget delivery latencies before this (capacity warm-up)
LOADTEST_CLOCK_SKEW_MS     inject a clock error into this worker (tests)
LOADTEST_CLOCK_CORRECTION  0 disables clock-offset correction (tests)
LOADTEST_RESULTS_CONFIGMAP on a cluster: the ConfigMap the master publishes progress and
                           results to (loadtests/kube.py); empty: files in LOADTEST_OUT only
LOADTEST_KUBE_CREDENTIALS  the ServiceAccount directory (token, ca.crt, namespace)
LOADTEST_POD_NAME          this process's pod (downward API), so the master can name workers
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opsctl.loadtest.placement import parse_region_targets
from opsctl.loadtest.profiles import Profile, load_profile

# Every variable above; a test checks that opsctl sets no other LOADTEST_* variable.
ENV_VARS = (
    "LOADTEST_PROFILE",
    "LOADTEST_TARGETS",
    "LOADTEST_REGION_TARGETS",
    "LOADTEST_JWT_SECRET_FILE",
    "LOADTEST_JWT_ISSUER",
    "LOADTEST_JWT_AUDIENCE",
    "LOADTEST_RUN_ID",
    "LOADTEST_OUT",
    "LOADTEST_WORKERS",
    "LOADTEST_DURATION_S",
    "LOADTEST_MEASURE_FROM_S",
    "LOADTEST_CLOCK_SKEW_MS",
    "LOADTEST_CLOCK_CORRECTION",
    "LOADTEST_RESULTS_CONFIGMAP",
    "LOADTEST_KUBE_CREDENTIALS",
    "LOADTEST_POD_NAME",
)


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "")
    return float(raw) if raw else None


@dataclass(frozen=True)
class RunConfig:
    profile: Profile
    targets: tuple[str, ...]
    region_targets: dict[str, tuple[str, ...]]
    run_id: str
    out_dir: Path
    jwt_secret_file: Path
    jwt_issuer: str | None
    jwt_audience: str | None
    workers: int
    duration_s: float | None
    measure_from_s: float | None
    clock_skew_ms: float
    clock_correction: bool
    results_configmap: str = ""
    pod_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RunConfig:
        return cls(
            profile=load_profile(env.get("LOADTEST_PROFILE", "smoke")),
            targets=tuple(url for url in env.get("LOADTEST_TARGETS", "").split(",") if url),
            region_targets=parse_region_targets(env.get("LOADTEST_REGION_TARGETS", "")),
            run_id=env.get("LOADTEST_RUN_ID", "lt"),
            out_dir=Path(env.get("LOADTEST_OUT", ".")),
            jwt_secret_file=Path(env.get("LOADTEST_JWT_SECRET_FILE", "")),
            jwt_issuer=env.get("LOADTEST_JWT_ISSUER") or None,
            jwt_audience=env.get("LOADTEST_JWT_AUDIENCE") or None,
            workers=int(env.get("LOADTEST_WORKERS", "1")),
            duration_s=_float(env, "LOADTEST_DURATION_S"),
            measure_from_s=_float(env, "LOADTEST_MEASURE_FROM_S"),
            clock_skew_ms=_float(env, "LOADTEST_CLOCK_SKEW_MS") or 0.0,
            clock_correction=env.get("LOADTEST_CLOCK_CORRECTION", "1") != "0",
            results_configmap=env.get("LOADTEST_RESULTS_CONFIGMAP", ""),
            pod_name=env.get("LOADTEST_POD_NAME", ""),
        )

    @property
    def sending_s(self) -> float:
        """How long users send: the capacity step's override, the stages' end or the duration."""
        return self.duration_s or self.profile.sending_s
