"""Upstream CustomResourceDefinitions for the simulated clusters: find the pinned copies that
``scripts/setup/crds.sh`` fetched from a package registry, and install them (server-side apply).

Charts and manifests that use operator kinds (ServiceMonitor, Kafka, Certificate, ...) can then
be created and dry-run validated against the operators' real schemas, never hand-written ones.
A project is registered once in ``CRD_SOURCES``: the versions.env key pinning it and the glob of
its CRD files inside ``$OPSCTL_CACHE_DIR/crds/<project>-<version>/``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from opsctl.cluster._tools import VERSIONS_FILE, parse_versions
from opsctl.errors import CheckFailed, ToolMissing, UserInputError
from opsctl.paths import cache_dir
from opsctl.poll import WaitTimeout, wait_until

try:  # libyaml parses the multi-megabyte upstream CRDs about twenty times faster
    from yaml import CSafeLoader as _FastSafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _FastSafeLoader  # type: ignore[assignment]

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, ApiextensionsV1Api

FIELD_MANAGER = "opsctl"
COMPLETE_STAMP = ".complete"  # written by crds.sh once a directory is fully fetched
_FETCH_HINT = (
    "run `make setup` or scripts/setup/crds.sh (fetches them from the Go module proxy and Maven "
    "Central)"
)


class _CrdLoader(_FastSafeLoader):
    """Safe loader that reads a bare ``=`` as the string it is in YAML 1.2.

    PyYAML still implements YAML 1.1's ``!!value`` tag and fails on it; upstream CRDs list
    ``=`` as an enum value (operators in matchers).
    """


def _construct_value(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_CrdLoader.add_constructor("tag:yaml.org,2002:value", _construct_value)


@dataclass(frozen=True)
class CrdSource:
    """Where one project's pinned CRD files live in the cache."""

    project: str
    version_key: str  # the tools/go/versions.env key pinning the project
    pattern: str = "*.yaml"


CRD_SOURCES: dict[str, CrdSource] = {
    source.project: source
    for source in (
        CrdSource("prometheus-operator", "PROMETHEUS_OPERATOR_VERSION"),
        CrdSource("cert-manager", "CERT_MANAGER_VERSION"),
        CrdSource("cass-operator", "CASS_OPERATOR_VERSION"),
        CrdSource("redis-operator", "REDIS_OPERATOR_VERSION"),
        CrdSource("strimzi", "STRIMZI_VERSION"),
    )
}


@dataclass(frozen=True)
class CrdSet:
    """One project's CRD files at its pinned version."""

    project: str
    version: str
    directory: Path
    files: tuple[Path, ...]


def _source(project: str) -> CrdSource:
    try:
        return CRD_SOURCES[project]
    except KeyError:
        known = ", ".join(sorted(CRD_SOURCES))
        raise UserInputError(f"no CRD source named '{project}'; known: {known}") from None


def pinned_versions(versions_file: Path = VERSIONS_FILE) -> dict[str, str]:
    if not versions_file.is_file():
        raise ToolMissing(f"{versions_file} is missing; the CRD pins live there")
    return parse_versions(versions_file.read_text(encoding="utf-8"), str(versions_file))


def crd_set(
    project: str, *, versions: Mapping[str, str] | None = None, cache: Path | None = None
) -> CrdSet:
    """The fetched CRD files of ``project``, or ToolMissing naming what to run."""
    source = _source(project)
    versions = pinned_versions() if versions is None else versions
    version = versions.get(source.version_key)
    if not version:
        raise ToolMissing(f"{VERSIONS_FILE} does not pin {source.version_key}")
    directory = (cache or cache_dir()) / "crds" / f"{project}-{version}"
    if not (directory / COMPLETE_STAMP).is_file():
        raise ToolMissing(
            f"{project} {version} CRDs not fetched yet ({directory})", hint=_FETCH_HINT
        )
    files = tuple(sorted(directory.glob(source.pattern)))
    if not files:
        raise ToolMissing(f"{directory} has no {source.pattern} files", hint=_FETCH_HINT)
    return CrdSet(project=project, version=version, directory=directory, files=files)


def load_crds(crds: CrdSet) -> list[dict[str, Any]]:
    """Every CRD document in the set; anything else in the files is an error naming the file."""
    documents: list[dict[str, Any]] = []
    for path in crds.files:
        try:
            loaded = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_CrdLoader))
        except (OSError, yaml.YAMLError) as error:
            raise CheckFailed(f"{path}: unreadable CRD file: {error}") from error
        for index, document in enumerate(loaded):
            if document is None:
                continue
            if (
                not isinstance(document, dict)
                or document.get("apiVersion") != "apiextensions.k8s.io/v1"
                or document.get("kind") != "CustomResourceDefinition"
                or not document.get("metadata", {}).get("name")
                or not document.get("spec", {}).get("names", {}).get("kind")
            ):
                raise CheckFailed(
                    f"{path}: document {index} is not an apiextensions.k8s.io/v1 "
                    "CustomResourceDefinition with a name and a kind",
                    hint=f"delete {crds.directory} and run scripts/setup/crds.sh again",
                )
            documents.append(document)
    return documents


def install_crds(
    api_client: ApiClient,
    projects: Iterable[str],
    *,
    kinds: Collection[str] | None = None,
    timeout: float = 60.0,
    versions: Mapping[str, str] | None = None,
) -> list[str]:
    """Server-side apply the CRDs of ``projects`` and wait until each is Established.

    ``kinds`` limits it to those kinds (e.g. ``{"ServiceMonitor"}``): upstream sets run to
    megabytes, and the API server takes seconds per large CRD. Idempotent: applying the same
    files again changes nothing. Returns the CRD names applied.
    """
    from kubernetes.client import ApiextensionsV1Api
    from kubernetes.client.exceptions import ApiException

    api = ApiextensionsV1Api(api_client)
    names: list[str] = []
    for project in projects:
        crds = crd_set(project, versions=versions)
        documents = load_crds(crds)
        if kinds is not None:
            available = {document["spec"]["names"]["kind"] for document in documents}
            unknown = sorted(set(kinds) - available)
            if unknown:
                raise UserInputError(
                    f"{project} {crds.version} has no CRD for {', '.join(unknown)}; "
                    f"it defines: {', '.join(sorted(available))}"
                )
            documents = [d for d in documents if d["spec"]["names"]["kind"] in kinds]
        for document in documents:
            name = document["metadata"]["name"]
            try:
                api.patch_custom_resource_definition(
                    name,
                    document,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type="application/apply-patch+yaml",
                    # Raw response: parsing megabytes of schema back into models is slow.
                    _preload_content=False,
                )
            except ApiException as error:
                raise CheckFailed(
                    f"applying CRD {name} ({project} {crds.version}) failed: "
                    f"{error.status} {error.reason}: {_api_message(error)}"
                ) from error
            names.append(name)
    _wait_established(api, names, timeout)
    return names


def _wait_established(api: ApiextensionsV1Api, names: list[str], timeout: float) -> None:
    pending = list(names)

    def all_established() -> bool:
        nonlocal pending
        pending = [name for name in pending if not _established(api, name)]
        return not pending

    try:
        wait_until("CRDs to be Established", all_established, timeout=timeout, interval=0.2)
    except WaitTimeout:
        raise CheckFailed(
            f"CRDs not Established within {timeout:.0f} s: {', '.join(pending)}"
        ) from None


def _established(api: ApiextensionsV1Api, name: str) -> bool:
    response: Any = api.read_custom_resource_definition(name, _preload_content=False)
    conditions = json.loads(response.data).get("status", {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _api_message(error: Exception) -> str:
    body = getattr(error, "body", None)
    try:
        return str(json.loads(body)["message"]) if body else str(error)
    except (ValueError, KeyError, TypeError):
        return str(body)
