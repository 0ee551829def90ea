"""load_yaml_model: any YAML file -> a validated model, every problem with field and line:column."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.spec import FieldPath, Finding, load_yaml_model, read_yaml_model

pytestmark = pytest.mark.unit


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    replicas: int = Field(ge=1)
    maximum: int = 10


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    pools: dict[str, Limits]
    tags: list[str] = []


def no_pool_above_its_maximum(doc: Doc) -> Iterator[Finding]:
    for name, pool in doc.pools.items():
        if pool.replicas > pool.maximum:
            yield ("pools", name, "replicas"), f"{pool.replicas} is above maximum {pool.maximum}"


def problems(
    text: str,
    *,
    root: FieldPath = (),
    check: Callable[[Doc], Iterable[Finding]] | None = None,
) -> list[str]:
    with pytest.raises(InvalidInputFile) as caught:
        load_yaml_model(Doc, text, file="f.yaml", what="test doc", root=root, check=check)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert caught.value.what == "test doc"
    return [str(problem) for problem in caught.value.problems]


def test_valid_text_gives_the_model() -> None:
    doc = load_yaml_model(Doc, "name: a\npools:\n  web: {replicas: 2}\n", file="f", what="doc")
    assert doc.pools["web"].replicas == 2


def test_every_problem_at_once_with_field_line_and_column() -> None:
    text = "name: 3\npools:\n  web:\n    replica: 2\n  db:\n    replicas: 0\ntags: [x, 4]\n"
    assert problems(text) == [
        "f.yaml:1:1: name: expected a string, got int 3",
        "f.yaml:3:3: pools.web.replicas: required field is missing",
        "f.yaml:4:5: pools.web.replica: unknown field; did you mean 'replicas'?",
        "f.yaml:6:5: pools.db.replicas: input should be greater than or equal to 1 (got 0)",
        "f.yaml:7:11: tags[1]: expected a string, got int 4",
    ]


def test_checks_across_fields_are_located_too() -> None:
    text = "name: a\npools:\n  web:\n    replicas: 20\n"
    assert problems(text, check=no_pool_above_its_maximum) == [
        "f.yaml:4:5: pools.web.replicas: 20 is above maximum 10"
    ]


def test_root_path_inside_the_document() -> None:
    text = "config:\n  app:doc:\n    name: a\n    pools:\n      web: {replicas: x}\n"
    assert problems(text, root=("config", "app:doc")) == [
        "f.yaml:5:13: pools.web.replicas: expected an integer, got str 'x'"
    ]
    doc = load_yaml_model(
        Doc, text.replace("x", "1"), file="f", what="doc", root=("config", "app:doc")
    )
    assert doc.name == "a"


def test_missing_root_says_where_the_model_lives() -> None:
    assert problems("config: {}\n", root=("config", "app:doc")) == [
        "f.yaml:1:1: config.app:doc: missing: the test doc lives at config.app:doc"
    ]
    assert problems("- 1\n", root=("config", "app:doc")) == [
        "f.yaml:1:1: expected a mapping with the key 'config' here"
    ]


def test_yaml_syntax_errors_and_duplicate_keys_carry_the_position() -> None:
    assert problems("name: [a\npools: {}\n")[0].startswith("f.yaml:2:6: YAML syntax error")
    assert problems("name: a\nname: b\n") == [
        "f.yaml:2:1: name: duplicate key (first defined on line 1)"
    ]


def test_read_yaml_model_names_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(InvalidInputFile) as caught:
        read_yaml_model(Doc, path, what="doc")
    assert caught.value.problems[0].message.startswith("not UTF-8 text")
    with pytest.raises(InvalidInputFile) as caught:
        read_yaml_model(Doc, tmp_path / "absent.yaml", what="doc", shown="absent.yaml")
    assert str(caught.value.problems[0]) == "absent.yaml: cannot read: No such file or directory"
