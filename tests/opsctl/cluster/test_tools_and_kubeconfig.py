"""Pure logic: reading the Go tool pins, finding binaries, merging kubeconfigs."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl.cluster import CLUSTER_TOOLS, find_tools
from opsctl.cluster._kubeconfig import merged, renamed, server_of
from opsctl.cluster._tools import VERSIONS_FILE, parse_versions, pinned_path
from opsctl.errors import CheckFailed, ToolMissing, UserInputError

pytestmark = pytest.mark.unit


def test_parse_versions_skips_comments_and_blank_lines() -> None:
    text = "# pins\n\nKUBERNETES_VERSION=v1.36.3\n  KWOK_VERSION = v0.8.0 \n"
    assert parse_versions(text, "v.env") == {
        "KUBERNETES_VERSION": "v1.36.3",
        "KWOK_VERSION": "v0.8.0",
    }


def test_parse_versions_names_the_bad_line() -> None:
    with pytest.raises(UserInputError, match=r"v\.env:2: expected KEY=value"):
        parse_versions("A=1\nnot a pin\n", "v.env")


def test_the_shipped_pins_cover_every_cluster_tool() -> None:
    versions = parse_versions(VERSIONS_FILE.read_text(), str(VERSIONS_FILE))
    for name in CLUSTER_TOOLS:
        path = pinned_path(name, versions, Path("/cache"))
        assert path.parts[:3] == ("/", "cache", "tools")
        assert path.name == name
        assert path.parent.parent.name.startswith(f"{name}-v")


def test_missing_binaries_name_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_CACHE_DIR", str(tmp_path))
    with pytest.raises(ToolMissing) as raised:
        find_tools()
    assert "kube-apiserver" in raised.value.message
    assert str(tmp_path) in raised.value.message
    assert raised.value.hint is not None
    assert "make setup" in raised.value.hint


def _kwok_kubeconfig(port: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kwok-x", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "kwok-x", "user": {"client-certificate": "/pki/admin.crt"}}],
        "contexts": [{"name": "kwok-x", "context": {"cluster": "kwok-x", "user": "kwok-x"}}],
        "current-context": "kwok-x",
    }


def test_merged_kubeconfig_uses_the_spec_contexts() -> None:
    entries = [
        renamed(_kwok_kubeconfig(2), "kwok-staging-us-east", "b"),
        renamed(_kwok_kubeconfig(1), "kwok-staging-eu-central", "a"),
    ]
    config = merged(entries, current="kwok-staging-us-east")
    assert [c["name"] for c in config["contexts"]] == [
        "kwok-staging-eu-central",
        "kwok-staging-us-east",
    ]
    assert config["contexts"][0]["context"] == {
        "cluster": "kwok-staging-eu-central",
        "user": "kwok-staging-eu-central",
    }
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"
    assert config["users"][1]["user"] == {"client-certificate": "/pki/admin.crt"}
    assert config["current-context"] == "kwok-staging-us-east"


def test_merged_kubeconfig_falls_back_to_the_first_context() -> None:
    config = merged([renamed(_kwok_kubeconfig(1), "kwok-local", "a")], current="gone")
    assert config["current-context"] == "kwok-local"
    assert merged([], current=None)["contexts"] == []


def test_malformed_kwok_kubeconfig_is_reported() -> None:
    broken = _kwok_kubeconfig(1)
    broken["clusters"] = []
    with pytest.raises(CheckFailed, match="exactly one entry under 'clusters'"):
        renamed(broken, "kwok-local", "x.yaml")
    with pytest.raises(CheckFailed, match="exactly one"):
        server_of(broken, "x.yaml")
    assert server_of(_kwok_kubeconfig(7), "y") == "https://127.0.0.1:7"
