"""Every shipped YAML config parses and instantiates (trainer, model, data module).

Hardware and files a CI machine lacks are swapped for stand-ins: the GPU trainer runs on the
CPU and the pretrained model path points at a tiny random checkpoint written offline.
"""

from pathlib import Path

import pytest
import torch

from tests.conftest import save_random_checkpoint
from wpauc.cli import run_cli
from wpauc.data import RecDataModule
from wpauc.models import TinyQwen2Policy
from wpauc.module import RecommenderModule

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_configs_are_shipped():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_instantiates(config: Path, tmp_path):
    overrides = []
    if "pretrained" in config.parts:
        checkpoint = save_random_checkpoint(tmp_path / "model", 50, TinyQwen2Policy(hidden_size=32))
        overrides += [f"--model.policy.init_args.path={checkpoint}"]
        overrides += [f"--data.tokenizer_path={checkpoint}"]
    if not torch.cuda.is_available():
        overrides += ["--trainer.accelerator=cpu", "--trainer.precision=32-true"]
    cli = run_cli([f"--config={config}", f"--trainer.default_root_dir={tmp_path}", *overrides], run=False)
    assert isinstance(cli.model, RecommenderModule)
    assert isinstance(cli.datamodule, RecDataModule)
    assert cli.trainer.max_epochs >= 1
