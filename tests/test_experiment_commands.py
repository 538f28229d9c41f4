"""The recipe search and the base-model table: every recipe is a valid `wpauc fit` command
line, and the table aggregates seeds as mean ± sample std."""

import statistics
import types

import pytest
import torch

from experiments.base_models import table
from experiments.runs import train_and_test
from experiments.sft_recipes import RECIPES, SHIPPED_RECIPE
from wpauc.cli import run_cli
from wpauc.schedules import WarmupCosine


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_parses_on_the_synthetic_config(name):
    cli = run_cli(["--config=configs/synthetic/sft.yaml", *RECIPES[name]], run=False)
    policy = cli.model.policy_builder
    assert policy.hidden_size == (128 if "w128" in name else 64)
    assert policy.num_layers == (4 if "_l4" in name else 2)
    has_schedule = cli.model.scheduler_factory is not None
    assert has_schedule == ("cosine" in name)
    if has_schedule:
        optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(cli.model.scheduler_factory(optimizer), WarmupCosine)


COLUMNS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "auc")


def test_base_model_table_shows_mean_and_sample_std():
    runs = [{column: value for column in COLUMNS} for value in (0.1, 0.2, 0.4)]
    lines = table("toy", {"SASRec": runs, "popularity": runs[:1]}, refit=False)
    assert lines[0].startswith("#### toy: fitted on train,")
    sasrec = next(line for line in lines if line.startswith("| SASRec | 3 |"))
    mean, std = statistics.mean([0.1, 0.2, 0.4]), statistics.stdev([0.1, 0.2, 0.4])
    assert f"{mean:.4f} ± {std:.4f}" in sasrec
    assert "| popularity | 1 | 0.1000 |" in "\n".join(lines)
    # the columns are the keys the runs hold; a row without one of them has a dash there
    assert lines[2] == "| model | seeds | " + " | ".join(c.upper() for c in COLUMNS) + " |"
    without_auc = [{column: 0.1 for column in COLUMNS if column != "auc"}]
    row = table("toy", {"SASRec": runs, "SFT": without_auc}, refit=False)[-2]
    assert row.endswith("| 0.1000 | – |")


@pytest.mark.parametrize("dataset", ["office", "industrial"])
def test_the_shipped_sft_configs_are_the_chosen_recipe(dataset):
    config = f"--config=configs/{dataset}/sft.yaml"
    shipped = run_cli([config], run=False).config.as_dict()
    chosen = run_cli([config, *RECIPES[SHIPPED_RECIPE]], run=False).config.as_dict()
    assert shipped == chosen


def test_a_finished_fit_is_tested_again_without_refitting(tmp_path, monkeypatch):
    """`train_and_test` fits once (leaving `fit.json`); with the test metrics gone, a rerun
    only tests the best checkpoint."""
    calls = []

    def fake_run_cli(args, run=True):
        calls.append(args[0])
        if args[0] == "fit":
            (tmp_path / "checkpoints").mkdir()
            (tmp_path / "checkpoints" / "best.ckpt").write_text("weights")
        trainer = types.SimpleNamespace(callback_metrics={"test/hr@10": 0.25, "val/hr@10": 0.5})
        return types.SimpleNamespace(trainer=trainer)

    monkeypatch.setattr("wpauc.cli.run_cli", fake_run_cli)
    first = train_and_test(tmp_path / "sft.yaml", tmp_path, 0, [], [])
    assert calls == ["fit", "test"] and first["hr@10"] == 0.25 and "val/hr@10" not in first
    (tmp_path / "test_metrics.json").unlink()
    again = train_and_test(tmp_path / "sft.yaml", tmp_path, 0, [], [])
    assert calls == ["fit", "test", "test"] and again == first
