"""One run is one folder (``trainer.default_root_dir``): an override moves all of it, a
re-run cannot mix its checkpoints with an earlier run's, a resumed run continues the same
TensorBoard version with its best checkpoint, and ``predict`` / ``test`` add no empty
version while ``predict`` covers the whole test split. Tiny synthetic runs of the quickstart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback

from tests.helpers.runs import QUICKSTART, TINY_WORLD
from wpauc.cli import LOGGER_KEY, run_cli

SFT = [
    "--model.objective=null",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--test_after_fit=false",
]


def quickstart(subcommand: str, run_dir: Path, *extra: str):
    """`wpauc <subcommand> -c configs/quickstart.yaml` on the tiny world, run folder `run_dir`
    given by `--trainer.default_root_dir` alone."""
    config = [f"--config={QUICKSTART}", *TINY_WORLD, f"--trainer.default_root_dir={run_dir}"]
    return run_cli([subcommand, *config, *extra])


def versions(run_dir: Path) -> list[str]:
    return sorted(path.name for path in (run_dir / "tensorboard").iterdir())


class BestAtTrainStart(Callback):
    """Remembers what the best-checkpoint callback knows when training (re)starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.best_model_score = trainer.checkpoint_callback.best_model_score
        self.best_model_path = trainer.checkpoint_callback.best_model_path


def test_one_override_moves_logs_checkpoints_and_predictions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the config's own folder, runs/quickstart, would be
    run_dir = tmp_path / "elsewhere"
    quickstart("fit", run_dir, *SFT, "--trainer.max_epochs=1")
    quickstart("predict", run_dir, f"--ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}")
    assert not (tmp_path / "runs").exists()
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert list((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    assert (run_dir / "predictions.jsonl").is_file()


def test_a_rerun_is_refused_unless_it_overwrites_the_checkpoints(tmp_path):
    quickstart("fit", tmp_path, *SFT, "--trainer.max_epochs=1")
    with pytest.raises(FileExistsError, match="--overwrite_checkpoints true"):
        quickstart("fit", tmp_path, *SFT, "--trainer.max_epochs=1")
    quickstart("fit", tmp_path, *SFT, "--trainer.max_epochs=1", "--overwrite_checkpoints=true")
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    assert [path.name for path in checkpoints] == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    for path in checkpoints:  # both written by the third run, the second logger version
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint[LOGGER_KEY]["version"] == 1, path.name


def test_resume_continues_the_same_version_and_keeps_the_best(tmp_path):
    first = quickstart("fit", tmp_path, *SFT, "--trainer.max_epochs=2")
    best_score = first.trainer.checkpoint_callback.best_model_score
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert first.trainer.global_step == 4  # 2 epochs of 2 steps
    assert (saved["epoch"], saved["global_step"]) == (1, 4)  # last.ckpt: the final step

    resumed = quickstart(
        "fit",
        tmp_path,
        *SFT,
        "--trainer.max_epochs=3",
        "--trainer.callbacks+=tests.test_cli_runs.BestAtTrainStart",
        f"--ckpt_path={last}",
    )
    (at_start,) = [c for c in resumed.trainer.callbacks if isinstance(c, BestAtTrainStart)]
    assert at_start.best_model_score == best_score
    assert Path(at_start.best_model_path) == tmp_path / "checkpoints" / "best.ckpt"
    assert resumed.trainer.global_step == 6
    assert versions(tmp_path) == ["version_0"]
    assert len(list((tmp_path / "tensorboard" / "version_0").glob("events.out.tfevents.*"))) == 2


def test_predict_covers_the_test_split_and_evaluations_add_no_version(tmp_path):
    fit = quickstart("fit", tmp_path, *SFT, "--trainer.max_epochs=1")
    assert fit.datamodule.max_eval_samples < len(fit.datamodule.data.test)  # a subset in fit
    best = f"--ckpt_path={tmp_path / 'checkpoints' / 'best.ckpt'}"
    predict = quickstart("predict", tmp_path, best)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    written = sorted(json.loads(line)["sample_index"] for line in lines)
    assert written == list(range(len(predict.datamodule.data.test)))
    assert versions(tmp_path) == ["version_0"]
    quickstart("test", tmp_path, best)
    version_0 = tmp_path / "tensorboard" / "version_0"
    assert versions(tmp_path) == ["version_0"]
    assert len(list(version_0.glob("events.out.tfevents.*"))) == 2  # fit's, then test's
    assert yaml.safe_load((version_0 / "config.yaml").read_text())["ckpt_path"] is None  # fit's
