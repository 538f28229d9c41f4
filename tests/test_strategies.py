"""The shipped FSDP and DeepSpeed ZeRO-2 recipes (configs/strategy/), as far as a CPU can check
them: the strategies build from the pieces, FSDP's wrap policy picks every Qwen2 decoder layer,
settings that would hang or fail mid-run are refused before training, and the module takes
FSDP's gradient norm, reduced over the processes. Lightning runs neither strategy on a CPU (the
first test says so, and notices if that changes); the ``gpu`` tests run them, against one GPU.
DDP runs on the CPU: tests/test_module_ddp.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy
from torch.distributed.fsdp import ShardingStrategy
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from tests.conftest import word_tokenizer
from tests.helpers.ddp import fit
from tests.helpers.runs import REPO
from wpauc.data import RecDataModule, SyntheticSource
from wpauc.models import TinyQwen2Policy
from wpauc.module import RecommenderModule
from wpauc.objectives import PolicyLoss, TAWinWPAUC
from wpauc.scaling import check_strategy

STRATEGIES = REPO / "configs" / "strategy"


def piece(name: str) -> dict:
    return yaml.safe_load((STRATEGIES / name).read_text())


def two_processes(strategy: Strategy) -> Strategy:
    """``strategy`` as it is on each of 2 processes once they are set up."""
    environment = LightningEnvironment()
    environment.set_world_size(2)
    strategy.cluster_environment = environment
    return strategy


def fsdp_from_piece() -> FSDPStrategy:
    """The FSDPStrategy that ``configs/strategy/fsdp.yaml`` configures, built as the CLI does."""
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    config = parser.parse_object({"strategy": piece("fsdp.yaml")["trainer.strategy"]})
    return parser.instantiate_classes(config).strategy


def test_lightning_runs_fsdp_only_on_a_gpu():
    # when this stops raising, FSDP can get a 2-process CPU test like tests/test_module_ddp.py
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        Trainer(accelerator="cpu", devices=2, strategy="fsdp")


def test_fsdp_piece_shards_gradients_and_optimizer_state_per_decoder_layer():
    strategy = fsdp_from_piece()
    assert strategy.sharding_strategy == ShardingStrategy.SHARD_GRAD_OP
    wrap_policy = strategy.kwargs["auto_wrap_policy"]
    policy = TinyQwen2Policy(num_layers=3, hidden_size=32, intermediate_size=64).build(
        word_tokenizer(12)
    )
    wrapped = [m for m in policy.modules() if wrap_policy(m, recurse=False, nonwrapped_numel=0)]
    assert wrapped == list(policy.model.layers) and len(wrapped) == 3
    check_strategy(two_processes(strategy), lora_reference=False, refreshed_reference=False)


def test_deepspeed_piece_is_zero_stage_2_and_clips_in_deepspeed():
    settings = piece("deepspeed_zero2.yaml")
    strategy = settings["trainer.strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    config = strategy["init_args"]["config"]
    assert config["zero_optimization"]["stage"] == 2 and config["gradient_clipping"] == 1.0
    assert settings["model.gradient_clip_val"] is None  # DeepSpeed's clipping, not the module's


@pytest.mark.parametrize("sharding", ["FULL_SHARD", "HYBRID_SHARD"])
def test_fsdp_that_regathers_at_every_forward_is_refused(sharding):
    def fsdp() -> FSDPStrategy:
        return FSDPStrategy(sharding_strategy=sharding, auto_wrap_policy={Qwen2DecoderLayer})

    with pytest.raises(ValueError, match=f"sharding_strategy {sharding}.*SHARD_GRAD_OP"):
        check_strategy(two_processes(fsdp()), lora_reference=False, refreshed_reference=False)
    # one process gathers from nobody: nothing to wait for
    check_strategy(fsdp(), lora_reference=False, refreshed_reference=False)


@pytest.mark.parametrize(
    "lora_reference, refreshed_reference, problem",
    [(True, False, "LoRA policy.*ddp.yaml"), (False, True, "two runs.*model.init_from")],
)
def test_fsdp_refuses_a_reference_it_cannot_keep(lora_reference, refreshed_reference, problem):
    strategy = two_processes(FSDPStrategy(sharding_strategy="SHARD_GRAD_OP"))
    with pytest.raises(ValueError, match=problem):
        check_strategy(strategy, lora_reference, refreshed_reference)
    check_strategy(two_processes(DDPStrategy()), lora_reference, refreshed_reference)


def test_module_checks_its_reference_against_the_strategy():
    source = SyntheticSource(
        num_items=64, num_users=24, num_categories=2, subcategories_per_category=4
    )
    datamodule = RecDataModule(source)
    module = RecommenderModule(
        policy=TinyQwen2Policy(hidden_size=32, intermediate_size=64),
        objective=TAWinWPAUC(target_k=3, window_width=3),
        loss=PolicyLoss(beta=0.04),
        sft_epochs=1,
    )
    strategy = two_processes(FSDPStrategy(sharding_strategy="SHARD_GRAD_OP"))
    module.trainer = SimpleNamespace(strategy=strategy, datamodule=datamodule)
    with pytest.raises(ValueError, match="model.sft_epochs > 0"):
        module.configure_model()


class ShardedRoot(torch.nn.Module):
    """Stands in for the FSDP root module: its ``clip_grad_norm_`` is the collective one."""

    def __init__(self) -> None:
        super().__init__()
        self.max_norms: list[float] = []

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        self.max_norms.append(max_norm)
        return torch.tensor(5.0)


@pytest.mark.parametrize("clip, max_norm", [(1.0, 1.0), (None, float("inf"))])
def test_under_fsdp_the_gradient_norm_is_fsdps_reduced_one(clip, max_norm):
    module = RecommenderModule(gradient_clip_val=clip)
    root = ShardedRoot()
    module.trainer = SimpleNamespace(strategy=FSDPStrategy(), model=root)
    assert module._clip_gradients(optimizer=None) == 5.0
    assert root.max_norms == [max_norm]


# ------------------------------------------------------------------ on GPUs


def gpu_fit(root: Path, sft_checkpoint: Path, *extra: str) -> dict[str, list[float]]:
    """One TAWin epoch on GPUs from an SFT checkpoint, in float32 (the frozen-copy reference
    of full fine-tuning, taken before the strategy wraps the policy)."""
    return fit(
        root,
        "--model.sft_epochs=0",
        "--trainer.max_epochs=1",
        f"--model.init_from={sft_checkpoint}",
        "--trainer.accelerator=gpu",
        "--trainer.precision=32-true",
        *extra,
    )


def processes_for_a_batch_of_8() -> int:
    return max(n for n in (1, 2, 4, 8) if n <= torch.cuda.device_count())


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft")
    fit(root, "--model.objective=null", "--trainer.max_epochs=1", "--trainer.accelerator=gpu")
    return root / "checkpoints" / "last.ckpt"


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name, missing",
    [("fsdp.yaml", set()), ("deepspeed_zero2.yaml", {"train/grad_norm"})],
)
def test_strategy_on_gpus_matches_one_gpu(name, missing, sft_checkpoint, tmp_path):
    if name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed)")
    processes = processes_for_a_batch_of_8()
    one_gpu = gpu_fit(tmp_path / "one", sft_checkpoint, "--trainer.devices=1")
    sharded = gpu_fit(
        tmp_path / "sharded",
        sft_checkpoint,
        f"--config={STRATEGIES / name}",
        f"--trainer.devices={processes}",
        f"--data.batch_size={8 // processes}",
    )
    assert sharded.keys() == one_gpu.keys() - missing and "test/auc" in sharded
    for tag, values in sharded.items():
        assert values == pytest.approx(one_gpu[tag], abs=1e-4), tag
