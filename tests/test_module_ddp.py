"""The same SFT-then-TAWin run under Lightning DDP with 2 CPU processes (half the batch each)
gives the same validation and test metrics as one process."""

import subprocess
import sys

import pytest

from tests.test_module import TINY_WORLD, read_events, tiny_args


def run(tmp_path, *extra):
    args = tiny_args(
        tmp_path,
        "--trainer.max_epochs=2",
        "--model.sft_epochs=1",
        "--trainer.limit_train_batches=3",
        *extra,
    )
    subprocess.run(
        [sys.executable, "-m", "wpauc.cli", *args], check=True, capture_output=True, timeout=300
    )
    events = read_events(tmp_path)
    return {
        tag: [event.value for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith(("val/", "test/"))
    }


def test_two_process_ddp_matches_one_process(tmp_path):
    assert "--data.batch_size=8" in TINY_WORLD
    single = run(tmp_path / "single")
    ddp = run(
        tmp_path / "ddp",
        "--data.batch_size=4",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
    )
    assert single.keys() == ddp.keys() and "test/auc" in single
    for tag, values in single.items():
        assert ddp[tag] == pytest.approx(values, abs=1e-5), tag
