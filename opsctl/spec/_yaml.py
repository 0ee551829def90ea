"""YAML loading that remembers where every value came from, for errors that point at a line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]
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


def position_of(positions: dict[Path, tuple[int, int]], path: Path) -> tuple[int, int] | None:
    """The position of ``path``, or of its nearest ancestor that exists in the file."""
    for end in range(len(path), -1, -1):
        found = positions.get(path[:end])
        if found is not None:
            return found
    return None
