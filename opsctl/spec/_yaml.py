"""YAML file -> validated pydantic model, with every problem located at its line and column.

This is the one way opsctl reads a user's YAML file (stack specs, load profiles, host limits,
alert rules)::

    from opsctl.spec import load_yaml_model, read_yaml_model

    spec = read_yaml_model(StackSpec, path, what="stack spec", root=("config", "imstack:spec"))
    profile = load_yaml_model(Profile, text, file="smoke.yaml", what="load profile")

Both raise ``opsctl.errors.InvalidInputFile`` (exit 2) listing *every* problem at once, each
with the file, the field path (``regions[1].gateway.replicas``) and the line:column of the
field's key in the file: YAML syntax errors, duplicate keys, pydantic validation errors
(translated into short messages: "unknown field; did you mean 'replicas'?", "expected an
integer, got str 'three'") and the findings of an optional ``check`` that runs on the valid
model for rules spanning several fields.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from opsctl.errors import InputProblem, InvalidInputFile

Path = tuple[str | int, ...]
"""A field path inside a document: ``('regions', 1, 'gateway', 'replicas')``."""
FieldPath = Path
Positions = Mapping[Path, tuple[int, int]]
"""Field path -> (line, column), both 1-based."""
Finding = tuple[Path, str]
"""One problem a ``check`` found: the field path (relative to the model) and the message."""

M = TypeVar("M", bound=BaseModel)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlProblem(Exception):
    message: str
    line: int | None = None
    column: int | None = None


def format_path(path: Path) -> str:
    """('regions', 1, 'gateway', 'replicas') -> 'regions[1].gateway.replicas'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _walk(node: yaml.Node, path: Path, positions: dict[Path, tuple[int, int]]) -> None:
    # A mapping entry is located at its key (set by the parent), so "replicas: 9" points at
    # "replicas"; list items and the root are located at the node itself.
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in seen:
                raise YamlProblem(
                    f"{format_path((*path, key))}: duplicate key (first defined on line "
                    f"{seen[key]})",
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            seen[key] = key_node.start_mark.line + 1
            positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, (*path, key), positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), positions)


def load_with_positions(text: str) -> tuple[Any, dict[Path, tuple[int, int]]]:
    """Parse one YAML document; return the data and a map of field path -> (line, column)."""
    # One pass with libyaml when available: compose (keeps marks), then construct from the node.
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise YamlProblem(f"YAML syntax error: {problem}") from exc
        raise YamlProblem(f"YAML syntax error: {problem}", mark.line + 1, mark.column + 1) from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {exc}") from exc
    except RecursionError as exc:
        raise YamlProblem("YAML nests too deeply") from exc
    finally:
        loader.dispose()
    positions: dict[Path, tuple[int, int]] = {}
    if node is not None:
        _walk(node, (), positions)
    return data, positions


def position_of(positions: Positions, path: Path) -> tuple[int, int] | None:
    """The position of ``path``, or of its nearest ancestor that exists in the file."""
    for end in range(len(path), -1, -1):
        found = positions.get(path[:end])
        if found is not None:
            return found
    return None


def display_path(path: FsPath) -> str:
    """How errors name a file: relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(FsPath.cwd()))
    except ValueError:
        return str(path)


# --- the helper ---------------------------------------------------------------------------


def read_yaml_model(
    model: type[M],
    path: FsPath,
    *,
    what: str,
    root: Path = (),
    check: Callable[[M], Iterable[Finding]] | None = None,
    shown: str | None = None,
) -> M:
    """Read ``path`` and return it as ``model``: :func:`load_yaml_model` for a file.

    A file that cannot be read or is not UTF-8 is an ``InvalidInputFile`` too. Errors name the
    file as ``shown`` (default: ``path`` relative to the working directory when inside it).
    """
    file = shown if shown is not None else display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = InputProblem(file, "", f"not UTF-8 text: {exc.reason}")
        raise InvalidInputFile(what, file, [problem]) from exc
    except OSError as exc:
        problem = InputProblem(file, "", f"cannot read: {exc.strerror or exc}")
        raise InvalidInputFile(what, file, [problem]) from exc
    return load_yaml_model(model, text, file=file, what=what, root=root, check=check)


def load_yaml_model(
    model: type[M],
    text: str,
    *,
    file: str,
    what: str,
    root: Path = (),
    check: Callable[[M], Iterable[Finding]] | None = None,
) -> M:
    """Parse YAML ``text`` and validate the value at ``root`` as ``model``.

    ``file`` names the source in errors; ``what`` says what it is ("stack spec", "load
    profile"). ``root`` is the path of the model inside the document, for example
    ``("config", "imstack:spec")`` in a Pulumi stack file; field paths in errors are relative
    to it, positions are the file's. ``check`` runs on the valid model and returns findings
    for rules that span fields; they are located like validation errors.

    Raises ``InvalidInputFile`` listing every problem, each with its line and column.
    """
    try:
        document, positions = load_with_positions(text)
    except YamlProblem as exc:
        problem = InputProblem(file, "", exc.message, exc.line, exc.column)
        raise InvalidInputFile(what, file, [problem]) from exc
    data = document
    for depth, key in enumerate(root):
        where = root[:depth]
        if isinstance(key, str) and not isinstance(data, dict):
            message = f"expected a mapping with the key '{key}' here"
            raise InvalidInputFile(what, file, [_locate(file, where, message, positions)])
        if isinstance(key, int) and not isinstance(data, list):
            raise InvalidInputFile(
                what, file, [_locate(file, where, "expected a list here", positions)]
            )
        try:
            data = data[key]
        except (KeyError, IndexError):
            message = f"missing: the {what} lives at {format_path(root)}"
            problem = _locate(file, root[: depth + 1], message, positions)
            raise InvalidInputFile(what, file, [problem]) from None
    depth = len(root)
    inside = {p[depth:]: pos for p, pos in positions.items() if p[:depth] == root}
    inside.setdefault((), positions.get(root, (1, 1)))
    return validate_model(model, data, file=file, what=what, positions=inside, check=check)


def validate_model(
    model: type[M],
    data: Any,
    *,
    file: str,
    what: str,
    positions: Positions | None = None,
    check: Callable[[M], Iterable[Finding]] | None = None,
) -> M:
    """Validate already-parsed ``data`` (from Pulumi config, say) as :func:`load_yaml_model`.

    ``positions`` (field path -> line, column) locates problems when the data came from a file.
    """
    positions = positions or {}
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        problems = [_from_pydantic(model, err, file, positions) for err in exc.errors()]
        raise InvalidInputFile(what, file, problems) from None
    findings = list(check(value)) if check is not None else []
    if findings:
        problems = [_locate(file, path, message, positions) for path, message in findings]
        raise InvalidInputFile(what, file, problems)
    return value


# --- pydantic errors as short, located messages -------------------------------------------


def _locate(file: str, path: Path, message: str, positions: Positions) -> InputProblem:
    where = position_of(positions, path)
    line, column = where if where else (None, None)
    return InputProblem(file, format_path(path), message, line, column)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "bool_type": "true or false",
}
_DICT_KEY = "[key]"  # pydantic's marker in ``loc`` for a dict key that failed validation


def _from_pydantic(
    model: type[BaseModel], err: Mapping[str, Any], file: str, positions: Positions
) -> InputProblem:
    path: Path = tuple(part for part in err["loc"] if isinstance(part, int | str))
    if path and path[-1] == _DICT_KEY:
        path = path[:-1]
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        message = "unknown field"
        known = _known_fields(model, path[:-1])
        close = difflib.get_close_matches(str(path[-1]), known, n=1) if path else []
        if close:
            message += f"; did you mean '{close[0]}'?"
        elif known:
            message += f"; known fields: {', '.join(known)}"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {_short(value)}"
    elif kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
    else:
        text = str(err["msg"])
        message = f"{text[0].lower()}{text[1:]} (got {_short(value)})"
    return _locate(file, path, message, positions)


def _known_fields(model: type[BaseModel], path: Path) -> list[str]:
    """The YAML field names valid at ``path`` inside ``model``, for 'did you mean' hints."""
    annotation: Any = model
    for part in path:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    for candidate in _alternatives(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return [f.alias or name for name, f in candidate.model_fields.items()]
    return []


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation one step down: a list item, a mapping's value or a model's field."""
    for candidate in _alternatives(annotation):
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if isinstance(part, int) and origin in (list, tuple, set, frozenset) and args:
            return args[0]
        if isinstance(part, str) and origin in (dict, Mapping) and len(args) == 2:
            return args[1]
        if (
            isinstance(part, str)
            and isinstance(candidate, type)
            and issubclass(candidate, BaseModel)
        ):
            for name, field in candidate.model_fields.items():
                if part in (field.alias, name):
                    return field.annotation
    return None


def _alternatives(annotation: Any) -> list[Any]:
    """``X | None``, ``Annotated[X, ...]`` and ``X`` -> the concrete types they allow."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _alternatives(arg)]
    return [annotation]
