"""Training semantics on tiny runs: the KL reference under LoRA is the SFT start point (RL
after SFT in the same run, and RL from an SFT checkpoint), the RL stage starts once per run
so that a resume in its first epoch is exact, learning-rate and epoch settings that would be
ignored fail or warn naming their keys, ``init_from`` names a different architecture, and
checkpoints record their catalog and refuse to be used with another one."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import ReferenceProbe, final_weights, fit_with_probe, lora_args, tiny_args
from wpauc.cli import run_cli
from wpauc.module import RecommenderModule
from wpauc.objectives import TAWinWPAUC
from wpauc.schedules import WarmupCosine

# ---- item 7: the KL reference under LoRA is the SFT start point ----------------------------


def test_lora_reference_after_sft_in_the_same_run_is_the_sft_policy(tmp_path, standin):
    _, probe = fit_with_probe(
        lora_args(tmp_path, standin, "--model.sft_epochs=1", "--trainer.max_epochs=2")
    )
    logits = probe.logits
    # SFT moved the policy away from the base model; the reference is where SFT ended
    assert (logits["sft_end"] - logits["base"]).abs().max() > 1e-2
    torch.testing.assert_close(logits["reference"], logits["sft_end"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits["policy"], logits["sft_end"], rtol=1e-5, atol=1e-5)


def test_lora_reference_of_rl_from_an_sft_checkpoint_is_the_sft_policy(tmp_path, standin):
    sft = run_cli(
        [
            "fit",
            *lora_args(tmp_path / "sft", standin, "--model.objective=null"),
            "--trainer.max_epochs=1",
            "--test_after_fit=false",
        ]
    )
    sft_policy = sft.model.policy.eval()
    last = tmp_path / "sft" / "checkpoints" / "last.ckpt"
    _, probe = fit_with_probe(
        lora_args(
            tmp_path / "rl",
            standin,
            f"--model.init_from={last}",
            "--model.sft_epochs=0",
            "--trainer.max_epochs=1",
        )
    )
    logits = probe.logits
    expected = ReferenceProbe._logits(sft.trainer, sft_policy)
    assert (expected - logits["base"]).abs().max() > 1e-2
    torch.testing.assert_close(logits["reference"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits["policy"], expected, rtol=1e-5, atol=1e-5)


def test_lora_sft_then_rl_resumes_in_the_first_rl_epoch_exactly(tmp_path, standin):
    # RL starts at epoch 1 with the reference snapshot of the SFT adapter; a resume from step 6
    # (epoch 1, after batch 2 of 4) rebuilds a fresh adapter, so the snapshot must come back
    # from the checkpoint.
    def fit(root: Path, *extra: str):
        settings = ["--model.sft_epochs=1", "--trainer.max_epochs=2"]
        batches = ["--trainer.limit_train_batches=4", "--test_after_fit=false"]
        return run_cli(["fit", *lora_args(root, standin, *settings, *batches, *extra)])

    straight = fit(
        tmp_path / "straight",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.filename={step}",
        "--trainer.callbacks.monitor=null",
    )
    in_first_rl_epoch = next((tmp_path / "straight").rglob("step=6.ckpt"))
    snapshot = torch.load(in_first_rl_epoch, weights_only=True)["reference_state_dict"]
    assert snapshot and all("lora_" in name or "trainable_tokens" in name for name in snapshot)
    resumed = fit(tmp_path / "resumed", f"--ckpt_path={in_first_rl_epoch}")
    assert resumed.trainer.global_step == straight.trainer.global_step == 8
    expected, actual = final_weights(straight), final_weights(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


# ---- item 8: settings that would be ignored ------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, -1e-4])
def test_rl_learning_rate_must_be_positive(rate):
    with pytest.raises(ValueError, match="model.rl_learning_rate must be > 0"):
        RecommenderModule(objective=TAWinWPAUC(target_k=3, window_width=3), rl_learning_rate=rate)


def test_rl_learning_rate_with_a_scheduler_names_both_keys():
    def scheduler(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)

    with pytest.raises(ValueError, match="model.rl_learning_rate .* model.scheduler"):
        RecommenderModule(
            objective=TAWinWPAUC(target_k=3, window_width=3),
            rl_learning_rate=1e-4,
            scheduler=scheduler,
        )
    # without an objective there is no RL stage, so nothing to combine
    RecommenderModule(rl_learning_rate=1e-4, scheduler=scheduler)


def test_rl_learning_rate_applies_to_an_rl_only_run(tmp_path):
    cli = run_cli(
        tiny_args(
            tmp_path,
            "--model.sft_epochs=0",
            "--model.rl_learning_rate=2.5e-4",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--test_after_fit=false",
        )
    )
    assert [group["lr"] for group in cli.trainer.optimizers[0].param_groups] == [2.5e-4]


def test_warmup_cosine_rises_linearly_then_decays_to_its_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, warmup_steps=3, total_steps=7, min_lr_ratio=0.1)
    rates = []
    for _ in range(9):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [0.25, 0.5, 0.75] + [
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)
    ]
    assert rates == pytest.approx(expected + [0.1])
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(optimizer, warmup_steps=5, total_steps=5)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(optimizer, warmup_steps=5).set_total_steps(3)


def test_warmup_cosine_without_total_steps_spans_the_run(tmp_path):
    cli = run_cli(
        tiny_args(
            tmp_path,
            "--model.objective=null",
            "--model.scheduler=wpauc.schedules.WarmupCosine",
            "--model.scheduler.warmup_steps=1",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--test_after_fit=false",
        )
    )
    schedule = cli.trainer.lr_scheduler_configs[0].scheduler
    assert schedule.total_steps == 4 and schedule.last_epoch == 4
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0)


def test_sft_epochs_covering_every_epoch_warns_that_rl_never_runs(tmp_path):
    with pytest.warns(UserWarning, match=r"model.sft_epochs=4 >= trainer.max_epochs=1"):
        run_cli(
            tiny_args(
                tmp_path,
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1",
                "--test_after_fit=false",
            )
        )


def test_lightning_optimizer_flag_is_not_offered(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--model.optimizer" in help_text
    assert "--optimizer " not in help_text and "--lr_scheduler " not in help_text
    with pytest.raises(SystemExit):
        run_cli(tiny_args(tmp_path, "--optimizer=torch.optim.Adam", "--trainer.max_epochs=1"))
    assert "unrecognized arguments: --optimizer" in capsys.readouterr().err


def sft_checkpoint(root: Path, *extra: str) -> Path:
    """The last.ckpt of a one-step SFT run of the tiny world."""
    run_cli(
        tiny_args(
            root,
            "--model.objective=null",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--test_after_fit=false",
            *extra,
        )
    )
    return root / "checkpoints" / "last.ckpt"


def test_init_from_with_another_hidden_size_names_the_key_and_the_shapes(tmp_path):
    checkpoint = sft_checkpoint(tmp_path / "sft")
    with pytest.raises(ValueError) as error:
        run_cli(
            tiny_args(
                tmp_path / "rl",
                f"--model.init_from={checkpoint}",
                "--model.policy.init_args.hidden_size=48",
                "--trainer.max_epochs=1",
            )
        )
    message = str(error.value)
    assert message.startswith(f"model.init_from: {checkpoint} does not match the configured")
    assert "model.policy" in message
    assert re.search(r"\(\d+, 32\) in the checkpoint, \(\d+, 48\) here", message)
    assert len(message) < 1000


# ---- item 10: checkpoints record their catalog ---------------------------------------------


def test_checkpoint_records_the_catalog_and_init_from_refuses_another(tmp_path):
    checkpoint = sft_checkpoint(tmp_path / "sft")
    record = torch.load(checkpoint, weights_only=True)["wpauc_catalog"]
    assert record["num_items"] == 64 and len(record["fingerprint"]) == 64
    assert "SyntheticSource(num_items=64" in record["description"]
    with pytest.raises(ValueError) as error:
        run_cli(
            tiny_args(
                tmp_path / "rl",
                f"--model.init_from={checkpoint}",
                "--data.source.init_args.num_items=60",
                "--trainer.max_epochs=1",
            )
        )
    message = str(error.value)
    assert message.startswith(f"model.init_from: {checkpoint} was trained on another catalog")
    assert f"it records {record['fingerprint'][:12]} (64 items" in message
    assert "this run's data gives" in message and "(60 items" in message


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_evaluating_a_checkpoint_on_another_catalog_is_refused(tmp_path, subcommand):
    checkpoint = sft_checkpoint(tmp_path / "sft")
    with pytest.raises(ValueError, match=r"ckpt_path was trained on another catalog.*\(60 items"):
        run_cli(
            tiny_args(
                tmp_path / "eval",
                f"--ckpt_path={checkpoint}",
                "--data.source.init_args.num_items=60",
                subcommand=subcommand,
            )
        )
