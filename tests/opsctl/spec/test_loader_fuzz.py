"""Fuzzing: malformed specs never crash the loader; they end as exit-2 problems naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.spec import load_spec_file
from opsctl.spec._yaml import format_path
from tests.support import OpsctlRunner, shipped_spec

pytestmark = pytest.mark.unit

BASE = shipped_spec("staging")
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in leaves(value, (*path, key))]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in leaves(value, (*path, i))]
    return [(path, node)]


LEAVES = leaves(BASE)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def wrong_type_for(value: Any) -> st.SearchStrategy[Any]:
    """Values that can never validate where ``value`` stands (strict types, no coercion)."""
    bad = st.one_of(st.none(), st.lists(scalars, max_size=2), st.dictionaries(st.text(), scalars))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return bad | st.floats(allow_nan=True) if isinstance(value, str) else bad
    # numbers: strings and booleans are refused in strict mode
    return bad | st.text(max_size=10) | st.booleans()


def set_at(tree: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "Pulumi.fuzz.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@FUZZ
@given(data=st.data())
def test_a_wrong_type_anywhere_is_named_by_its_field_path(
    tmp_path: Path, data: st.DataObject
) -> None:
    path, original = data.draw(st.sampled_from(LEAVES))
    spec = copy.deepcopy(BASE)
    set_at(spec, path, data.draw(wrong_type_for(original)))
    with pytest.raises(InvalidInputFile) as caught:
        load_spec_file(write(tmp_path, {"config": {"imstack:spec": spec}}))
    named = [p.path for p in caught.value.problems]
    assert any(related(n, format_path(path)) for n in named), named


def related(named: str, mutated: str) -> bool:
    """The problem names the mutated field, something inside it, or the object holding it."""
    return bool(named) and (named.startswith(mutated) or mutated.startswith(named))


@FUZZ
@given(data=st.data())
def test_a_deleted_or_unknown_field_is_named(tmp_path: Path, data: st.DataObject) -> None:
    path, _ = data.draw(st.sampled_from(LEAVES))
    spec = copy.deepcopy(BASE)
    parent_path = path[:-1] if isinstance(path[-1], str) else path[:-2]
    parent: Any = spec
    for part in parent_path:
        parent = parent[part]
    if data.draw(st.booleans()):
        del parent[path[len(parent_path)]]
        expected = format_path(path[: len(parent_path) + 1])
    else:
        key = "x" + data.draw(st.text(alphabet="abcdefgh", min_size=1, max_size=6))
        parent[key] = 1
        expected = format_path((*parent_path, key))
    with pytest.raises(InvalidInputFile) as caught:
        load_spec_file(write(tmp_path, {"config": {"imstack:spec": spec}}))
    named = [p.path for p in caught.value.problems]
    assert any(related(n, expected) for n in named), (expected, named)


@FUZZ
@given(document=junk)
def test_arbitrary_structures_never_crash(tmp_path: Path, document: Any) -> None:
    with pytest.raises(InvalidInputFile):
        load_spec_file(write(tmp_path, {"config": {"imstack:spec": document}}))


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "Pulumi.fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputFile):
        load_spec_file(path)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_cli_exits_2_without_traceback(tmp_path: Path, opsctl: OpsctlRunner, text: Any) -> None:
    path = tmp_path / "Pulumi.fuzz.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    result = opsctl("--infra-dir", str(tmp_path), "spec", "validate", "--stack", "fuzz")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "Traceback" not in result.stderr
    assert "Pulumi.fuzz.yaml" in result.stderr
