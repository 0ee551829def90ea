"""A kubeconfig the user points at is input: whatever it holds, opsctl answers with a user error
(exit 2) naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsctl.errors import UserInputError
from opsctl.kube import client_for_context

pytestmark = pytest.mark.unit

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
keys = st.sampled_from(
    ["contexts", "clusters", "users", "name", "context", "cluster", "user", "server", "token"]
) | st.text(max_size=5)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("hello: [", "not a readable kubeconfig"),
        ("- a\n", "not a kubeconfig"),
        ("contexts: 5\n", "not a kubeconfig"),
        ("contexts: []\n", "kube context 'prod' is not usable"),
    ],
)
def test_broken_kubeconfigs_are_user_errors_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message) as raised:
        client_for_context(path, "prod")
    assert str(path) in raised.value.message


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents)
def test_any_yaml_document_is_a_client_or_a_user_error(tmp_path: Path, document: object) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(document))
    refused: list[UserInputError] = []
    try:
        client_for_context(path, "prod")
    except UserInputError as error:  # anything else fails the test
        refused.append(error)
    assert all(str(path) in error.message for error in refused)
