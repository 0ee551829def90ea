"""scripts/setup/crds.sh against the real registries (Go module proxy, Maven Central): fetched
once, then a silent no-op; every project's files show they are the upstream release's own."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from opsctl.cluster.crds import CRD_SOURCES, CrdSet, crd_set, load_crds
from opsctl.paths import REPO_ROOT, cache_dir

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "scripts" / "setup" / "crds.sh"
CONTROLLER_GEN = "controller-gen.kubebuilder.io/version"


def run_setup() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False, env=os.environ
    )


@pytest.fixture(scope="module")
def fetched() -> dict[str, CrdSet]:
    first = run_setup()
    assert first.returncode == 0, first.stderr
    return {project: crd_set(project) for project in CRD_SOURCES}


def _crds(crds: CrdSet) -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for d in load_crds(crds)}


def _pins(project: str, version: str) -> list[str]:
    """The `sha256  file` lines crds.sh pins for ``project`` at ``version``."""
    script = SCRIPT.read_text()
    block = re.search(rf'\["{re.escape(project)} {re.escape(version)}"\]="\n(.*?)"', script, re.S)
    assert block, f"crds.sh pins nothing for {project} {version}"
    return block.group(1).splitlines()


def _sha256_lines(crds: CrdSet) -> list[str]:
    return [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in crds.files]


def test_warm_run_prints_nothing_and_is_fast(fetched: dict[str, CrdSet]) -> None:
    assert set(fetched) == set(CRD_SOURCES)
    again = run_setup()
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert again.stderr == ""


def test_prometheus_operator_crds_carry_the_release_version(fetched: dict[str, CrdSet]) -> None:
    crds = fetched["prometheus-operator"]
    kinds = _crds(crds)
    assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds)
    # Upstream's own stamp of the release it was generated for.
    for crd in kinds.values():
        assert crd["metadata"]["annotations"]["operator.prometheus.io/version"] == (
            crds.version.removeprefix("v")
        )


def test_cert_manager_crds_are_controller_gen_output(fetched: dict[str, CrdSet]) -> None:
    kinds = _crds(fetched["cert-manager"])
    issuing = {"Certificate", "CertificateRequest", "Issuer", "ClusterIssuer"}
    assert set(kinds) == {*issuing, "Challenge", "Order"}  # the last two are ACME's
    assert all(CONTROLLER_GEN in crd["metadata"]["annotations"] for crd in kinds.values())


def test_cass_operator_crds_are_the_kustomized_release(fetched: dict[str, CrdSet]) -> None:
    crds = fetched["cass-operator"]
    assert [path.name for path in crds.files] == ["kustomize-build.yaml"]
    kinds = _crds(crds)
    assert set(kinds) == {"CassandraDatacenter", "CassandraTask", "ScheduledTask"}
    assert all(CONTROLLER_GEN in crd["metadata"]["annotations"] for crd in kinds.values())
    # Upstream's config/crd patch: the free-form server config has no schema of its own.
    (version,) = kinds["CassandraDatacenter"]["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "config" not in spec["properties"]
    assert spec["x-kubernetes-preserve-unknown-fields"] is True


def test_redis_operator_crds_match_their_pins(fetched: dict[str, CrdSet]) -> None:
    crds = fetched["redis-operator"]
    # The checksum database is skipped for this module, so the pins are what vouches for it.
    assert _sha256_lines(crds) == _pins("redis-operator", crds.version)
    kinds = _crds(crds)
    assert {"RedisCluster", "RedisReplication", "Redis", "RedisSentinel"} == set(kinds)
    assert all(CONTROLLER_GEN in crd["metadata"]["annotations"] for crd in kinds.values())


def _install_executions(pom: Path) -> dict[str, list[str]]:
    """CRD file name -> the CrdGenerator arguments Strimzi's api POM gives for its install CRDs."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    files: dict[str, list[str]] = {}
    for execution in ET.parse(pom).getroot().iterfind(".//m:execution", ns):
        if not execution.findtext("m:id", "", ns).startswith("generate-crd-co-install"):
            continue
        arguments = [a.text or "" for a in execution.iterfind(".//m:arguments/m:argument", ns)]
        for argument in arguments:
            if argument.startswith("io.strimzi.api.") and "=" in argument:
                files[argument.split("=", 1)[1].split("${file.separator}")[-1]] = arguments
    return files


def _option(arguments: list[str], name: str) -> list[str]:
    return [value for flag, value in itertools.pairwise(arguments) if flag == name]


def test_strimzi_crds_are_the_releases_generated_set(fetched: dict[str, CrdSet]) -> None:
    crds = fetched["strimzi"]
    assert _sha256_lines(crds) == _pins("strimzi", crds.version)
    repository = cache_dir() / "maven" / "repository" / "io" / "strimzi" / "api" / crds.version
    executions = _install_executions(repository / f"api-{crds.version}.pom")
    # One file per CRD the release installs, generated with the same versions and labels.
    assert sorted(executions) == [path.name for path in crds.files]
    for path in crds.files:
        arguments = executions[path.name]
        (crd,) = load_crds(CrdSet("strimzi", crds.version, crds.directory, (path,)))
        versions = crd["spec"]["versions"]
        (api_versions,) = _option(arguments, "--api-versions")
        assert sorted(v["name"] for v in versions if v["served"]) == sorted(api_versions.split(","))
        assert [v["name"] for v in versions if v["storage"]] == _option(
            arguments, "--storage-version"
        )
        labels = dict(label.split(":", 1) for label in _option(arguments, "--label"))
        assert crd["metadata"]["labels"] == labels
