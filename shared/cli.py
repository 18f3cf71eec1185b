"""The one console script, ``jikimi``; each package registers its own subcommands.

A package contributes commands through a module with a ``register(cli: Cli) -> None``
function (``provisioning.cli``, ``edge.cli``, ``hub.cli``, ...). Groups such as ``bench`` or
``sim`` can be shared: every package asks for the group by name and adds its own verbs.

Domain errors (:class:`shared.errors.JikimiError`) become one line on stderr and exit code 2;
a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from shared.addr import host_port
from shared.errors import ConfigError, JikimiError

Handler = Callable[[argparse.Namespace], int]

# Modules that register commands, in the order their groups appear in --help.
COMMAND_MODULES = (
    "trust.cli",
    "provisioning.cli",
    "edge.cli",
    "edge.agent_cli",
    "edge.inference.cli",
    "hub.cli",
    "hub.forward.cli",
    "province.cli",
    "lab.cli",
    "lab.netwarn_cli",
)

# Long-lived commands that load only the module that registers them: ``jikimi edge run`` runs for
# months on a small box and must not carry every other package's imports (issue 17).
LEAN_COMMANDS = {("edge", "run"): "edge.agent_cli"}


class _Registrar(Protocol):
    def __call__(self, cli: Cli) -> None: ...


class Cli:
    """The argument parser being built, with named groups packages can share."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(
            prog="jikimi",
            description="jikimi: regional disaster safety, from field devices to situation centres.",
        )
        self._top = self.parser.add_subparsers(dest="command", metavar="COMMAND")
        self._groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
        self._kinds: dict[tuple[str, str], argparse.Action] = {}
        """``jikimi GROUP NAME``'s ``kind`` positional, for packages above to add kinds to."""

    def command(self, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        """Add a top-level command ``jikimi NAME``."""
        p = self._top.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def subcommand(
        self, group: str, name: str, help: str, handler: Handler, group_help: str = ""
    ) -> argparse.ArgumentParser:
        """Add ``jikimi GROUP NAME``; the group is created on first use."""
        if group not in self._groups:
            gp = self._top.add_parser(group, help=group_help, description=group_help)
            gp.set_defaults(handler=_group_usage(gp))
            self._groups[group] = gp.add_subparsers(dest=f"{group}_command", metavar="VERB")
        p = self._groups[group].add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p


    def kind_argument(self, group: str, name: str, kinds: Sequence[str], help: str) -> None:
        """Give ``jikimi GROUP NAME`` its ``kind`` positional (the kinds its owner handles)."""
        p = self._groups[group].choices[name]
        self._kinds[(group, name)] = p.add_argument("kind", choices=list(kinds), help=help)

    def add_kind(self, group: str, name: str, kind: str, handler: Handler) -> argparse.ArgumentParser:
        """Add KIND to an existing ``jikimi GROUP NAME KIND`` (its ``kind`` positional).

        For a package above the one that owns the verb (``jikimi model warnings network`` is the
        lab's; ``flood`` is the edge's): args with that kind go to ``handler``, others as before.
        Returns the verb's parser so the new kind can add its own options.
        """
        p = self._groups[group].choices[name]
        action = self._kinds[(group, name)]
        action.choices = [*(action.choices or ()), kind]
        previous: Handler = p.get_default("handler")

        def route(args: argparse.Namespace) -> int:
            return handler(args) if args.kind == kind else previous(args)

        p.set_defaults(handler=route)
        return p


def _group_usage(parser: argparse.ArgumentParser) -> Handler:
    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def build_cli(modules: Sequence[str] = COMMAND_MODULES) -> Cli:
    cli = Cli()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that package registers no commands (yet)
            raise
        register: _Registrar = module.register
        register(cli)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    words = tuple(sys.argv[1:3] if argv is None else argv[:2])
    lean = LEAN_COMMANDS.get((words[0], words[1])) if len(words) == 2 else None
    cli = build_cli((lean,) if lean else COMMAND_MODULES)
    args = cli.parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        cli.parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except JikimiError as exc:
        print(f"jikimi: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())


def parse_listen(value: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``) → (host, port); ConfigError otherwise."""
    addr = host_port(value.removeprefix("tcp://"), lowest_port=0)
    if addr is None or not addr[0].strip("[]"):
        raise ConfigError("--listen", "", f"{value!r}: expected tcp://HOST:PORT")
    return addr[0].strip("[]"), addr[1]


async def until_stopped() -> None:
    """Wait for SIGINT or SIGTERM (a foreground server's life)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(sig)
