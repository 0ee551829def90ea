"""A Kubernetes API client for one context of a kubeconfig."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from opsctl.errors import UserInputError


def client_for_context(kubeconfig: Path | None, context: str) -> Any:
    """An ApiClient for ``context``; a context missing from the kubeconfig is bad input."""
    import yaml
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    where = kubeconfig or "the default kubeconfig"
    try:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, context=context
        )
    except ConfigException as exc:
        raise UserInputError(
            f"kube context '{context}' is not usable from {where}: {exc}",
            hint="the region's kubeContext in the stack spec must name a context in the kubeconfig",
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"{where}: not a readable kubeconfig: {exc}") from exc
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        # The loader walks the document without checking its shape first.
        raise UserInputError(f"{where}: not a kubeconfig ({type(exc).__name__}: {exc})") from exc


def default_kubeconfig() -> Path | None:
    """$KUBECONFIG, else the simulated clusters' kubeconfig when present, else ~/.kube/config."""
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    from opsctl.cluster.kwok import default_state_dir

    kwok = default_state_dir() / "kubeconfig"
    return kwok if kwok.is_file() else None
