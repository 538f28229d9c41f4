"""GPU smoke test of the pretrained path, run by ``scripts/gpu_smoke.sh`` (``pytest -m gpu``;
skipped without CUDA). On a random Qwen2 checkpoint saved locally, each configuration (LoRA on
bf16 weights, LoRA on 4-bit and on 8-bit bitsandbytes weights, full fine-tuning in bf16) runs
SFT steps and then RL steps with a KL term on CUDA, checks that the reference is the SFT policy
at the first RL step, evaluates the test split exactly, exports the last checkpoint and
recommends from the export on the GPU. Each configuration prints its wall time."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import save_random_checkpoint
from tests.test_training_semantics import fit_with_probe, lora_args
from wpauc.cli import main
from wpauc.export import load_recommender
from wpauc.models import TinyQwen2Policy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

#: The policy settings of each configuration (on top of LoRA r=4 from `lora_args`).
CONFIGURATIONS = {
    "lora-bf16": ["--model.policy.init_args.dtype=bfloat16"],
    "lora-4bit": ["--model.policy.init_args.quantization=4bit"],
    "lora-8bit": ["--model.policy.init_args.quantization=8bit"],
    "full-bf16": ["--model.policy.init_args.dtype=bfloat16", "--model.policy.init_args.lora=null"],
}
ON_GPU = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed"]


@pytest.fixture(scope="module")
def gpu_standin(tmp_path_factory) -> Path:
    """A random Qwen2 checkpoint with head size 16 (bitsandbytes' kernels want round sizes)."""
    architecture = TinyQwen2Policy(
        num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128, seed=0
    )
    return save_random_checkpoint(tmp_path_factory.mktemp("gpu_standin"), 12, architecture)


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_pretrained_path_on_cuda(name, gpu_standin, tmp_path):
    if "bit" in name and importlib.util.find_spec("bitsandbytes") is None:
        pytest.fail("bitsandbytes is not installed: pip install -e '.[quant]'")
    started = time.perf_counter()
    settings = [*CONFIGURATIONS[name], *ON_GPU]
    run = [*settings, "--model.sft_epochs=1", "--trainer.max_epochs=2"]
    cli, probe = fit_with_probe(lora_args(tmp_path, gpu_standin, *run))
    assert cli.trainer.strategy.root_device.type == "cuda"
    logits = probe.logits
    if "base" in logits:  # LoRA: SFT moved away from the base model
        assert (logits["sft_end"] - logits["base"]).abs().max() > 1e-2
    torch.testing.assert_close(logits["reference"], logits["sft_end"], rtol=1e-2, atol=1e-2)
    assert {"train/sft_loss", "train/kl"} <= set(cli.trainer.callback_metrics)

    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert 0.0 <= results["test/auc"] <= 1.0 and 0.0 <= results["test/hr@10"] <= 1.0

    output = tmp_path / "export"
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    main(
        [
            "export",
            *lora_args(tmp_path, gpu_standin, *settings),
            f"--ckpt_path={checkpoint}",
            f"--output_dir={output}",
        ]
    )
    exported = AutoModelForCausalLM.from_pretrained(output, local_files_only=True)
    assert not any("lora" in key for key in exported.state_dict())
    recommender = load_recommender(output, device="cuda")
    history = list(cli.datamodule.catalog.item_ids[:3])
    top = recommender.recommend(history, k=10)
    assert len(set(top)) == 10
    print(f"\ngpu_smoke {name}: SFT + RL + test + export in {time.perf_counter() - started:.1f} s")
