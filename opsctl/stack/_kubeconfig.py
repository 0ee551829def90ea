"""Check, before anything is created, that every region's kube context exists."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from opsctl.errors import InputProblem, InvalidInputFile, UserInputError
from opsctl.spec import StackSpec


def kubeconfig_paths(
    explicit: Path | None = None, env: Mapping[str, str] | None = None
) -> list[Path]:
    """--kubeconfig > $KUBECONFIG (colon-separated, like kubectl) > ~/.kube/config."""
    env = os.environ if env is None else env
    if explicit is not None:
        return [explicit]
    if env.get("KUBECONFIG"):
        return [Path(part) for part in env["KUBECONFIG"].split(os.pathsep) if part]
    return [Path.home() / ".kube" / "config"]


def contexts_in(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        if not path.is_file():
            continue
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserInputError(f"{path}: not a readable kubeconfig: {exc}") from exc
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.add(entry["name"])
    return names


def check_kube_contexts(spec: StackSpec, paths: list[Path], *, file: str = "<stack spec>") -> None:
    """InvalidInputFile (exit 2) naming regions[i].kubeContext for every missing context."""
    known = contexts_in(paths)
    shown = os.pathsep.join(str(p) for p in paths)
    problems = [
        InputProblem(
            file,
            f"regions[{index}].kubeContext",
            f"context '{region.kube_context}' is not in the kubeconfig ({shown})"
            + (f"; known: {', '.join(sorted(known))}" if known else "; it has no contexts"),
        )
        for index, region in enumerate(spec.regions)
        if region.kube_context not in known
    ]
    if problems:
        raise InvalidInputFile("stack spec", file, problems)
