"""Command lines of the data-preparation commands, parsed by jsonargparse.

``wpauc prepare-amazon ...`` and ``wpauc build-sids ...`` (dispatched by ``wpauc.cli.main``)
and the console scripts ``wpauc-prepare-amazon`` and ``wpauc-build-sids`` (aliases) all run
:func:`run_command`: options ``--output_dir``, ``--sid.codebook_size``, a ``--config`` YAML
file, ``--print_config``; the argparse spellings of earlier versions are still accepted. Bad
input exits with a one-line ``<prog>: error:`` message naming the file, line or option.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields

from jsonargparse import DefaultHelpFormatter, auto_cli

from wpauc.prepare.commands import SIDOptions, build_sids_command, prepare_amazon_command

#: The data-preparation subcommands of ``wpauc``, by name.
COMMANDS: dict[str, Callable[..., dict]] = {
    "prepare-amazon": prepare_amazon_command,
    "build-sids": build_sids_command,
}


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help layout that keeps the docstring's line breaks (its examples)."""


def _description(command: Callable) -> str:
    """The command's docstring without its Args/Returns sections: the top of ``--help``.

    Args:
        command: one of :data:`COMMANDS`.
    """
    return inspect.getdoc(command).split("\n\nArgs:")[0]


def _accept_legacy_spellings(argv: Sequence[str], command: Callable) -> list[str]:
    """``argv`` with the argparse spellings these commands had before jsonargparse rewritten:
    ``--output-dir`` -> ``--output_dir``, ``--codebook-size`` -> ``--sid.codebook_size`` and a
    bare flag such as ``--items-only`` or ``--strict`` -> ``--items_only=true``.

    Args:
        argv: the command's arguments.
        command: the command they are for (its parameters are the options to recognise).
    """
    type_hints = typing.get_type_hints(command)
    parameters = set(inspect.signature(command).parameters)
    sid_fields = {option.name for option in fields(SIDOptions)}
    rewritten = []
    for position, arg in enumerate(argv):
        option, equals, value = arg.partition("=")
        name = option[2:].replace("-", "_")
        if not option.startswith("--") or name not in parameters | sid_fields:
            rewritten.append(arg)
            continue
        value_follows = position + 1 < len(argv) and not argv[position + 1].startswith("--")
        if type_hints.get(name) is bool and not equals and not value_follows:
            rewritten.append(f"--{name}=true")
        else:
            prefix = "sid." if name in sid_fields else ""
            rewritten.append(f"--{prefix}{name}{equals}{value}")
    return rewritten


def run_command(name: str, argv: Sequence[str], prog: str) -> dict:
    """Parse ``argv`` for the data-preparation command ``name`` and run it.

    Args:
        name: a key of :data:`COMMANDS`.
        argv: the command's arguments, without its name.
        prog: the program name shown in ``--help`` and error messages.

    Returns:
        The command's report.

    Raises:
        SystemExit: ``--help``, bad options, or bad input (``<prog>: error: <what and where>``).
    """
    command = COMMANDS[name]
    try:
        return auto_cli(
            command,
            args=_accept_legacy_spellings(argv, command),
            as_positional=False,
            prog=prog,
            description=_description(command),
            formatter_class=_HelpFormatter,
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"{prog}: error: {err}") from err


def describe_commands() -> str:
    """One paragraph naming the data-preparation commands, for ``wpauc --help``."""
    listed = "; ".join(
        f"'wpauc {name}' ({_description(command).splitlines()[0].rstrip('.')})"
        for name, command in COMMANDS.items()
    )
    return f"Data preparation: {listed}. 'wpauc <command> --help' lists a command's options."


def prepare_amazon_main(argv: Sequence[str] | None = None) -> None:
    """Console script ``wpauc-prepare-amazon``: an alias of ``wpauc prepare-amazon``.

    Args:
        argv: the arguments (default: the command line).
    """
    run_command("prepare-amazon", sys.argv[1:] if argv is None else argv, "wpauc-prepare-amazon")


def build_sids_main(argv: Sequence[str] | None = None) -> None:
    """Console script ``wpauc-build-sids``: an alias of ``wpauc build-sids``.

    Args:
        argv: the arguments (default: the command line).
    """
    run_command("build-sids", sys.argv[1:] if argv is None else argv, "wpauc-build-sids")
