"""The ``wpauc`` command: Lightning's CLI over :class:`RecommenderModule` and :class:`RecDataModule`.

``wpauc fit|validate|test|predict --config configs/<name>.yaml`` with omegaconf
interpolation in the YAML (``${data.batch_size}``). ``fit`` evaluates the test split with
the best checkpoint when it ends (``--test_after_fit false`` turns that off), so one command
gives a trained model and its test metrics.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wpauc.data.datamodule import RecDataModule
from wpauc.module import RecommenderModule


class WpaucCLI(LightningCLI):
    """LightningCLI with a ``--test_after_fit`` switch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, run the test split on the best checkpoint (or the last weights).",
        )

    def after_fit(self) -> None:
        if not self.config_init[self.subcommand].get("test_after_fit", False):
            return
        has_best = bool(self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)


def run_cli(args: list[str] | None = None, run: bool = True) -> WpaucCLI:
    """Run ``wpauc`` with ``args`` (default: the command line); returns the CLI object, whose
    ``trainer``, ``model`` and ``datamodule`` stay inspectable (tests and experiments use it).
    ``run=False`` only parses and instantiates (``args`` then hold no subcommand)."""
    return WpaucCLI(
        RecommenderModule,
        RecDataModule,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main() -> None:
    """Console entry point ``wpauc``."""
    run_cli()


if __name__ == "__main__":
    main()
