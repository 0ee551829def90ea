"""The Pulumi program under mocks, for every shipped stack: read like the stack's policies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from infra.imstack.program import operator_crds
from opsctl.errors import InvalidInputFile
from opsctl.spec import StackSpec, parse_spec
from opsctl.stack import build_stack
from tests.infra._mocks import KUBERNETES_PROVIDER, ProgramRun, run_program, write_kubeconfig
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

STACKS = ("local", "staging", "prod")
PART_TYPES = {
    "imstack:platform:Platform",
    "imstack:pki:Pki",
    "imstack:monitoring:Monitoring",
    "imstack:kafka:Kafka",
    "imstack:cassandra:Cassandra",
    "imstack:redis:Redis",
    "imstack:gateway:Gateway",
}


@pytest.fixture(scope="module", params=STACKS)
def program(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[StackSpec, ProgramRun]:
    spec = parse_spec(shipped_spec(request.param))
    kubeconfig = write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "config", [r.kube_context for r in spec.regions]
    )
    return spec, run_program(spec, kubeconfig)


def _region_of(name: str) -> str:
    return name.split("/", 1)[0]


def test_one_region_component_and_one_provider_per_region(
    program: tuple[StackSpec, ProgramRun],
) -> None:
    spec, run = program
    regions = [d.name for d in run.recorder.of_type("imstack:region:Region")]
    assert sorted(regions) == sorted(r.name for r in spec.regions)
    providers = {d.name: d.inputs for d in run.recorder.of_type(KUBERNETES_PROVIDER)}
    assert providers.keys() == {f"{r.name}-k8s" for r in spec.regions}
    for region in spec.regions:
        assert providers[f"{region.name}-k8s"]["context"] == region.kube_context
    parts = Counter(d.typ for d in run.recorder.declared if d.typ in PART_TYPES)
    assert parts == dict.fromkeys(PART_TYPES, len(spec.regions))


def test_resource_counts_per_region_match_the_plan(program: tuple[StackSpec, ProgramRun]) -> None:
    spec, run = program
    plan = build_stack(spec)
    kube = [d for d in run.recorder.declared if d.typ.startswith("kubernetes:")]
    per_region = Counter(_region_of(d.name) for d in kube)
    for region_plan in plan.regions:
        copies = sum(len(c.secret_copies) for c in region_plan.components)
        charts = sum(len(c.charts) for c in region_plan.components)
        crds = sum(len(operator_crds(o)) for c in region_plan.components for o in c.crds)
        installed = sum(len(c.installed_releases) for c in region_plan.components)
        expected = len(region_plan.objects()) + installed + charts + 2 * copies + crds
        assert per_region[region_plan.region.name] == expected, region_plan.region.name
        # Five operator/platform releases (managed) or their CRDs (external), and our chart.
        name = region_plan.region.name
        releases = [
            d
            for d in kube
            if d.typ == "kubernetes:helm.sh/v3:Release" and _region_of(d.name) == name
        ]
        crd_resources = [
            d
            for d in kube
            if d.typ == "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
            and _region_of(d.name) == name
        ]
        if spec.operators == "managed":
            assert len(releases) == 5
            assert all(d.inputs["version"] for d in releases)
            assert crd_resources == []
        else:
            assert releases == []
            projects = {o.project for c in region_plan.components for o in c.crds}
            assert len(projects) == 5
            assert len(crd_resources) == crds > 5
        assert charts == 1
    assert set(per_region) == {r.name for r in spec.regions}


def test_every_resource_uses_its_own_regions_provider(
    program: tuple[StackSpec, ProgramRun],
) -> None:
    spec, run = program
    primary = spec.primary.name
    for declared in run.recorder.declared:
        if not declared.typ.startswith("kubernetes:"):
            continue
        region = _region_of(declared.name)
        # Reads of the primary's root CA are the one cross-region use, and they say so.
        owner = primary if "/source/" in declared.name else region
        assert f"::{owner}-k8s::" in declared.provider, (declared.name, declared.provider)


def test_objects_wait_for_the_namespace_their_part_creates(
    program: tuple[StackSpec, ProgramRun],
) -> None:
    """The engine creates a part's objects in parallel; without the edge the API server answers
    "namespaces ... not found" (seen in CI). Namespaces of earlier parts are covered by the
    parts' own ordering."""
    _, run = program
    namespaces = {
        (run.parents[d.name], d.inputs["metadata"]["name"]): d.name
        for d in run.recorder.of_type("kubernetes:core/v1:Namespace")
    }
    assert namespaces
    checked = 0
    for declared in run.recorder.declared:
        namespace = (declared.inputs.get("metadata") or {}).get("namespace")
        own = namespaces.get((run.parents.get(declared.name, ""), namespace))
        if own is None:
            continue
        assert own in run.depends_on[declared.name], declared.name
        checked += 1
    assert checked > 10, checked


def test_replication_settings_match_the_spec(program: tuple[StackSpec, ProgramRun]) -> None:
    spec, run = program
    by_name = {d.name: d.inputs for d in run.recorder.declared}
    for region in spec.regions:
        topic = by_name[f"{region.name}/kafkatopic/im-data/im-messages"]["spec"]
        assert topic["partitions"] == region.kafka.message_partitions
        assert topic["replicas"] == region.kafka.replication_factor
        assert topic["config"]["min.insync.replicas"] == region.kafka.min_insync_replicas
        dc = by_name[f"{region.name}/cassandradatacenter/im-data/{region.name}"]["spec"]
        assert dc["size"] == region.cassandra.nodes
    keyspace = by_name[f"{spec.primary.name}/configmap/im-data/im-cassandra-keyspace"]
    cql = keyspace["data"]["keyspace.cql"]
    assert "'class': 'NetworkTopologyStrategy'" in cql
    for region in spec.regions:
        assert f"'{region.name}': '{region.cassandra.replication_factor}'" in cql


def test_copied_secrets_are_marked_secret(program: tuple[StackSpec, ProgramRun]) -> None:
    spec, run = program
    secondaries = [r.name for r in spec.regions if r.role != "primary"]
    assert len(run.secrets) == len(secondaries)
    assert all(run.secrets.values())
    for region in secondaries:
        assert any(f"::{region}/secret/cert-manager/im-root-ca" in urn for urn in run.secrets)


def test_root_ca_reads_name_their_kind_and_object(program: tuple[StackSpec, ProgramRun]) -> None:
    """A bare Secret.get() passes no inputs; the provider then checkpoints the read differently
    in up and in refresh, and every refresh/drift reported it as an update (the engine journey
    on staging). The read names apiVersion, kind, namespace and name instead."""
    spec, run = program
    reads = [d for d in run.recorder.declared if d.read]
    assert len(reads) == len(spec.regions) - 1
    for read in reads:
        assert read.inputs["apiVersion"] == "v1", read.name
        assert read.inputs["kind"] == "Secret", read.name
        assert read.inputs["metadata"] == {"name": "im-root-ca", "namespace": "cert-manager"}


def test_missing_kube_context_fails_before_any_resource(tmp_path: Path) -> None:
    spec = parse_spec(shipped_spec("prod"))
    kubeconfig = write_kubeconfig(tmp_path / "config", ["prod-ap-east", "prod-us-east"])
    with pytest.raises(InvalidInputFile) as caught:
        run_program(spec, kubeconfig)
    assert [p.path for p in caught.value.problems] == ["regions[1].kubeContext"]
    assert "prod-eu-central" in caught.value.problems[0].message
