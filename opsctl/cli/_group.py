"""How opsctl's command groups share options, after hatch's ``src/hatch/cli/__init__.py``.

* **Global options** (``--stack``, ``--output``, ``--infra-dir``, ``-v``, ``-q``) are defined
  once (:func:`opsctl.cli._options.global_options`). Every group takes them and hands them to
  each of its commands, so they work before or after the command. Wherever they are given,
  they land in the one :class:`~opsctl.cli._options.RootOptions` of the invocation; the last
  one given wins.
* **Group options** are the options of a group's callback (``opsctl rollout``: component,
  namespace, kubeconfig). The group hands them to each of its commands too, so
  ``opsctl rollout status -n im`` and ``opsctl rollout -n im status`` mean the same. The
  callback turns them into one typed object on ``ctx.obj`` (a ``RolloutTarget``), and the
  commands read that object: each command declares only its own arguments.
* The whole command line is parsed **before** any callback runs, so a callback sees the final
  value of its options wherever they were given, and ``--help`` runs no callback at all.
* **Help from the constants:** a help text may name ``{namespace.key}``; the value is filled
  in only when help is shown (:func:`help_values`), so the module that holds the constant is
  not imported on every run and ``opsctl --help`` stays fast.

A command may still declare an option of the same name itself; then its own wins and the
group's is not handed to it (``opsctl render`` does, so it also works mounted on its own).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from enum import Enum
from functools import cache
from typing import Any

import typer
from typer._click.core import Context  # typer 0.29 vendors click; its groups take this
from typer.core import TyperGroup

# Where a parameter's value came from (click's ParameterSource names): only values the user
# gave are handed up to the group that owns the option.
_GIVEN = {"COMMANDLINE", "ENVIRONMENT", "PROMPT"}

# -- help rendered from the constants ---------------------------------------------------------

_HELP_VALUES: dict[str, Callable[[], Mapping[str, object]]] = {}
_PLACEHOLDER = re.compile(r"\{(\w+)\.(\w+)\}")


def help_values(namespace: str) -> Callable[[Callable[[], Mapping[str, object]]], Any]:
    """Register a function returning the values ``{namespace.key}`` in help texts stand for.

    It runs only when help is shown, so it may import slow modules.
    """

    def register(
        values: Callable[[], Mapping[str, object]],
    ) -> Callable[[], Mapping[str, object]]:
        _HELP_VALUES[namespace] = cache(values)
        return values

    return register


def render_help(text: str) -> str:
    """Fill in every ``{namespace.key}`` of a registered namespace; leave anything else."""

    def value(match: re.Match[str]) -> str:
        namespace, key = match.groups()
        if namespace not in _HELP_VALUES:
            return match.group(0)
        values = _HELP_VALUES[namespace]()
        if key not in values:
            raise KeyError(f"help text names {{{namespace}.{key}}}, which is not defined")
        shown = values[key]
        return str(shown.value if isinstance(shown, Enum) else shown)

    return _PLACEHOLDER.sub(value, text)


def _fill_help(command: Any) -> None:
    if command.help:
        command.help = render_help(command.help)
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            param.help = render_help(text)


class OpsctlContext(typer.Context):
    def get_help(self) -> str:
        _fill_help(self.command)
        return super().get_help()


# -- sharing options with the commands --------------------------------------------------------


def _global_params() -> list[Any]:
    from opsctl.cli._options import global_options

    return global_options()


def _is_global(param: Any) -> bool:
    return any(param is known for known in _global_params())


def _names(param: Any) -> set[str]:
    return {param.name, *getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())}


def _hand(command: Any, params: list[Any]) -> None:
    """Add ``params`` to the command, except where it has an option of that name itself."""
    taken = set().union(*(_names(p) for p in command.params)) if command.params else set()
    for param in params:
        if any(param is p for p in command.params) or _names(param) & taken:
            continue
        command.params.append(param)
        taken |= _names(param)


class OpsctlGroup(TyperGroup):
    """A group whose global and own options also work after its subcommands."""

    context_class = OpsctlContext

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _hand(self, _global_params())

    def shared_params(self) -> list[Any]:
        """The group's own options (its callback's), which every command of the group takes."""
        return [
            p
            for p in self.params
            if isinstance(p, typer.core.TyperOption) and not p.is_eager and not _is_global(p)
        ]

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            return None
        command.context_class = OpsctlContext
        if isinstance(command, OpsctlGroup):
            return command  # it takes the global options itself; ours are for our commands
        _hand(command, [*self.shared_params(), *_global_params()])
        return command

    def invoke(self, ctx: Context) -> Any:
        """Parse down to the command, hand every given value to its owner, then run the
        callbacks from the top and the command last."""
        if not ctx._protected_args:
            return super().invoke(ctx)
        with ExitStack() as entered:
            entered.enter_context(ctx)
            chain = [ctx]
            while isinstance(chain[-1].command, TyperGroup) and chain[-1]._protected_args:
                parent = chain[-1]
                group = parent.command
                assert isinstance(group, TyperGroup)
                args = [*parent._protected_args, *parent.args]
                parent._protected_args, parent.args = [], []
                name, command, rest = group.resolve_command(parent, args)
                assert command is not None
                parent.invoked_subcommand = name
                child = command.make_context(name, rest, parent=parent)
                entered.enter_context(child)
                chain.append(child)
            leaf = chain[-1]
            if isinstance(leaf.command, TyperGroup) and not leaf.command.invoke_without_command:
                leaf.fail("Missing command.")
            _collect(chain)
            for parent, child in itertools.pairwise(chain):
                if parent.command.callback is not None:
                    parent.invoke(parent.command.callback, **parent.params)
                child.obj = parent.obj
            return leaf.command.invoke(leaf)


def _collect(chain: list[Context]) -> None:
    """Take the shared options out of each context: global ones into the invocation's
    RootOptions, group ones into the context of the group that owns them."""
    from opsctl import console
    from opsctl.cli._options import RootOptions

    root = RootOptions.of(chain[0])
    for depth, ctx in enumerate(chain):
        for param in ctx.command.params:
            name = param.name
            if name is None or name not in ctx.params:
                continue
            if _is_global(param):
                value = ctx.params.pop(name)
                if _given(ctx, name):
                    root.take(name, value.value if isinstance(value, Enum) else value)
                continue
            owner = next(
                (up for up in chain[:depth] if any(param is p for p in up.command.params)), None
            )
            if owner is None:
                continue  # the command's own option
            value = ctx.params.pop(name)
            if _given(ctx, name):
                owner.params[name] = value
    console.verbosity = -1 if root.quiet else root.verbose


def _given(ctx: Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in _GIVEN
