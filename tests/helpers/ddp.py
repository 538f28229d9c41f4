"""Fits through the wpauc command in a fresh process (Lightning starts the DDP processes
itself) with a callback that records, per process, the contexts each one trains and evaluates
on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lightning.pytorch import Callback

from tests.helpers.runs import REPO, read_events, tiny_args


class ShardRecorder(Callback):
    """Writes, per process, the contexts of every batch it trains or evaluates on and, in the
    RL stage, the positive of each row of its rollout's groups, to ``rank<r>.jsonl``."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def _write(self, trainer, record: dict) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / f"rank{trainer.global_rank}.jsonl").open("a") as file:
            file.write(json.dumps({"epoch": trainer.current_epoch, **record}) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {"stage": "train", "batch": batch_idx, "samples": batch["sample_index"].tolist()}
        if pl_module.in_rl_stage:
            group = pl_module.last_rollout.group
            record["targets"] = batch["target"].tolist()
            record["group_positives"] = [
                items[mask].tolist()
                for items, mask in zip(group.items, group.positive_mask, strict=True)
            ]
        self._write(trainer, record)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        self._write(trainer, {"stage": "valid", "samples": batch["sample_index"].tolist()})

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        self._write(trainer, {"stage": "test", "samples": batch["sample_index"].tolist()})


def wpauc(*args: str) -> None:
    """Run the wpauc command in a fresh process (Lightning starts the second one itself)."""
    result = subprocess.run(
        [sys.executable, "-m", "wpauc.cli", *args],
        cwd=REPO,  # the recorder is imported from the tests package
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def fit(root: Path, *extra: str) -> dict[str, list[float]]:
    """Fit 1 SFT epoch then 1 TAWin epoch of 3 steps with the shard recorder; the logged
    validation and test scalars and the RL steps' gradient norms."""
    recorder = {"class_path": f"{__name__}.ShardRecorder", "init_args": {"output_dir": str(root)}}
    args = tiny_args(
        root,
        "--trainer.max_epochs=2",
        "--model.sft_epochs=1",
        "--trainer.limit_train_batches=3",
        f"--trainer.callbacks+={json.dumps(recorder)}",
        *extra,
    )
    wpauc(*args)
    events = read_events(root)
    return {
        tag: [event.value for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith(("val/", "test/")) or tag == "train/grad_norm"
    }
