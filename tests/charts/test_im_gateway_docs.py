"""Chart hygiene that needs no cluster: every value documented, in the README and the schema."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from opsctl.paths import REPO_ROOT

pytestmark = pytest.mark.unit

CHART = REPO_ROOT / "charts" / "im-gateway"
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
PARAMS = dict(re.findall(r"^\s*## @param (\S+) (.+)$", VALUES_TEXT, flags=re.MULTILINE))


def leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of values; a documented map or list counts as one value."""
    if prefix in PARAMS or not isinstance(node, dict) or not node:
        return [prefix]
    return [
        p for key, value in node.items() for p in leaf_paths(value, f"{prefix}.{key}".strip("."))
    ]


def test_every_value_has_a_param_line() -> None:
    undocumented = [path for path in leaf_paths(VALUES) if path not in PARAMS]
    assert undocumented == []


def test_every_param_line_names_a_real_value() -> None:
    real = set(leaf_paths(VALUES))
    assert sorted(set(PARAMS) - real) == []


def test_readme_lists_every_param_with_its_description() -> None:
    readme = (CHART / "README.md").read_text()
    for name, description in PARAMS.items():
        assert f"| `{name}` | {description} |" in readme, name


def test_schema_knows_every_value() -> None:
    def schema_at(path: str) -> dict[str, Any] | None:
        node: dict[str, Any] = SCHEMA
        for part in path.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                return None
        return node

    missing = [path for path in leaf_paths(VALUES) if schema_at(path) is None]
    assert missing == []


@pytest.mark.parametrize("scenario", sorted(p.name for p in (CHART / "ci").glob("*-values.yaml")))
def test_defaults_and_ci_scenarios_satisfy_the_schema(scenario: str) -> None:
    jsonschema.validate(VALUES, SCHEMA)
    overrides = yaml.safe_load((CHART / "ci" / scenario).read_text())
    jsonschema.validate(merge(VALUES, overrides), SCHEMA)


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: merge(base.get(k), v) for k, v in override.items()} | {
            k: v for k, v in base.items() if k not in override
        }
    return override


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"gateway": {"image": {"tag": "latest"}}}, "latest"),
        ({"containerSecurityContext": {"privileged": True}}, "privileged"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"gateway": {"replicas": 0}}, "replicas"),
        ({"gateway": {"surprise": 1}}, "surprise"),
        ({"kafka": {"bootstrap": "no-port"}}, "bootstrap"),
    ],
)
def test_schema_rejects_unsafe_or_malformed_values(override: dict[str, Any], words: str) -> None:
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(merge(VALUES, override), SCHEMA)
    assert words in str(caught.value.path) + caught.value.message


def test_chart_has_the_scaffold_files() -> None:
    for name in (
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "README.md",
        "templates/NOTES.txt",
        "templates/_helpers.tpl",
        "templates/tests/readyz-job.yaml",
    ):
        assert (CHART / name).is_file(), name


def schema_patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for value in node.values() for p in schema_patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in schema_patterns(value)]
    return []


def test_schema_patterns_are_go_regexps() -> None:
    """helm validates with Go's RE2: no lookaround or backreferences, which Python accepts."""
    patterns = schema_patterns(SCHEMA)
    assert patterns
    unsupported = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]")
    assert [p for p in patterns if unsupported.search(p)] == []
