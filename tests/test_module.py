"""The LightningModule and the CLI on a tiny synthetic world: SFT then RL end to end, what
reaches TensorBoard, validation metrics against an independent oracle, exact mid-epoch
resume, and clear errors for non-finite losses and bad objective settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.helpers.runs import final_weights, read_events, tiny_args
from wpauc.cli import run_cli
from wpauc.decoding import constrained_beam_search, score_items
from wpauc.metrics import RankingMetrics
from wpauc.module import RecommenderModule
from wpauc.objectives import PolicyLoss, TAWinWPAUC


def test_sft_then_rl_logs_losses_rollout_stats_metrics_histogram_and_figure(tmp_path):
    cli = run_cli(
        tiny_args(
            tmp_path,
            "--trainer.max_epochs=2",
            "--model.sft_epochs=1",
            "--trainer.limit_train_batches=3",
            "--model.loss.beta=0.04",
            "--model.loss.num_iterations=2",
        )
    )
    events = read_events(tmp_path)
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "train/sft_loss",
        "train/rl_loss",
        "train/kl",
        "train/clip_ratio",
        "train/surrogate",
        "train/grad_norm",
        "train/zero_advantage_groups",
        "train/positive_abs_advantage",
        "train/negative_abs_advantage",
        "train/positive_in_beam",
        "val/hr@10",
        "val/ndcg@10",
        "val/auc",
        "val/wpauc@[0,0.1]",
        "val/entropy",
        "val/top1_prob",
        "val/kl_to_oracle",
        "val/oracle_rank_corr",
        "test/hr@1",
        "test/ndcg@20",
        "test/wpauc@[0.05,0.15]",
    ):
        assert tag in scalars, tag
    assert "val/positive_rank" in events.Tags()["histograms"]
    assert "train/positive_rank_in_rollout" in events.Tags()["histograms"]
    assert "val/metrics_at_k" in events.Tags()["images"]
    assert cli.trainer.global_step == 9  # 3 SFT steps, then 3 RL steps of 2 updates each
    # the last RL step's record, as the callbacks read it: the loss's own advantages, and
    # the log-probs of rollout time (2 updates per rollout, a KL term)
    rollout = cli.model.last_rollout
    torch.testing.assert_close(rollout.advantages, cli.model.loss.advantages(rollout.group))
    assert rollout.old_logp is not None and rollout.ref_logp is not None


@pytest.mark.parametrize(
    ("with_objective", "sft_epochs", "stages"),
    [
        (False, 2, [("SFTStage", 0)]),  # no objective: every epoch is SFT
        (True, 0, [("RLStage", 0)]),
        (True, 2, [("SFTStage", 0), ("RLStage", 2)]),
    ],
)
def test_the_stages_of_a_run_follow_the_objective_and_sft_epochs(
    with_objective, sft_epochs, stages
):
    objective = TAWinWPAUC(target_k=3, window_width=3) if with_objective else None
    module = RecommenderModule(objective=objective, sft_epochs=sft_epochs)
    assert [(type(stage).__name__, stage.first_epoch) for stage in module.stages] == stages


def test_rl_logs_no_scalar_that_is_constant_by_construction(tmp_path):
    # One update per rollout and beta = 0: the ratio is 1 (no clipping, pg_loss 0 in value)
    # and there is no KL, so none of them may be logged.
    run_cli(
        tiny_args(
            tmp_path,
            "--trainer.max_epochs=1",
            "--model.sft_epochs=0",
            "--model.loss.beta=0",
            "--test_after_fit=false",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
        )
    )
    scalars = set(read_events(tmp_path).Tags()["scalars"])
    assert "train/surrogate" in scalars and "train/grad_norm" in scalars
    for constant in (
        "train/rl_loss",
        "train/pg_loss",
        "train/kl",
        "train/clip_ratio",
        "train/ratio_mean",
    ):
        assert constant not in scalars, constant


def brute_force_scores(policy, batch, item_codes) -> torch.Tensor:
    """[B, N] item scores by teacher forcing each item separately (no trie, no cache)."""
    rows = []
    for prompt, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        prompt = prompt[mask.bool()]
        row = []
        for code in item_codes:
            ids = torch.cat([prompt, torch.tensor(code)])[None]
            logits = policy(input_ids=ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
            row.append(logits.gather(-1, torch.tensor(code)[:, None]).sum())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_validation_auc_and_hit_rate_match_sklearn_on_brute_force_scores(tmp_path):
    cli = run_cli(
        tiny_args(
            tmp_path,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--test_after_fit=false",
        )
    )
    module, datamodule = cli.model, cli.datamodule
    results = cli.trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    policy = module.policy.eval()
    aucs, hits = [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            scores = brute_force_scores(policy, batch, datamodule.item_codes).numpy()
            for row, target in zip(scores, batch["target"].tolist(), strict=True):
                labels = np.zeros(len(row))
                labels[target] = 1
                aucs.append(roc_auc_score(labels, row))
                hits.append(float((np.delete(row, target) >= row[target]).sum() < 10))
    assert results["val/auc"] == pytest.approx(np.mean(aucs), abs=1e-5)
    assert results["val/hr@10"] == pytest.approx(np.mean(hits), abs=1e-6)


BEAM = ["--model.evaluation=wpauc.evaluation.Beam", "--model.evaluation.num_beams=20"]


def test_beam_protocol_reports_only_hit_rate_and_ndcg(tmp_path):
    cli = run_cli(
        tiny_args(tmp_path, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", *BEAM)
    )
    logged = cli.trainer.callback_metrics
    assert "test/hr@10" in logged and "test/auc" not in logged
    assert not any("wpauc" in key for key in logged)


def test_rank_cap_logs_exact_hit_rate_and_ndcg_and_no_auc(tmp_path):
    """With model.evaluation.rank_cap the HR@K and NDCG@K logged are those of the full score
    table; AUC and WPAUC are not logged."""
    cli = run_cli(
        tiny_args(
            tmp_path,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--test_after_fit=false",
            "--model.evaluation.rank_cap=20",
        )
    )
    module, datamodule = cli.model, cli.datamodule
    results = cli.trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert not any("auc" in key for key in results)  # nor wpauc@...
    ranks = torch.cat(module.evaluation_ranks)
    assert ranks.eq(20).any() and ranks.lt(20).any() and ranks.le(20).all()
    oracle = RankingMetrics([s for s in module.val_metrics.specs if s.cutoff], prefix="val/")
    for batch in datamodule.val_dataloader():
        scores = score_items(
            module.policy, batch["input_ids"], batch["attention_mask"], module.trie
        )
        oracle.update(scores, batch["target"])
    expected = {key: float(value) for key, value in oracle.compute().items()}
    assert {key for key in results if "@" in key} == set(expected)
    assert {f"val/{name}@{k}" for name in ("hr", "ndcg") for k in (1, 3, 5, 10, 20)} == set(
        expected
    )
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-6), key


def test_evaluation_flags_of_a_test_command_win_over_the_checkpoint(tmp_path):
    """A run fitted with the rank cap tests with full counts unless the test command sets the
    cap: a checkpoint's saved hyper-parameters do not override the command line."""
    fit = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    capped_flag = "--model.evaluation.rank_cap=20"
    run_cli(tiny_args(tmp_path, *fit, "--test_after_fit=false", capped_flag))
    best = f"--ckpt_path={tmp_path / 'checkpoints' / 'best.ckpt'}"
    full = run_cli(tiny_args(tmp_path, best, subcommand="test"))
    assert "test/auc" in full.trainer.callback_metrics
    capped = run_cli(tiny_args(tmp_path, best, capped_flag, subcommand="test"))
    assert "test/hr@10" in capped.trainer.callback_metrics
    assert "test/auc" not in capped.trainer.callback_metrics


def test_rank_cap_is_refused_under_the_beam_protocol(tmp_path, capsys):
    # Beam has no rank_cap (its beams are its cap): the parser refuses the key
    with pytest.raises(SystemExit):
        run_cli(tiny_args(tmp_path, *BEAM, "--model.evaluation.rank_cap=20"))
    assert "rank_cap" in capsys.readouterr().err


def test_rl_resumes_mid_epoch_exactly_like_the_uninterrupted_run(tmp_path):
    rl = [
        "--model.sft_epochs=0",
        # random negatives: the generator must resume too
        "--model.objective=wpauc.objectives.GRPOAUC",
        "--model.objective.init_args.num_negatives=4",
        "--model.loss.beta=0.04",
        "--model.loss.num_iterations=2",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=1",
        "--test_after_fit=false",
    ]
    checkpoint_every_step = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.filename={step}",
        "--trainer.callbacks.monitor=null",
    ]
    straight = run_cli(tiny_args(tmp_path / "straight", *rl, *checkpoint_every_step))
    # Two optimizer steps per batch (num_iterations=2): step 10 is epoch 1 after batch 1 of 4.
    mid_epoch = next((tmp_path / "straight").rglob("step=10.ckpt"))
    resumed = run_cli(tiny_args(tmp_path / "resumed", *rl, f"--ckpt_path={mid_epoch}"))
    assert resumed.trainer.global_step == straight.trainer.global_step == 16
    expected, actual = final_weights(straight), final_weights(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_non_finite_loss_names_the_step_and_the_term(tmp_path, monkeypatch):
    real_loss = PolicyLoss.__call__

    def poisoned(self, *args, **kwargs):
        loss, stats = real_loss(self, *args, **kwargs)
        return loss, {**stats, "kl": torch.tensor(float("nan"))}

    monkeypatch.setattr(PolicyLoss, "__call__", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite rl/kl .* global step 0"):
        run_cli(tiny_args(tmp_path, "--model.sft_epochs=0", "--trainer.max_epochs=1"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("--model.objective.init_args.target_k=0", "target_k"),
        ("--model.loss.epsilon=1.5", "epsilon"),
        ("--model.evaluation=wpauc.evaluation.Sampled", "evaluation"),
        ("--model.evaluation.rank_cap=10", "rank_cap"),  # below the metrics' K = 20
        ("--model.evaluation.rank_cap=0", "rank_cap"),
        ("--model.evaluation.num_beams=0", "num_beams"),
        # 10 beams cannot rank K = 20
        (
            '--model.evaluation={"class_path": "wpauc.evaluation.Beam", "init_args":'
            ' {"num_beams": 10}}',
            "num_beams",
        ),
    ],
)
def test_invalid_settings_fail_at_config_time_naming_the_key(tmp_path, capsys, override, key):
    # The CLI raises (instantiation) or prints the parse error and exits; both name the key.
    with pytest.raises((ValueError, SystemExit)) as error:
        run_cli(tiny_args(tmp_path, override, "--trainer.max_epochs=1"))
    assert key in str(error.value) + capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("--model.objective.init_args.target_k=64", "target_k"),  # 63 negatives
        ("--model.objective.init_args.window_width=62", "window_width"),  # ranks [2, 64) > 63
    ],
)
def test_settings_that_do_not_fit_the_catalog_fail_before_training(tmp_path, override, key):
    with pytest.raises(ValueError, match=rf"model.objective: TAWinWPAUC: {key}") as error:
        run_cli(tiny_args(tmp_path, override, "--trainer.max_epochs=1"))
    assert error.traceback[-1].name != "training_step"


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("--model.metrics=[hr@0, ndcg@5]", "metric 'hr@0': k must be"),
        ('--model.metrics=["wpauc@[0.5,1.1]"]', r"metric 'wpauc@\[0.5,1.1\]': alpha \+ d"),
        ("--model.metrics=[hr@5, nonsense@5]", "unknown metric 'nonsense@5': the metric families"),
        ("--model.metrics=[hr@5, hr@5]", r"metrics repeat \['hr@5'\]"),
    ],
)
def test_bad_evaluation_metrics_name_the_key_before_training(tmp_path, override, problem):
    with pytest.raises(ValueError, match=rf"model.metrics: {problem}") as error:
        run_cli(tiny_args(tmp_path, override, "--trainer.max_epochs=1"))
    assert error.traceback[-1].name != "training_step"


def built_module(tmp_path: Path, *extra: str):
    """The module of the tiny world's config, built (policy, trie, metrics), not run."""
    cli = run_cli(tiny_args(tmp_path, *extra)[1:], run=False)
    cli.model.build(cli.datamodule.catalog_context())
    return cli.model


def test_metrics_are_the_configured_keys_then_the_objective_window_once(tmp_path):
    # TAWin aimed at K = 3 with width 3 on 63 negatives: the window [2/63, 5/63)
    window = '"wpauc@[0.031746031746031744,0.07936507936507936]"'
    expected = ("val/ndcg@5", "val/hr@5", "val/auc", "val/wpauc@[0.031746,0.0793651]")
    for metrics in ("[ndcg@5, hr@5, auc]", f"[ndcg@5, hr@5, auc, {window}]"):
        module = built_module(tmp_path, f"--model.metrics={metrics}")
        assert module.val_metrics.names == expected
        assert module.test_metrics.names == tuple(n.replace("val/", "test/") for n in expected)
    # [16/63, 33/63): written out, its width differs from 17/63 in the last bit, its key not
    aimed_at_17 = [
        "--model.objective.init_args.target_k=17",
        "--model.objective.init_args.window_width=17",
        '--model.metrics=[hr@5, "wpauc@[0.25396825396825395,0.5238095238095237]"]',
    ]
    module = built_module(tmp_path, *aimed_at_17)
    assert module.val_metrics.names == ("val/hr@5", "val/wpauc@[0.253968,0.52381]")
    capped = built_module(
        tmp_path, "--model.evaluation.rank_cap=5", "--model.metrics=[ndcg@5, hr@5, auc]"
    )
    assert capped.val_metrics.names == ("val/ndcg@5", "val/hr@5")
    assert capped.val_metrics.at_k() == {"ndcg": [(5, "val/ndcg@5")], "hr": [(5, "val/hr@5")]}


def test_predict_writes_top_items_per_test_sample(tmp_path):
    output = tmp_path / "predictions.jsonl"
    cli = run_cli(
        tiny_args(
            tmp_path,
            f"--trainer.callbacks.output_path={output}",  # the config's last callback
            "--model.evaluation.num_beams=20",
            subcommand="predict",
        )
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    datamodule = cli.datamodule
    assert len(records) == len(datamodule.dataset("test"))
    first = records[0]
    assert len(first["item_ids"]) == 20 and first["scores"] == sorted(first["scores"], reverse=True)
    batch = datamodule.batch_for([datamodule.data.test[first["sample_index"]]])
    items, _ = constrained_beam_search(
        cli.model.policy, batch["input_ids"], batch["attention_mask"], cli.model.trie, 20
    )
    assert first["item_ids"] == [datamodule.catalog.item_ids[i] for i in items[0].tolist()]


def test_model_and_data_seeds_can_differ(tmp_path):
    """Lightning merges the module's and data module's hparams: no key may clash."""
    run_cli(
        tiny_args(
            tmp_path,
            "--model.rollout_seed=1",
            "--data.seed=2",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--test_after_fit=false",
        )
    )


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_init_from_loads_weights_only_and_never_runs_a_pickled_payload(tmp_path):
    marker = tmp_path / "payload_ran"
    checkpoint = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, checkpoint)
    with pytest.raises(ValueError, match="model.init_from: .* holds pickled objects"):
        run_cli(tiny_args(tmp_path, f"--model.init_from={checkpoint}", "--trainer.max_epochs=1"))
    assert not marker.exists()
