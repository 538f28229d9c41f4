"""The RL study's plan and report: every planned run is distinct, the sweep shares its K=10
runs with the main plan, and the tables aggregate seeds as mean ± sample std."""

import json
import statistics

import pytest

from experiments.study import VARIANTS, plan_runs, run_name
from experiments.study_report import (
    README_END,
    README_START,
    main_table,
    mean_std,
    sweep_form,
    sweep_table,
    write_study_report,
)


def test_plans_hold_distinct_runs_and_the_sweep_reuses_the_main_k10_runs():
    main = plan_runs("main", [0, 1], [1e-4])
    assert len(main) == 2 * len(VARIANTS) and len({(n, s) for n, _, _, s in main}) == len(main)
    sweep = plan_runs("sweep", [0], [1e-4])
    names = [name for name, *_ in sweep]
    assert len(names) == len(set(names)) == 8
    shared = {name: objective for name, objective, *_ in sweep if name in VARIANTS}
    assert shared == {name: VARIANTS[name] for name in ("tawin", "tawin_gated")}
    assert names[:4] == [f"sweep_tawin{g}_k{k}" for k in (1, 20) for g in ("", "_gated")]


def fake_result(name, objective, seed, hr1):
    test = {"hr@1": hr1, "hr@3": 0.1, "hr@10": 0.3, "hr@20": 0.5, "ndcg@10": 0.2, "auc": 0.9}
    curves = {"val/hr@1": [[100, hr1]], "val/ndcg@10": [[100, 0.2]]}
    return {
        "dataset": "toy",
        "name": name,
        "objective": objective,
        "lr": 1e-4,
        "seed": seed,
        "test": test,
        "curves": curves,
    }


def test_report_tables_aggregate_seeds(tmp_path):
    for name, objective, _, seed in plan_runs("sweep", [0, 1], [1e-4]):
        run_dir = tmp_path / "toy" / f"{name}_seed{seed}"
        run_dir.mkdir(parents=True)
        hr1 = 0.05 + 0.01 * seed + (0.02 if objective["init_args"]["target_k"] == 1 else 0)
        (run_dir / "result.json").write_text(json.dumps(fake_result(name, objective, seed, hr1)))
    (tmp_path / "toy" / "sft_start.json").write_text(json.dumps({"test/hr@1": 0.06}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\noutro\n")
    report = write_study_report(tmp_path, readme).read_text()
    spliced = readme.read_text()
    assert spliced.startswith("intro\n") and spliced.endswith("outro\n")
    assert "old table" not in spliced and "| 1 | **0.0750" in spliced
    assert "| 1 | **0.0750 ± 0.0071 (2)** |" in report  # K=1: hr@1 0.07 and 0.08
    assert "| 20 | 0.0550 ± 0.0071 (2) |" in report
    assert (tmp_path / "toy_curves.png").exists()
    assert "toy_sweep_curves.png" in spliced and (tmp_path / "toy_sweep_curves.png").exists()


def test_mean_std_is_the_sample_std_and_sweep_runs_are_recognised():
    values = [0.1, 0.3, 0.2]
    assert mean_std(values) == pytest.approx((0.2, statistics.stdev(values)))
    assert sweep_form({"objective": VARIANTS["tawin_gated"]})[1] == 10
    assert sweep_form({"objective": VARIANTS["tawin_logistic"]}) is None
    assert sweep_form({"objective": None}) is None


def test_a_kl_anchored_run_has_its_own_folder_and_table_row():
    assert run_name("tawin_gated", 1e-4, 0.0, 2) == "tawin_gated_lr0.0001_seed2"
    assert run_name("tawin_gated", 1e-4, 0.04, 2) == "tawin_gated_lr0.0001_beta0.04_seed2"
    runs = [
        {**fake_result("tawin_gated", VARIANTS["tawin_gated"], 0, 0.07), "beta": beta}
        for beta in (0.0, 0.04)
    ]
    rows = [line for line in main_table("toy", runs, {}) if line.startswith("| tawin_gated")]
    assert [row.split(" | ")[2] for row in rows] == ["0", "0.04"]


def test_a_kl_anchored_sweep_has_its_own_table():
    runs = [
        {**fake_result(name, objective, 0, 0.07), "beta": beta}
        for name, objective, *_ in plan_runs("sweep", [0], [1e-4])
        for beta in (0.0, 0.04)
    ]
    titles = [line for line in sweep_table("toy", runs, {}) if line.startswith("####")]
    assert len(titles) == 4  # original and gated, each unanchored and anchored
    assert sum("KL weight 0.04" in title for title in titles) == 2
