"""Load profiles as data: ``loadtests/profiles/<name>.yaml``, checked by a typed model.

Every problem is reported with the file, the field path and the line before any load is sent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from opsctl.errors import UserInputError
from opsctl.paths import REPO_ROOT
from opsctl.spec import load_yaml_model, read_yaml_model

PROFILES_DIR = REPO_ROOT / "loadtests" / "profiles"
WHAT = "load profile"  # how errors name a profile file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Behaviour(_Strict):
    """How often each simulated user does one thing, per second (0 turns it off)."""

    rate_per_user_s: float = Field(ge=0, description="actions per user per second")


class GroupBehaviour(Behaviour):
    group_size: int = Field(default=5, ge=2, le=256, description="members per group (fan-out)")


class OfflineBehaviour(Behaviour):
    offline_s: float = Field(default=2.0, gt=0, le=600, description="time spent offline")


class Behaviours(_Strict):
    direct: Behaviour = Behaviour(rate_per_user_s=0.5)
    group: GroupBehaviour = GroupBehaviour(rate_per_user_s=0.1, group_size=5)
    presence: Behaviour = Behaviour(rate_per_user_s=0.05)
    reconnect: Behaviour = Behaviour(rate_per_user_s=0.0)
    offline_sync: OfflineBehaviour = OfflineBehaviour(rate_per_user_s=0.0)

    def weights(self) -> dict[str, float]:
        return {
            "direct": self.direct.rate_per_user_s,
            "group": self.group.rate_per_user_s,
            "presence": self.presence.rate_per_user_s,
            "reconnect": self.reconnect.rate_per_user_s,
            "offline_sync": self.offline_sync.rate_per_user_s,
        }

    @property
    def total_rate(self) -> float:
        return sum(self.weights().values())


class SloOverride(_Strict):
    """A profile's named exceptions to the stack's SLOs (opsctl/loadtest/slo.py applies them).

    Every field is optional: the ones left out come from the stack spec. Latency is
    sender -> receiver, clock-corrected.
    """

    delivery_p50_ms: float | None = Field(default=None, gt=0)
    delivery_p95_ms: float | None = Field(default=None, gt=0)
    delivery_p99_ms: float | None = Field(default=None, gt=0)
    connect_success_pct: float | None = Field(default=None, gt=0, le=100)
    max_error_ratio: float | None = Field(default=None, ge=0, lt=1)
    max_lost: int | None = Field(default=None, ge=0)
    max_duplicated: int | None = Field(default=None, ge=0)
    max_out_of_order: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _meaningful(self) -> SloOverride:
        given = [v for v in (self.delivery_p50_ms, self.delivery_p95_ms, self.delivery_p99_ms) if v]
        if given != sorted(given):
            raise ValueError(
                "cannot be met: delivery_p50_ms <= delivery_p95_ms <= delivery_p99_ms must hold"
            )
        if not self.model_dump(exclude_none=True):
            raise ValueError(
                "overrides nothing: remove 'slo:' to be judged against the stack's SLOs"
            )
        return self


class Generator(_Strict):
    """When a load generator is too busy to measure honestly."""

    max_cpu_pct: float = Field(default=90.0, gt=0, le=100)
    max_lag_ms: float = Field(default=100.0, gt=0)


class Stage(_Strict):
    """One step of a load shape: hold ``users`` until ``until_s`` from the start."""

    until_s: float = Field(gt=0)
    users: int = Field(ge=0)
    spawn_rate: float = Field(gt=0)


class Capacity(_Strict):
    """Step load then binary search on concurrent users."""

    start_users: int = Field(ge=1)
    max_users: int = Field(ge=1)
    step_factor: float = Field(default=2.0, gt=1)
    warmup_s: float = Field(default=3.0, ge=0)
    settle_s: float = Field(default=2.0, ge=0)
    measure_s: float = Field(default=8.0, gt=0)
    search_steps: int = Field(default=2, ge=0, le=10)
    headroom_pct: float = Field(default=20.0, ge=0, lt=100)

    @model_validator(mode="after")
    def _range(self) -> Capacity:
        if self.max_users < self.start_users:
            raise ValueError("max_users must be >= start_users")
        return self


class Storm(_Strict):
    """A synchronised reconnect storm: at ``at_s`` from the start, ``share_pct`` of the users
    lose their connection at the same instant (as when a gateway or a zone dies) and reconnect
    with the protocol's jittered exponential backoff (loadtests/session.py ``backoff_s``). The
    master triggers it in every worker at once; the verdict checks connect success and the time
    until the last of them is back against the stack's reconnect budget."""

    at_s: float = Field(gt=0, description="seconds after the start of the sending window")
    share_pct: float = Field(gt=0, le=100, description="percent of the users that drop")


RegionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*$", max_length=63)]
RegionShare = Annotated[float, Field(gt=0, le=1)]
SHARES_TOLERANCE = 1e-6


class Regions(_Strict):
    """Where the users connect (issue 13 part 6), docs/loadtests.md "Users across regions".

    ``mix``: region -> share of the users whose gateways are that region's (shares sum to 1;
    the region names are the target stack's). ``cross_share``: the share of DM pairs whose two
    users are in different regions; the other pairs are both in one region. loadtests/placement.py
    places user ``i`` from its index alone, so every worker agrees without talking."""

    mix: dict[RegionName, RegionShare] = Field(min_length=1)
    cross_share: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _feasible(self) -> Regions:
        total = sum(self.mix.values())
        if abs(total - 1) > SHARES_TOLERANCE:
            raise ValueError(f"mix shares sum to {total:g}: they must sum to 1")
        if self.cross_share > 0 and len(self.mix) < 2:
            raise ValueError(f"cross_share {self.cross_share:g} needs at least two regions in mix")
        from opsctl.loadtest.placement import same_pair_shares

        try:
            same_pair_shares(self.mix, self.cross_share)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self


class Profile(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    users: int = Field(ge=1)
    spawn_rate: float = Field(gt=0, description="users started per second")
    duration_s: float = Field(gt=0)
    drain_s: float = Field(default=3.0, ge=1, description="settle after sending, then final sync")
    message_bytes: int = Field(default=64, ge=16, le=32000)
    behaviours: Behaviours = Behaviours()
    slo: SloOverride | None = Field(
        default=None, description="exceptions to the stack's SLOs; none: the stack's apply"
    )
    generator: Generator = Generator()
    stages: tuple[Stage, ...] = ()
    capacity: Capacity | None = None
    storms: tuple[Storm, ...] = ()
    regions: Regions | None = Field(
        default=None, description="users across regions; none: every user on the target's URLs"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        group = self.behaviours.group
        if group.rate_per_user_s > 0 and self.users < group.group_size:
            raise ValueError(
                f"users ({self.users}) below behaviours.group.group_size ({group.group_size}):"
                " no group could fill up"
            )
        if self.behaviours.total_rate <= 0:
            raise ValueError("every behaviour rate is 0: the users would only idle")
        ends = [stage.until_s for stage in self.stages]
        if ends != sorted(ends) or len(set(ends)) != len(ends):
            raise ValueError("stages must have strictly increasing until_s")
        return self

    @property
    def sending_s(self) -> float:
        """How long users send: the stages' end, or the duration."""
        return self.stages[-1].until_s if self.stages else self.duration_s

    @property
    def run_time_s(self) -> float:
        """Locust run time: the sending window plus the drain (settle and final sync)."""
        return self.sending_s + self.drain_s

    @property
    def peak_users(self) -> int:
        return max([self.users, *(stage.users for stage in self.stages)])

    def expected_msgs_per_s(self) -> float:
        b = self.behaviours
        return self.users * (b.direct.rate_per_user_s + b.group.rate_per_user_s)


def profile_path(name_or_path: str, profiles_dir: Path = PROFILES_DIR) -> Path:
    """A profile name (``smoke``) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise UserInputError(f"profile file {candidate} does not exist")
        return candidate
    path = profiles_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in profiles_dir.glob("*.yaml"))) or "none"
        raise UserInputError(
            f"unknown load profile '{name_or_path}'", hint=f"profiles in {profiles_dir}: {known}"
        )
    return path


def storm_findings(profile: Profile) -> list[tuple[tuple[str | int, ...], str]]:
    """Storms that could not happen as written, located at their fields."""
    findings: list[tuple[tuple[str | int, ...], str]] = []
    previous = 0.0
    for index, storm in enumerate(profile.storms):
        if storm.at_s >= profile.sending_s:
            findings.append(
                (
                    ("storms", index, "at_s"),
                    f"{storm.at_s:g} s is not inside the sending window (0..{profile.sending_s:g}"
                    " s): the users would already have stopped",
                )
            )
        elif storm.at_s <= previous:
            findings.append((("storms", index, "at_s"), "storms must have increasing at_s"))
        previous = max(previous, storm.at_s)
    return findings


def load_profile(name_or_path: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    """The profile, or ``InvalidInputFile`` (exit 2) listing every problem with the file, the
    field path and its line and column."""
    path = profile_path(name_or_path, profiles_dir)
    return read_yaml_model(Profile, path, what=WHAT, shown=str(path), check=storm_findings)


def parse_profile(text: str, shown: str) -> Profile:
    return load_yaml_model(Profile, text, file=shown, what=WHAT, check=storm_findings)


def check_regions(
    profile: Profile, profile_file: Path, regions: dict[str, tuple[str, ...]], target: str
) -> None:
    """A profile's region mix against the target's regions: exit 2 (``InvalidInputFile``,
    with the field and its line) when the target has no regions or lacks one the mix names."""
    if profile.regions is None:
        return
    from opsctl.errors import InputProblem, InvalidInputFile
    from opsctl.spec._yaml import load_with_positions, position_of

    shown = str(profile_file)
    try:
        _, positions = load_with_positions(profile_file.read_text(encoding="utf-8"))
    except Exception:  # located as well as we can: the profile itself was valid when loaded
        positions = {}

    def problem(path: tuple[str, ...], message: str) -> InputProblem:
        where = position_of(positions, path)
        line, column = where if where else (None, None)
        return InputProblem(shown, ".".join(path), message, line, column)

    if not regions:
        problems = [
            problem(
                ("regions",),
                f"{target} has no regions: a region mix needs a multi-region target "
                "(opsctl local up --stack staging, or --stack with a multi-region spec)",
            )
        ]
    else:
        problems = [
            problem(
                ("regions", "mix", name),
                f"region '{name}' is not in {target} (regions: {', '.join(regions)})",
            )
            for name in profile.regions.mix
            if not regions.get(name)
        ]
    if problems:
        raise InvalidInputFile(WHAT, shown, problems)


def pods_needed(peak_users: int, users_per_pod: float, headroom_pct: float) -> int:
    """Gateway pods for ``peak_users`` when one pod holds ``users_per_pod`` at the SLO."""
    usable = users_per_pod * (1 - headroom_pct / 100)
    if usable <= 0:
        raise ValueError("users per pod must be positive")
    return max(1, math.ceil(peak_users / usable))
