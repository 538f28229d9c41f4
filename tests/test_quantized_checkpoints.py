"""Checkpoints of 4/8-bit (bitsandbytes) LoRA runs, on a CPU: bitsandbytes cannot run here,
so a LoRA checkpoint of the stand-in is rewritten as a 4-bit (NF4, double quantization) or
8-bit run saves it: every linear layer's frozen base weight quantised, with bitsandbytes'
quantisation state beside it (``...weight.absmax``, ``.quant_map``, ``.nested_absmax``,
``.nested_quant_map``, ``.quant_state.bitsandbytes__nf4``; ``...SCB``, ``...weight_format``).

Those weights are the base model of ``model.policy.init_args.path``, so a policy built from
that path needs none of them: ``init_from``, a resume, ``validate`` / ``test`` / ``predict
--ckpt_path``, ``wpauc export`` (with the 4/8-bit config, on a CPU) and ``load_recommender``
give exactly what the original checkpoint gives. Any other key the policy lacks is still an
error naming it, and a policy that is quantised itself (a stand-in of ``Linear4bit``'s state
dict) refuses a checkpoint whose frozen base is another model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.helpers.runs import SFT_ONE_EPOCH, lora_args
from wpauc.cli import main, run_cli
from wpauc.export import load_recommender
from wpauc.models.provenance import (
    accept_quantized_checkpoints,
    frozen_base_from_policy,
    quantized_weights,
)

#: The quantisation-state entries of a 4-bit weight with double quantization, as
#: bitsandbytes' ``Linear4bit`` saves them beside ``<layer>.weight``.
FOUR_BIT_ENTRIES = (
    "absmax",
    "quant_map",
    "nested_absmax",
    "nested_quant_map",
    "quant_state.bitsandbytes__nf4",
)


def four_bit_state(shape: tuple[int, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random 4-bit weight of `shape` in bitsandbytes' layout: ``{"": packed weight,
    entry: tensor}`` (blocks of 64, absmax quantised in blocks of 256; the settings, with
    the weight's shape, packed as JSON bytes)."""
    size = shape[0] * shape[1]
    blocks = -(-size // 64)
    settings = {
        "quant_type": "nf4",
        "blocksize": 64,
        "dtype": "bfloat16",
        "shape": list(shape),
        "nested_blocksize": 256,
        "nested_dtype": "float32",
        "nested_offset": 0.0123,
    }
    return {
        "": torch.randint(0, 256, ((size + 1) // 2, 1), dtype=torch.uint8, generator=generator),
        "absmax": torch.randint(0, 256, (blocks,), dtype=torch.uint8, generator=generator),
        "quant_map": torch.linspace(-1, 1, 16),
        "nested_absmax": torch.rand(-(-blocks // 256), generator=generator),
        "nested_quant_map": torch.linspace(-1, 1, 256),
        "quant_state.bitsandbytes__nf4": torch.tensor(
            list(json.dumps(settings).encode()), dtype=torch.uint8
        ),
    }


def eight_bit_state(shape: tuple[int, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random int8 weight of `shape` in ``Linear8bitLt``'s layout (keys relative to the
    layer: ``weight``, ``SCB``, ``weight_format``)."""
    return {
        "weight": torch.randint(-127, 128, shape, dtype=torch.int8, generator=generator),
        "SCB": torch.rand(shape[0], generator=generator) * 10,
        "weight_format": torch.tensor(0, dtype=torch.uint8),
    }


def is_linear_base_weight(name: str) -> bool:
    """Whether bitsandbytes quantises `name`: the weight of a decoder layer's linear layers
    (the adapted ones' ``base_layer`` too); not embeddings, norms, biases or lm_head."""
    return ".layers." in name and name.endswith(("_proj.weight", "_proj.base_layer.weight"))


def quantize_like_bitsandbytes(checkpoint: Path, output: Path, bits: int) -> Path:
    """Write `checkpoint` with its frozen linear base weights replaced as a `bits`-bit run
    saves them (random codes: a policy must not need them); returns `output`."""
    saved = torch.load(checkpoint, weights_only=True)
    generator = torch.Generator().manual_seed(bits)
    state = {}
    for name, value in saved["state_dict"].items():
        if not (name.startswith("policy.") and is_linear_base_weight(name)):
            state[name] = value
            continue
        assert value.dim() == 2, name
        if bits == 4:
            for entry, tensor in four_bit_state(tuple(value.shape), generator).items():
                state[f"{name}.{entry}" if entry else name] = tensor
        else:
            layer = name.removesuffix("weight")
            for entry, tensor in eight_bit_state(tuple(value.shape), generator).items():
                state[layer + entry] = tensor
    saved["state_dict"] = state
    torch.save(saved, output)
    return output


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, standin) -> dict[str, Path]:  # noqa: F811
    """The last.ckpt of a one-epoch LoRA SFT run on the stand-in ("original") and its 4-bit
    and 8-bit rewrites ("4bit", "8bit")."""
    root = tmp_path_factory.mktemp("lora_sft")
    run_cli(["fit", *lora_args(root, standin), *SFT_ONE_EPOCH])
    original = root / "checkpoints" / "last.ckpt"
    return {
        "original": original,
        "4bit": quantize_like_bitsandbytes(original, root / "4bit.ckpt", 4),
        "8bit": quantize_like_bitsandbytes(original, root / "8bit.ckpt", 8),
    }


def test_the_rewrites_carry_bitsandbytes_quantisation_state(checkpoints):
    originals = torch.load(checkpoints["original"], weights_only=True)["state_dict"]
    for bits, kind in (("4bit", "4-bit"), ("8bit", "8-bit")):
        state = torch.load(checkpoints[bits], weights_only=True)["state_dict"]
        weights, entries = quantized_weights(state)
        expected = {name for name, value in originals.items() if is_linear_base_weight(name)}
        assert set(weights) == expected and set(weights.values()) == {kind}
        assert len(entries) == len(expected) * (5 if bits == "4bit" else 2)
        q_proj = "policy.base_model.model.model.layers.0.self_attn.q_proj.base_layer"
        if bits == "4bit":
            assert f"{q_proj}.weight.quant_state.bitsandbytes__nf4" in entries
            assert state[f"{q_proj}.weight"].dtype == torch.uint8
        else:
            assert {f"{q_proj}.SCB", f"{q_proj}.weight_format"} <= entries
    assert quantized_weights(originals) == ({}, set())


def rl_from(root: Path, standin: Path, checkpoint: Path):  # noqa: F811
    """The module of an RL-only run started from `checkpoint` (built, not trained)."""
    cli = run_cli(
        lora_args(root, standin, f"--model.init_from={checkpoint}", "--model.sft_epochs=0"),
        run=False,
    )
    cli.model.build(cli.datamodule.catalog_context())
    return cli.model


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_init_from_a_quantized_checkpoint_loads_what_training_changed(
    checkpoints,
    standin,  # noqa: F811
    tmp_path,
    bits,
):
    expected = rl_from(tmp_path / "original", standin, checkpoints["original"])
    loaded = rl_from(tmp_path / bits, standin, checkpoints[bits])
    expected_state, state = expected.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == expected_state.keys()
    for name, value in expected_state.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
    # the adapter and code-token rows are the checkpoint's (not the fresh ones)
    saved = torch.load(checkpoints[bits], weights_only=True)["state_dict"]
    lora = next(name for name in state if "lora_B" in name)
    assert saved[f"policy.{lora}"].abs().max() > 0
    torch.testing.assert_close(state[lora], saved[f"policy.{lora}"], rtol=0, atol=0)


def evaluation(root: Path, standin: Path, checkpoint: Path, subcommand: str):  # noqa: F811
    """What ``wpauc <subcommand> --ckpt_path=checkpoint`` gives: its metrics (validate,
    test) or its predictions file (predict)."""
    cli = run_cli([subcommand, *lora_args(root, standin), f"--ckpt_path={checkpoint}"])
    if subcommand == "predict":
        return (root / "predictions.jsonl").read_text()
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items()}


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_a_4bit_checkpoint_gives_what_the_original_gives(
    checkpoints,
    standin,  # noqa: F811
    tmp_path,
    subcommand,
):
    expected = evaluation(tmp_path / "original", standin, checkpoints["original"], subcommand)
    assert expected and (subcommand == "predict" or any("hr@10" in name for name in expected))
    assert evaluation(tmp_path / "4bit", standin, checkpoints["4bit"], subcommand) == expected


def test_resuming_from_a_4bit_checkpoint_continues_like_the_original(
    checkpoints,
    standin,  # noqa: F811
    tmp_path,
):
    def resume(root: Path, checkpoint: Path):
        arguments = [*SFT_ONE_EPOCH[:1], "--trainer.max_epochs=2", "--test_after_fit=false"]
        arguments += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
        return run_cli(["fit", *lora_args(root, standin, *arguments), f"--ckpt_path={checkpoint}"])

    expected = resume(tmp_path / "original", checkpoints["original"])
    resumed = resume(tmp_path / "4bit", checkpoints["4bit"])
    assert resumed.trainer.global_step == expected.trainer.global_step == 4
    expected_state, state = expected.model.policy.state_dict(), resumed.model.policy.state_dict()
    for name, value in expected_state.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)


def export(root: Path, standin: Path, checkpoint: Path, *settings: str) -> Path:  # noqa: F811
    """``wpauc export`` of `checkpoint` into ``root/export``; returns the folder."""
    output = root / "export"
    arguments = [f"--ckpt_path={checkpoint}", f"--output_dir={output}"]
    main(["export", *lora_args(root, standin, *settings), *arguments])
    return output


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_export_of_a_quantized_run_on_a_cpu_merges_into_the_full_precision_base(
    checkpoints,
    standin,  # noqa: F811
    tmp_path,
    bits,
):
    # the run's own config (quantization: 4bit or 8bit): no GPU or bitsandbytes is needed
    quantization = f"--model.policy.init_args.quantization={bits}"
    exported = export(tmp_path / bits, standin, checkpoints[bits], quantization)
    expected = export(tmp_path / "original", standin, checkpoints["original"])
    weights, expected_weights = (
        load_file(exported / "model.safetensors"),
        load_file(expected / "model.safetensors"),
    )
    assert weights.keys() == expected_weights.keys()
    assert not any("lora" in name or "absmax" in name or "SCB" in name for name in weights)
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0, msg=name)

    recommender, reference = load_recommender(exported), load_recommender(expected)
    for history in ([0, 1, 2], [5], [7, 3, 11, 20]):
        top = recommender.recommend(history, k=10)
        assert len(set(top)) == 10 and top == reference.recommend(history, k=10)


def with_entry(checkpoint: Path, output: Path, edit) -> Path:
    """A copy of `checkpoint` whose state dict `edit` changed."""
    saved = torch.load(checkpoint, weights_only=True)
    edit(saved["state_dict"])
    torch.save(saved, output)
    return output


LAYER = "policy.base_model.model.model.layers.0.self_attn.q_proj.base_layer"
STRAY = {
    # not quantisation state: a module the policy does not have
    "another module": (f"{LAYER}.extra.weight", torch.zeros(3)),
    # quantisation-state names, but of no weight in the checkpoint
    "a bias's absmax": (f"{LAYER}.bias.absmax", torch.zeros(3)),
    "an orphan SCB": ("policy.base_model.model.model.layers.0.mlp.extra_proj.SCB", torch.ones(3)),
}


@pytest.mark.parametrize("stray", list(STRAY))
def test_any_other_unexpected_key_is_named_by_every_loader(
    checkpoints,
    standin,  # noqa: F811
    tmp_path,
    stray,
):
    name, value = STRAY[stray]
    checkpoint = with_entry(
        checkpoints["4bit"], tmp_path / "stray.ckpt", lambda state: state.update({name: value})
    )
    with pytest.raises(ValueError, match="does not match the configured policy") as error:
        rl_from(tmp_path / "init_from", standin, checkpoint)
    assert name.removeprefix("policy.") in str(error.value)
    with pytest.raises(RuntimeError, match="Unexpected key") as error:
        run_cli(["test", *lora_args(tmp_path / "test", standin), f"--ckpt_path={checkpoint}"])
    assert name in str(error.value)
    with pytest.raises(SystemExit, match="does not match the configured policy") as error:
        export(tmp_path, standin, checkpoint, "--model.policy.init_args.quantization=4bit")
    assert name.removeprefix("policy.") in str(error.value)


def test_a_quantized_layer_of_another_shape_is_refused(checkpoints, standin, tmp_path):  # noqa: F811
    # the same number of elements, so the same packed shape: only the settings tell
    def reshape_q_proj(state):
        settings = f"{LAYER}.weight.quant_state.bitsandbytes__nf4"
        decoded = json.loads(bytes(state[settings].tolist()).decode())
        decoded["shape"] = [16, 64]
        state[settings] = torch.tensor(list(json.dumps(decoded).encode()), dtype=torch.uint8)

    checkpoint = with_entry(checkpoints["4bit"], tmp_path / "other.ckpt", reshape_q_proj)
    with pytest.raises(ValueError, match="does not match the configured policy") as error:
        rl_from(tmp_path, standin, checkpoint)
    message = str(error.value)
    assert "q_proj.base_layer.weight (16, 64) 4-bit in the checkpoint, (32, 32) here" in message


# ---- a policy quantised itself ---------------------------------------------------------------


class FakeLinear4bit(nn.Module):
    """What bitsandbytes' ``Linear4bit`` looks like to ``state_dict`` and ``load_state_dict``:
    a packed uint8 weight, and its quantisation state saved beside it (not loaded back)."""

    def __init__(self, quantized: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.weight = nn.Parameter(quantized[""].clone(), requires_grad=False)
        self.entries = {entry: value for entry, value in quantized.items() if entry}

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for entry, value in self.entries.items():
            destination[f"{prefix}weight.{entry}"] = value


class QuantizedLora(nn.Module):
    """A 4-bit base layer with a trainable adapter."""

    def __init__(self, quantized: dict[str, torch.Tensor], seed: int) -> None:
        super().__init__()
        self.base_layer = FakeLinear4bit(quantized)
        self.lora_A = nn.Linear(32, 4, bias=False)
        with torch.no_grad():
            self.lora_A.weight.copy_(
                torch.randn(4, 32, generator=torch.Generator().manual_seed(seed))
            )


def quantized_base(seed: int) -> dict[str, torch.Tensor]:
    return four_bit_state((16, 32), torch.Generator().manual_seed(seed))


def test_a_quantized_policy_loads_a_quantized_checkpoint_strictly():
    policy, trained = QuantizedLora(quantized_base(0), seed=1), QuantizedLora(quantized_base(0), 2)
    accept_quantized_checkpoints(policy)
    state = trained.state_dict()
    assert "base_layer.weight.quant_state.bitsandbytes__nf4" in state
    packed = policy.base_layer.weight.clone()
    policy.load_state_dict(state)  # strict
    torch.testing.assert_close(policy.lora_A.weight, trained.lora_A.weight, rtol=0, atol=0)
    assert torch.equal(policy.base_layer.weight, packed)
    # inside a module that holds it, as Lightning restores the LightningModule
    holder, trained_holder = nn.ModuleDict({"policy": policy}), nn.ModuleDict({"policy": trained})
    holder.load_state_dict(trained_holder.state_dict())
    # a full-precision checkpoint of the same layers (a bf16 LoRA run's) loads too
    full = {"base_layer.weight": torch.randn(16, 32), "lora_A.weight": trained.lora_A.weight}
    policy.load_state_dict(full)
    assert torch.equal(policy.base_layer.weight, packed)


def test_a_quantized_policy_refuses_a_checkpoint_of_another_base_model():
    policy, other = QuantizedLora(quantized_base(0), seed=1), QuantizedLora(quantized_base(9), 1)
    accept_quantized_checkpoints(policy)
    with pytest.raises(ValueError, match="ckpt_path: its frozen 4-bit base weights are not") as e:
        policy.load_state_dict(other.state_dict())
    assert "trained from another base model" in str(e.value) and "base_layer.weight" in str(e.value)


def test_a_few_codes_another_bitsandbytes_rounds_otherwise_are_not_another_base():
    policy_state = {"layer.weight": torch.zeros(4096, 1, dtype=torch.uint8)}
    quantized = four_bit_state((64, 128), torch.Generator().manual_seed(0))
    policy_state.update({f"layer.weight.{entry}": v for entry, v in quantized.items() if entry})
    state = dict(policy_state, **{"layer.weight": policy_state["layer.weight"].clone()})
    state["layer.weight"][:4] = 1  # 0.1% of the codes
    ready = frozen_base_from_policy(state, policy_state, "x")
    assert list(ready) == ["layer.weight"] and ready["layer.weight"] is policy_state["layer.weight"]
    state["layer.weight"][:5] = 1
    with pytest.raises(ValueError, match="x: its frozen 4-bit base weights are not this"):
        frozen_base_from_policy(state, policy_state, "x")
