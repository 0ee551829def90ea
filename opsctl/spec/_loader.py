"""Load a stack spec from ``infra/Pulumi.<stack>.yaml`` (or from Pulumi config) into StackSpec.

This is the only parser of the spec: opsctl and the Pulumi program both come through here.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from opsctl.errors import InputProblem, InvalidInputFile, StackNotFound, UserInputError
from opsctl.spec import _semantics
from opsctl.spec._model import StackSpec
from opsctl.spec._yaml import Path as FieldPath
from opsctl.spec._yaml import YamlProblem, format_path, load_with_positions, position_of

CONFIG_NAMESPACE = "imstack"
SPEC_KEY = f"{CONFIG_NAMESPACE}:spec"
_STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_WHAT = "stack spec"


def stack_file(infra_dir: Path, stack: str) -> Path:
    return infra_dir / f"Pulumi.{stack}.yaml"


def list_stacks(infra_dir: Path) -> list[str]:
    """Stack names that have a ``Pulumi.<stack>.yaml`` in ``infra_dir``."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in infra_dir.glob("Pulumi.*.yaml"))


def load_stack(infra_dir: Path, stack: str) -> StackSpec:
    """Load and fully validate one stack. Raises a UserInputError subclass on any problem."""
    if not _STACK_NAME.match(stack):
        raise UserInputError(
            f"'{stack}' is not a stack name (letters, digits, '.', '_' and '-', at most 64)"
        )
    path = stack_file(infra_dir, stack)
    if not path.is_file():
        raise StackNotFound(stack, str(path), list_stacks(infra_dir))
    return load_spec_file(path)


def load_spec_file(path: Path) -> StackSpec:
    shown = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(shown, [InputProblem(shown, "", f"not UTF-8 text: {exc.reason}")]) from exc
    except OSError as exc:
        raise _invalid(shown, [InputProblem(shown, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        document, positions = load_with_positions(text)
    except YamlProblem as exc:
        raise _invalid(shown, [InputProblem(shown, "", exc.message, exc.line, exc.column)]) from exc

    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        problem = InputProblem(shown, "config", "the file must be a mapping with a 'config' key")
        raise _invalid(shown, [problem])
    if SPEC_KEY not in document["config"]:
        problem = InputProblem(shown, f"config.{SPEC_KEY}", "missing: the stack spec lives here")
        raise _invalid(shown, [problem])
    prefix: FieldPath = ("config", SPEC_KEY)
    spec_positions = {p[2:]: pos for p, pos in positions.items() if p[:2] == prefix}
    spec_positions.setdefault((), positions.get(prefix, (1, 1)))
    return parse_spec(document["config"][SPEC_KEY], file=shown, positions=spec_positions)


def parse_spec(
    data: Any,
    *,
    file: str = f"<pulumi config {SPEC_KEY}>",
    positions: Mapping[FieldPath, tuple[int, int]] | None = None,
) -> StackSpec:
    """Validate an already-parsed spec mapping (for example from ``pulumi.Config``)."""
    positions = positions or {}
    try:
        spec = StackSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_problem_from_pydantic(err, file, positions) for err in exc.errors()]
        raise _invalid(file, problems) from None
    findings = _semantics.check(spec)
    if findings:
        raise _invalid(file, [_locate(file, path, msg, positions) for path, msg in findings])
    return spec


def _invalid(file: str, problems: list[InputProblem]) -> InvalidInputFile:
    return InvalidInputFile(_WHAT, file, problems)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _locate(
    file: str, path: FieldPath, message: str, positions: Mapping[FieldPath, tuple[int, int]]
) -> InputProblem:
    where = position_of(dict(positions), path)
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
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "bool_type": "true or false",
}


def _problem_from_pydantic(
    err: Mapping[str, Any], file: str, positions: Mapping[FieldPath, tuple[int, int]]
) -> InputProblem:
    path: FieldPath = tuple(part for part in err["loc"] if isinstance(part, int | str))
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        message = "unknown field"
        known = _known_fields(path[:-1])
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


def _known_fields(path: FieldPath) -> list[str]:
    """The YAML field names valid at ``path``, for 'did you mean' hints."""
    model: Any = StackSpec
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``list[X]`` / ``X | None`` / ``X``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
