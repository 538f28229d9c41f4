"""The ``wpauc`` command.

``wpauc fit|validate|test|predict --config configs/<name>.yaml`` is Lightning's CLI over
:class:`RecommenderModule` and :class:`RecDataModule`, with omegaconf interpolation in the
YAML (``${trainer.default_root_dir}``) resolved once every config file and command-line
override is merged (jsonargparse's ``omegaconf+`` mode), so an interpolation follows an
override given later. ``fit`` evaluates the test split with the best checkpoint when
it ends (``--test_after_fit false`` turns that off), so one command gives a trained model and
its test metrics. ``wpauc prepare-amazon`` and ``wpauc build-sids`` are the data-preparation
commands of :mod:`wpauc.prepare`, parsed by jsonargparse like the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wpauc.callbacks import RankingPlots
from wpauc.data.datamodule import RecDataModule
from wpauc.module import RecommenderModule
from wpauc.prepare.command_line import COMMANDS, describe_commands, run_command


class WpaucCLI(LightningCLI):
    """LightningCLI with a ``--test_after_fit`` switch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--test_after_fit``.

        Args:
            parser: the parser of one subcommand.
        """
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, run the test split on the best checkpoint (or the last weights).",
        )

    def after_fit(self) -> None:
        """Test the best checkpoint (or the last weights) unless ``--test_after_fit false``."""
        if not self.config_init[self.subcommand].get("test_after_fit", False):
            return
        checkpoint_callback = self.trainer.checkpoint_callback
        has_best = bool(checkpoint_callback and checkpoint_callback.best_model_path)
        self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None
        )


def run_cli(args: list[str] | None = None, run: bool = True) -> WpaucCLI:
    """Run Lightning's side of ``wpauc``; returns the CLI object, whose ``trainer``, ``model``
    and ``datamodule`` stay inspectable (tests and experiments use it).

    Args:
        args: the arguments (default: the command line).
        run: ``False`` only parses and instantiates (``args`` then hold no subcommand).
    """
    # interpolations name keys from the config's root (`${trainer.default_root_dir}`), also
    # under a subcommand, whose keys omegaconf+ would otherwise see as `fit.trainer...`
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return WpaucCLI(
        RecommenderModule,
        RecDataModule,
        # the epilog makes `wpauc --help` name the data-preparation commands that main() handles
        parser_kwargs={"parser_mode": "omegaconf+", "epilog": describe_commands()},
        save_config_kwargs={"overwrite": True},
        # every run draws its rank histograms and HR@K figure, whatever callbacks it lists
        trainer_defaults={"callbacks": [RankingPlots()]},
        args=args,
        run=run,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``wpauc``: a data-preparation command, else Lightning's CLI.

    Args:
        argv: the arguments (default: the command line); none at all prints the help.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in COMMANDS:
        run_command(args[0], args[1:], prog=f"wpauc {args[0]}")
    elif not args:
        run_cli(["--help"])
    else:
        # None lets LightningCLI read sys.argv itself, without its warning about `args`
        run_cli(None if argv is None else args)


if __name__ == "__main__":
    main()
