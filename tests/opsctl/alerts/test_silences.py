"""Silence requests are checked completely before anything reaches Alertmanager."""

from __future__ import annotations

from datetime import timedelta

import pytest

from opsctl.alerts._live import SilenceRequest, format_matcher, parse_duration, parse_matcher
from opsctl.errors import ExitCode, UserInputError
from tests.support import OpsctlRunner

pytestmark = pytest.mark.unit


def test_a_scoped_deploy_window_silence() -> None:
    why = {"author": "sre@im", "comment": "CHG-42 rollout", "expires": "30m"}
    where = {"namespace": "im", "region": "eu-central"}
    request = SilenceRequest.build(matchers=["alertname=~ImGateway.*"], **why, **where)
    matchers = [format_matcher(m) for m in request.matchers]
    assert matchers == ["alertname=~ImGateway.*", "namespace=im", "region=eu-central"]
    assert request.duration == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"author": " "}, "--author is required"),
        ({"comment": ""}, "--comment is required"),
        ({"expires": "forever"}, "not a duration"),
        ({"expires": "0m"}, "longer than zero"),
        ({"expires": "8d"}, "longer than 7 days"),
        ({"matchers": []}, "at least one --matcher"),
        ({"matchers": ["no operator"]}, "is not name=value"),
    ],
)
def test_bad_silences_are_refused(kwargs: dict[str, object], words: str) -> None:
    base = {"matchers": ["alertname=X"], "author": "a", "comment": "c", "expires": "1h"}
    with pytest.raises(UserInputError, match=words):
        SilenceRequest.build(**{**base, **kwargs})  # type: ignore[arg-type]


def test_matcher_operators() -> None:
    matcher = parse_matcher("severity!=ticket")
    assert (matcher["name"], matcher["value"]) == ("severity", "ticket")
    assert (matcher["isRegex"], matcher["isEqual"]) == (False, False)
    assert set(matcher) == {"name", "value", "isRegex", "isEqual"}
    assert format_matcher(parse_matcher("team!~im-.*")) == "team!~im-.*"
    assert parse_duration("2h") == timedelta(hours=2)


def test_cli_refuses_a_silence_without_expiry_before_contacting_anything(
    opsctl: OpsctlRunner,
) -> None:
    unreachable = "http://127.0.0.1:9"
    request = ("--author", "a", "--comment", "c", "--matcher", "alertname=X")
    result = opsctl("alerts", "silence", "create", *request, "--alertmanager-url", unreachable)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "--expires" in result.stderr
