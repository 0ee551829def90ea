"""The stack spec loader: shipped stacks load, and every bad spec is named precisely (exit 2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from opsctl.errors import ExitCode, InvalidInputFile, StackNotFound, UserInputError
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import list_stacks, load_spec_file, load_stack, parse_spec
from tests.support import SpecWriter, shipped_spec

pytestmark = pytest.mark.unit


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InvalidInputFile) as caught:
        load_spec_file(path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_shipped_stacks_are_local_staging_and_prod() -> None:
    assert list_stacks(DEFAULT_INFRA_DIR) == ["local", "prod", "staging"]


@pytest.mark.parametrize(("stack", "regions"), [("local", 1), ("staging", 2), ("prod", 3)])
def test_shipped_stack_loads_with_one_primary(stack: str, regions: int) -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, stack)
    assert spec.environment == stack
    assert len(spec.regions) == regions
    assert [r.role for r in spec.regions].count("primary") == 1


def test_prod_is_sized_for_five_million_concurrent_users() -> None:
    spec = load_stack(DEFAULT_INFRA_DIR, "prod")
    assert sum(r.peak_concurrent_users for r in spec.regions) == 5_000_000
    assert {r.name for r in spec.regions} == {"ap-east", "eu-central", "us-east"}
    for region in spec.regions:
        capacity = region.gateway.max_replicas * region.gateway.connections_per_pod
        assert capacity >= 1.4 * region.peak_concurrent_users, region.name


def set_at(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(leaf) if leaf.isdigit() else leaf] = value


def case(name: str, mutation: str, value: Any, words: str, field: str | None = None) -> Any:
    """One bad spec: set ``mutation`` (dotted) to ``value``; a problem at ``field`` (default:
    the mutated field) says ``words``."""
    if field is None:
        field = re.sub(r"\.(\d+)", r"[\1]", mutation)
    return pytest.param(mutation, value, field, words, id=name)


BAD_CASES = [
    case("unknown field", "regions.0.gateway.replica", 3, "did you mean 'replicas'?"),
    case("wrong type", "regions.0.kafka.brokers", "three", "expected an integer, got str 'three'"),
    case("quoted number", "regions.0.gateway.replicas", "2", "expected an integer"),
    case("replicas above max", "regions.0.gateway.replicas", 9, "greater than maxReplicas (4)"),
    case("negative storage", "regions.0.kafka.storage", "-10Gi", "negative"),
    case("negative count", "regions.0.redis.shards", -1, "greater than or equal to 1"),
    case(
        "kafka rf above brokers",
        "regions.0.kafka.replicationFactor",
        3,
        "greater than the region's brokers (1)",
    ),
    case(
        "cassandra rf above nodes",
        "regions.0.cassandra.replicationFactor",
        2,
        "greater than the region's nodes (1)",
    ),
    case("no primary", "regions.0.role", "secondary", "no region has role 'primary'", "regions"),
    case("latest tag", "images.gateway", "registry.im/gateway:latest", "mutable tag 'latest'"),
    case("unknown receiver", "alerting.teams.0.pageReceiver", "nobody", "receiver 'nobody'"),
]


@pytest.mark.parametrize(("mutation", "value", "field", "words"), BAD_CASES)
def test_bad_spec_names_the_field(
    write_spec: SpecWriter, mutation: str, value: Any, field: str, words: str
) -> None:
    spec = shipped_spec("local")
    set_at(spec, mutation, value)
    problems = problems_of(write_spec(spec))
    assert any(p.startswith(f"{field}: ") and words in p for p in problems), problems


def test_duplicate_region_names(write_spec: SpecWriter) -> None:
    spec = shipped_spec("staging")
    spec["regions"][1]["name"] = spec["regions"][0]["name"]
    assert problems_of(write_spec(spec)) == [
        "regions[1].name: duplicate region name 'eu-central' (also regions[0])"
    ]


def test_two_primaries(write_spec: SpecWriter) -> None:
    spec = shipped_spec("staging")
    spec["regions"][1]["role"] = "primary"
    assert problems_of(write_spec(spec)) == [
        "regions[1].role: a second primary (regions[0] is primary); exactly one region may be"
    ]


def test_missing_required_field(write_spec: SpecWriter) -> None:
    spec = shipped_spec("local")
    del spec["regions"][0]["cassandra"]["nodes"]
    assert problems_of(write_spec(spec)) == [
        "regions[0].cassandra.nodes: required field is missing"
    ]


def test_every_problem_is_reported_at_once(write_spec: SpecWriter) -> None:
    spec = shipped_spec("prod")
    spec["regions"][0]["kafka"]["brokers"] = "six"
    spec["regions"][2]["gateway"]["connectionsPerPod"] = -5
    spec["regions"][1]["surprise"] = True
    fields = sorted(p.split(":")[0] for p in problems_of(write_spec(spec)))
    assert fields == [
        "regions[0].kafka.brokers",
        "regions[1].surprise",
        "regions[2].gateway.connectionsPerPod",
    ]


def test_problem_points_at_the_line_and_column(write_spec: SpecWriter) -> None:
    spec = shipped_spec("local")
    spec["regions"][0]["gateway"]["maxReplicas"] = 1
    path = write_spec(spec)
    with pytest.raises(InvalidInputFile) as caught:
        load_spec_file(path)
    problem = caught.value.problems[0]
    assert problem.path == "regions[0].gateway.replicas"
    assert problem.line is not None
    line = path.read_text().splitlines()[problem.line - 1]
    assert line.strip() == "replicas: 2"
    assert problem.column == line.index("replicas") + 1


def test_yaml_syntax_error_has_line_and_column(infra_dir: Path) -> None:
    path = infra_dir / "Pulumi.broken.yaml"
    path.write_text("config:\n  imstack:spec:\n    environment: [local\n    images: {}\n")
    with pytest.raises(InvalidInputFile) as caught:
        load_stack(infra_dir, "broken")
    (problem,) = caught.value.problems
    assert problem.message.startswith("YAML syntax error")
    assert (problem.line, problem.column) == (4, 11)
    assert str(problem).startswith(f"{problem.file}:4:11: YAML syntax error")


def test_duplicate_yaml_key_is_an_error(infra_dir: Path) -> None:
    path = infra_dir / "Pulumi.dup.yaml"
    path.write_text("config:\n  imstack:spec:\n    environment: a\n    environment: b\n")
    with pytest.raises(InvalidInputFile) as caught:
        load_stack(infra_dir, "dup")
    (problem,) = caught.value.problems
    assert "duplicate key" in problem.message
    assert problem.line == 4


def test_missing_stack_lists_the_stacks_that_exist() -> None:
    with pytest.raises(StackNotFound) as caught:
        load_stack(DEFAULT_INFRA_DIR, "qa")
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert "Pulumi.qa.yaml" in caught.value.message
    assert caught.value.available == ["local", "prod", "staging"]


def test_stack_name_cannot_escape_the_infra_dir() -> None:
    with pytest.raises(UserInputError, match="not a stack name"):
        load_stack(DEFAULT_INFRA_DIR, "../etc/passwd")


def test_file_without_spec_key_says_where_the_spec_belongs(infra_dir: Path) -> None:
    (infra_dir / "Pulumi.empty.yaml").write_text("config:\n  kubernetes:context: x\n")
    with pytest.raises(InvalidInputFile) as caught:
        load_stack(infra_dir, "empty")
    assert [p.path for p in caught.value.problems] == ["config.imstack:spec"]


def test_parse_spec_accepts_pulumi_config_objects() -> None:
    spec = parse_spec(shipped_spec("staging"))
    assert spec.primary.name == "eu-central"
    assert spec.region("us-east").kafka.replication_factor == 3
