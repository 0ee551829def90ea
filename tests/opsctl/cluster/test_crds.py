"""opsctl.cluster.crds: finding and reading the pinned upstream CRDs (pure logic, temp dirs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from opsctl.cluster._tools import VERSIONS_FILE, parse_versions
from opsctl.cluster.crds import (
    COMPLETE_STAMP,
    CRD_SOURCES,
    crd_set,
    install_crds,
    load_crds,
)
from opsctl.errors import CheckFailed, ToolMissing, UserInputError
from opsctl.paths import REPO_ROOT

pytestmark = pytest.mark.unit

VERSIONS = {"PROMETHEUS_OPERATOR_VERSION": "v9.9.9"}
CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          op:
            type: string
            enum:
            - =
            - '!='
"""


def fetched(cache: Path, files: dict[str, str]) -> Path:
    directory = cache / "crds" / "prometheus-operator-v9.9.9"
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    (directory / COMPLETE_STAMP).write_text("gomod example@v9.9.9 crds/*.yaml\n")
    return directory


def test_missing_fetch_names_the_setup_step(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing) as missing:
        crd_set("prometheus-operator", versions=VERSIONS, cache=tmp_path)
    assert "prometheus-operator v9.9.9 CRDs not fetched yet" in missing.value.message
    assert missing.value.hint is not None
    assert "crds.sh" in missing.value.hint


def test_half_fetched_directory_is_not_used(tmp_path: Path) -> None:
    directory = fetched(tmp_path, {"a.yaml": CRD})
    (directory / COMPLETE_STAMP).unlink()
    with pytest.raises(ToolMissing):
        crd_set("prometheus-operator", versions=VERSIONS, cache=tmp_path)


def test_unpinned_project_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing) as missing:
        crd_set("prometheus-operator", versions={}, cache=tmp_path)
    assert "PROMETHEUS_OPERATOR_VERSION" in missing.value.message


def test_unknown_project_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError) as wrong:
        crd_set("no-such-operator", versions=VERSIONS)
    assert "prometheus-operator" in wrong.value.message


def test_loads_crds_and_reads_a_bare_equals_sign_as_a_string(tmp_path: Path) -> None:
    fetched(tmp_path, {"b.yaml": CRD, "a.yaml": CRD.replace("widgets", "gadgets")})
    crds = crd_set("prometheus-operator", versions=VERSIONS, cache=tmp_path)
    assert [path.name for path in crds.files] == ["a.yaml", "b.yaml"]
    documents = load_crds(crds)
    assert [d["metadata"]["name"] for d in documents] == [
        "gadgets.example.com",
        "widgets.example.com",
    ]
    schema = documents[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["op"]["enum"] == ["=", "!="]


def test_a_file_that_is_not_a_crd_is_refused_by_name(tmp_path: Path) -> None:
    fetched(tmp_path, {"a.yaml": CRD + "---\napiVersion: v1\nkind: ConfigMap\n"})
    crds = crd_set("prometheus-operator", versions=VERSIONS, cache=tmp_path)
    with pytest.raises(CheckFailed) as refused:
        load_crds(crds)
    assert "a.yaml: document 1 is not" in refused.value.message


def test_asking_for_a_kind_the_project_lacks_fails_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSCTL_CACHE_DIR", str(tmp_path))
    fetched(tmp_path, {"a.yaml": CRD})
    with pytest.raises(UserInputError) as wrong:
        # An unconnected client: the check must fail before anything is sent.
        install_crds(ApiClient(), ["prometheus-operator"], kinds={"Gizmo"}, versions=VERSIONS)
    assert "no CRD for Gizmo" in wrong.value.message
    assert "Widget" in wrong.value.message


def test_setup_script_and_registry_name_the_same_projects_and_pins() -> None:
    script = (REPO_ROOT / "scripts" / "setup" / "crds.sh").read_text()
    entries = re.findall(r'^\s*"([a-z0-9-]+)\|\$([A-Z_]+)\|', script, flags=re.MULTILINE)
    assert entries, "no source entries found in crds.sh"
    assert dict(entries) == {source.project: source.version_key for source in CRD_SOURCES.values()}
    pins = parse_versions(VERSIONS_FILE.read_text(), str(VERSIONS_FILE))
    assert all(key in pins for _, key in entries)


def test_every_project_fetched_without_the_checksum_database_has_sha256_pins() -> None:
    script = (REPO_ROOT / "scripts" / "setup" / "crds.sh").read_text()
    pins = parse_versions(VERSIONS_FILE.read_text(), str(VERSIONS_FILE))
    unchecked = re.findall(r'^\s*"([a-z0-9-]+)\|\$([A-Z_]+)\|gomod-nosumdb\|', script, re.MULTILINE)
    assert unchecked, "expected redis-operator to skip the checksum database"
    for project, key in unchecked:
        assert f'["{project} {pins[key]}"]="\n' in script, f"{project} {pins[key]} has no pins"
