"""Write a stack's plan to a directory, without a cluster and without the Pulumi engine.

Layout, per region (components numbered in apply order)::

    <out>/<region>/<NN>-<component>/release-<name>.yaml   chart, repo, version, values
    <out>/<region>/<NN>-<component>/objects.yaml          our objects, in apply order
    <out>/<region>/<NN>-<component>/chart-<name>.yaml     our chart, rendered by helm template
    <out>/<region>/<NN>-<component>/secret-copies.yaml    Secrets copied from another region
    <out>/<region>/endpoints.yaml                          what the gateway connects to
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsctl.errors import CheckFailed
from opsctl.stack._model import LocalChart, Manifest, RegionPlan, StackPlan

HELM_TIMEOUT_S = 120
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Rendered:
    out: Path
    files: list[Path]


def helm_binary() -> Path:
    from opsctl.cluster._tools import find_tools

    return find_tools(("helm",))["helm"]


def kubernetes_version() -> str:
    from opsctl.cluster._tools import VERSIONS_FILE, parse_versions

    text = VERSIONS_FILE.read_text(encoding="utf-8")
    return parse_versions(text, str(VERSIONS_FILE))["KUBERNETES_VERSION"]


def helm_template(chart: LocalChart, helm: Path, kube_version: str) -> list[Manifest]:
    """Our chart rendered with the pinned helm; namespaced objects get the release namespace."""
    with tempfile.TemporaryDirectory(prefix="opsctl-render-") as tmp:
        values = Path(tmp) / "values.json"
        values.write_text(json.dumps(chart.values), encoding="utf-8")
        command = [str(helm), "template", chart.name, str(chart.path), "--skip-tests"]
        command += ["--namespace", chart.namespace, "--values", str(values)]
        command += ["--kube-version", kube_version, "--api-versions", "monitoring.coreos.com/v1"]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CheckFailed(f"helm template {chart.name} took over {HELM_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise CheckFailed(f"helm template {chart.name} failed: {done.stderr.strip()}")
    objects = [doc for doc in yaml.load_all(done.stdout, Loader=_Loader) if doc]
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("namespace", chart.namespace)
    return objects


def _dump_all(documents: list[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _write(path: Path, text: str, files: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    files.append(path)


def render_charts(plan: StackPlan) -> dict[tuple[str, str], list[Manifest]]:
    """Every local chart of every region, rendered in parallel: (region, chart) -> objects."""
    charts = [
        (region.region.name, chart)
        for region in plan.regions
        for component in region.components
        for chart in component.charts
    ]
    if not charts:
        return {}
    helm = helm_binary()  # ToolMissing names the setup step
    kube_version = kubernetes_version()
    with ThreadPoolExecutor(max_workers=min(4, len(charts))) as pool:
        results = list(pool.map(lambda item: helm_template(item[1], helm, kube_version), charts))
    return {
        (region, chart.name): objects
        for (region, chart), objects in zip(charts, results, strict=True)
    }


def write_region(
    region: RegionPlan, out: Path, charts: dict[tuple[str, str], list[Manifest]]
) -> list[Path]:
    files: list[Path] = []
    base = out / region.region.name
    for index, component in enumerate(region.components):
        folder = base / f"{index:02d}-{component.name}"
        for release in component.releases:
            _write(folder / f"release-{release.name}.yaml", _dump_all([release.describe()]), files)
        for crds in component.crds:  # operators: external (the CRDs only, not the operator)
            described = {"operator": crds.release, "crds": crds.project, "version": crds.version}
            _write(folder / f"crds-{crds.project}.yaml", _dump_all([described]), files)
        if component.secret_copies:
            copies = [
                {
                    "name": copy.name,
                    "namespace": copy.namespace,
                    "type": copy.type,
                    "copiedFrom": {
                        "region": copy.source_region,
                        "namespace": copy.source_namespace,
                        "name": copy.source_name,
                    },
                }
                for copy in component.secret_copies
            ]
            _write(folder / "secret-copies.yaml", _dump_all(copies), files)
        if component.objects:
            _write(folder / "objects.yaml", _dump_all(list(component.objects)), files)
        for chart in component.charts:
            rendered = charts[(region.region.name, chart.name)]
            _write(folder / f"chart-{chart.name}.yaml", _dump_all(rendered), files)
            _write(folder / f"chart-{chart.name}.values.yaml", _dump_all([chart.values]), files)
    _write(base / "endpoints.yaml", _dump_all([region.endpoints]), files)
    return files


def render(plan: StackPlan, out: Path) -> Rendered:
    """Replace ``out``'s region folders with the plan (other files in ``out`` are left alone)."""
    charts = render_charts(plan)
    files: list[Path] = []
    for region in plan.regions:
        target = out / region.region.name
        if target.exists():
            shutil.rmtree(target)
        files += write_region(region, out, charts)
    return Rendered(out=out, files=files)


def manifests_in(directory: Path) -> Iterator[Manifest]:
    """Every Kubernetes object of a rendered directory (objects and charts, in apply order)."""
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "objects.yaml" or (
            path.name.startswith("chart-") and not path.name.endswith(".values.yaml")
        ):
            yield from (doc for doc in yaml.load_all(path.read_text(), Loader=_Loader) if doc)
