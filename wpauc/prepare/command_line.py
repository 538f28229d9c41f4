"""Command lines of the data-preparation commands, parsed by jsonargparse.

``wpauc prepare-amazon ...`` and ``wpauc build-sids ...`` (dispatched by ``wpauc.cli.main``)
run :func:`run_command`: options ``--output_dir``, ``--sid.codebook_size``, a ``--config``
YAML file, ``--print_config``, bare boolean flags (``--items_only``). Bad input exits with a
one-line ``<prog>: error:`` message naming the file, line or option.
"""

from __future__ import annotations

import argparse
import inspect
import typing
from collections.abc import Callable, Sequence

from jsonargparse import DefaultHelpFormatter, auto_cli

from wpauc.prepare.commands import build_sids_command, prepare_amazon_command

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


def _bare_flags_as_true(argv: Sequence[str], command: Callable) -> list[str]:
    """``argv`` with each bare boolean flag (``--items_only`` with no value after it) written
    as ``--items_only=true``, which is how jsonargparse reads booleans.

    Args:
        argv: the command's arguments.
        command: the command they are for (its boolean parameters are the flags).
    """
    type_hints = typing.get_type_hints(command)
    flags = {f"--{name}" for name in inspect.signature(command).parameters}
    flags = {flag for flag in flags if type_hints.get(flag[2:]) is bool}
    return [
        f"{arg}=true"
        if arg in flags and (position + 1 == len(argv) or argv[position + 1].startswith("--"))
        else arg
        for position, arg in enumerate(argv)
    ]


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
            args=_bare_flags_as_true(argv, command),
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
