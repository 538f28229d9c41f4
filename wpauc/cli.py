"""The ``wpauc`` command.

``wpauc fit|validate|test|predict --config configs/<name>.yaml`` is Lightning's CLI over
:class:`RecommenderModule` and :class:`RecDataModule`, with omegaconf interpolation in the
YAML (``${trainer.default_root_dir}``) resolved once every config file and command-line
override is merged (jsonargparse's ``omegaconf+`` mode), so an interpolation follows an
override given later. ``fit`` evaluates the test split with the best checkpoint when
it ends (``--test_after_fit false`` turns that off), so one command gives a trained model and
its test metrics. ``wpauc prepare-amazon`` and ``wpauc build-sids`` are the data-preparation
commands of :mod:`wpauc.prepare`, parsed by jsonargparse like the rest; ``wpauc export`` writes
a checkpoint as a plain Hugging Face directory (:mod:`wpauc.export`). The optimizer and its
scheduler are ``--model.optimizer`` and ``--model.scheduler``: Lightning's own ``--optimizer``
and ``--lr_scheduler`` are not offered (they would be built before the policy exists).

A run is one folder, ``trainer.default_root_dir``; the CLI keeps it one run:

- ``fit`` without ``--ckpt_path`` stops before training when a checkpoint folder of the run
  already holds checkpoints (``--overwrite_checkpoints true`` deletes them instead), so no
  ``best-v1.ckpt`` lands beside an old ``best.ckpt`` that a later run would load.
- every checkpoint records its logger's version folder; resuming from it (``fit
  --ckpt_path``) or evaluating it (``validate`` / ``test --ckpt_path``) logs into that same
  ``tensorboard/version_N`` when the logger's folder is the same.
- ``predict`` writes every test context (``data.max_eval_samples`` does not apply to it) and
  logs nothing, so it creates no TensorBoard version.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wpauc.callbacks import RankingPlots
from wpauc.data.datamodule import RecDataModule
from wpauc.export import export_recommender
from wpauc.module import RecommenderModule
from wpauc.prepare.command_line import COMMANDS, describe_commands, run_command

#: The checkpoint entry that says where the run that saved it logs (see `LoggerRecorder`).
LOGGER_KEY = "wpauc_logger"


class LoggerRecorder(Callback):
    """Records in every checkpoint where its run logs (the logger's ``save_dir``, ``name`` and
    ``version``), so that resuming from it or evaluating it logs into the same version folder.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        logger = trainer.logger
        if logger is not None and logger.save_dir is not None:
            checkpoint[LOGGER_KEY] = {
                "save_dir": str(Path(logger.save_dir).resolve()),
                "name": logger.name,
                "version": logger.version,
            }


def continue_logger_version(trainer_config: Namespace, ckpt_path: str) -> None:
    """Set the configured logger's ``version`` to the one recorded in ``ckpt_path`` when the
    logger writes to the same folder and its version is not set explicitly."""
    logger = trainer_config.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if init_args is None or "version" not in init_args or init_args.version is not None:
        return
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    recorded = checkpoint.get(LOGGER_KEY)
    if (
        recorded is not None
        and init_args.get("save_dir") is not None
        and str(Path(init_args.save_dir).resolve()) == recorded["save_dir"]
        and init_args.get("name") == recorded["name"]
    ):
        init_args.version = recorded["version"]


class WpaucCLI(LightningCLI):
    """LightningCLI with ``--test_after_fit`` and ``--overwrite_checkpoints``, and one folder
    per run (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--test_after_fit`` and ``--overwrite_checkpoints``.

        Args:
            parser: the parser of one subcommand.
        """
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, run the test split on the best checkpoint (or the last weights).",
        )
        parser.add_argument(
            "--overwrite_checkpoints",
            type=bool,
            default=False,
            help=(
                "What fit without --ckpt_path does when a checkpoint folder of the run (a"
                " ModelCheckpoint dirpath) already holds .ckpt files: false stops with an error"
                " before training; true deletes those files first. A resumed fit (--ckpt_path)"
                " keeps them and continues."
            ),
        )

    def _parse_ckpt_path(self) -> None:
        """Leave the settings to the config and the command line when ``--ckpt_path`` is given.

        Lightning's CLI would merge the checkpoint's saved hyper-parameters over everything
        parsed, so ``wpauc test --ckpt_path ... --model.evaluation.rank_cap null`` (or any
        other ``--model.evaluation`` or ``--model.metrics`` flag) would be silently ignored. A
        wpauc checkpoint carries its policy's weights and the catalog it was trained on (both
        checked when loaded); how to evaluate it is the command's choice.
        """

    def before_instantiate_classes(self) -> None:
        """Per subcommand, before anything is built: ``predict`` covers the whole test split
        and logs nothing; a run evaluated or resumed from a checkpoint logs into its version
        folder; only ``fit`` saves its ``config.yaml`` (an evaluation does not replace it)."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        if self.subcommand != "fit":
            self.save_config_callback = None
        if self.subcommand == "predict":
            config.data.max_eval_samples = None
            config.trainer.logger = False
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            continue_logger_version(config.trainer, ckpt_path)

    def before_fit(self) -> None:
        """Refuse, or with ``--overwrite_checkpoints`` clear, checkpoint folders that already
        hold checkpoints, unless the fit resumes (``--ckpt_path``)."""
        config = self.config_init["fit"]
        if config.get("ckpt_path"):
            return
        folders = {getattr(c, "dirpath", None) for c in self.trainer.checkpoint_callbacks} - {None}
        existing = sorted(path for folder in folders for path in Path(folder).glob("*.ckpt"))
        if not existing:
            return
        if not config["overwrite_checkpoints"]:
            names = ", ".join(str(path) for path in existing)
            raise FileExistsError(
                f"this fit would write its checkpoints beside an earlier run's ({names}), and"
                " configs that start from them (model.init_from) could load the old ones. Give"
                " the run its own folder (--trainer.default_root_dir), resume the earlier one"
                " (--ckpt_path .../last.ckpt) or delete them first (--overwrite_checkpoints true)."
            )
        for path in existing:
            path.unlink(missing_ok=True)

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
        parser_kwargs={
            "parser_mode": "omegaconf+",
            "epilog": describe_commands()
            + " 'wpauc export' writes a checkpoint as a Hugging Face folder (see its --help).",
        },
        # the optimizer is model.optimizer: Lightning's --optimizer would be built over the
        # module's parameters before configure_model builds the policy (an empty list)
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        # every run draws its rank histograms and HR@K figure, whatever callbacks it lists,
        # and its checkpoints say where it logs
        trainer_defaults={"callbacks": [RankingPlots(), LoggerRecorder()]},
        args=args,
        run=run,
    )


def export_command(argv: Sequence[str], prog: str = "wpauc export") -> Path:
    """``wpauc export``: parse the arguments, build the run's module and data from its
    config, and export the checkpoint (`wpauc.export.export_recommender`).

    Args:
        argv: ``--ckpt_path``, ``--output_dir`` and the config arguments of ``wpauc test``
            (``--config`` and overrides).
        prog: the program name shown in ``--help`` and error messages.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Export a checkpoint as a plain Hugging Face directory (LoRA merged, safetensors,"
            " tokenizer with the code tokens, the item-code map in wpauc_recommender.json)."
            " Every other argument is a config argument, as for 'wpauc test' on the same"
            " checkpoint: --config <run config> and overrides."
        ),
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export")
    parser.add_argument("--output_dir", required=True, help="a new or empty folder")
    args, config_args = parser.parse_known_args(argv)
    # the export builds the policy on this machine's CPU (a 4/8-bit policy in full
    # precision); init_from and the reference would only load weights the checkpoint replaces
    cli = run_cli(
        [
            *config_args,
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.num_nodes=1",
            "--trainer.strategy=auto",
            "--trainer.logger=false",
            "--model.init_from=null",
            "--model.loss.beta=0",
        ],
        run=False,
    )
    try:
        output = export_recommender(cli.model, cli.datamodule, args.ckpt_path, args.output_dir)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"{prog}: error: {error}") from error
    print(f"{prog}: wrote {output}")
    return output


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``wpauc``: a data-preparation command, ``export``, else
    Lightning's CLI.

    Args:
        argv: the arguments (default: the command line); none at all prints the help.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in COMMANDS:
        run_command(args[0], args[1:], prog=f"wpauc {args[0]}")
    elif args and args[0] == "export":
        export_command(args[1:])
    elif not args:
        run_cli(["--help"])
    else:
        # None lets LightningCLI read sys.argv itself, without its warning about `args`
        run_cli(None if argv is None else args)


if __name__ == "__main__":
    main()
