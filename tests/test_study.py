"""The RL study's plan, command lines and report: every planned run is distinct, the sweeps
share their common windows, the control runs the SFT recipe, finished runs are committed,
and the report's headline and sweep tables come from the saved counts."""

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from experiments.study import (
    CONTROL,
    VARIANTS,
    cli_args,
    commit,
    plan_runs,
    run_name,
)
from experiments.study_report import README_END, README_START, write_study_report


def test_plans_hold_distinct_runs_and_the_sweeps_share_their_common_windows():
    main = plan_runs("main", [0, 1], [1e-4])
    assert len(main) == 2 * len(VARIANTS) and len({(n, s) for n, _, _, s in main}) == len(main)
    sweep = plan_runs("sweep", [0], [1e-4])
    names = [name for name, *_ in sweep]
    assert len(names) == len(set(names)) == 8
    shared = {name: objective for name, objective, *_ in sweep if name in VARIANTS}
    assert shared == {name: VARIANTS[name] for name in ("tawin", "tawin_gated")}
    assert names[:4] == [f"sweep_tawin{g}_k{k}" for k in (1, 20) for g in ("", "_gated")]
    width_one = {name: objective for name, objective, *_ in plan_runs("sweep1", [0], [1e-4])}
    assert all(o["init_args"]["window_width"] == 1 for o in width_one.values())
    # aimed at K = 1 the width-1 window is the width-K one: the same run name, run once
    assert (
        width_one["sweep_tawin_gated_k1"]
        == dict(zip(names, [o for _, o, *_ in sweep], strict=True))["sweep_tawin_gated_k1"]
    )
    assert "sweep1_tawin_gated_k20" in width_one


def test_the_logistic_variant_states_the_gate_it_ran_with():
    """The first study's tawin_logistic omitted `gate` and inherited gate: beam."""
    assert VARIANTS["tawin_logistic"]["init_args"]["gate"] == "beam"


def test_run_names_carry_the_sft_start_and_the_kl_weight():
    assert run_name("tawin_gated", 1e-4, 0.0, 2) == "tawin_gated_lr0.0001_seed2"
    assert run_name("tawin_gated", 1e-4, 0.04, 2, 1) == "tawin_gated_lr0.0001_beta0.04_sft1_seed2"


def test_the_control_runs_the_sft_recipe_at_the_rl_rate():
    args = argparse.Namespace(beta=0.04, steps=600, val_every=100, val_rank_cap=None)
    control = cli_args("office", Path("/r"), CONTROL, None, 3e-4, 1, Path("/s.pt"), args)
    assert control[0].endswith("configs/office/sft.yaml")
    assert not any(a.startswith("--model.objective") for a in control)
    assert "--model.loss.beta=0.0" in control and "--model.optimizer.init_args.lr=0.0003" in control
    rl = cli_args(
        "office", Path("/r"), "tawin_gated", VARIANTS["tawin_gated"], 3e-4, 1, Path("/s.pt"), args
    )
    assert rl[0].endswith("configs/office/rl.yaml") and "--model.loss.beta=0.04" in rl


def test_commit_commits_only_the_run_folder(tmp_path):
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "config", "user.email", "t@t"], check=True)
    subprocess.run([*git, "config", "user.name", "t"], check=True)
    (tmp_path / "other.txt").write_text("someone else's work")
    run = tmp_path / "results" / "run"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{}")
    commit(run, "results: toy")
    files = subprocess.run([*git, "ls-files"], capture_output=True, text=True).stdout.split()
    assert files == ["results/run/result.json"]


def write_counts(path: Path, ge: list[int], expected: list[float] | None = None) -> None:
    arrays = {"num_negatives": 100, "sample_index": np.arange(len(ge)), "gt": ge, "ge": ge}
    if expected is not None:
        arrays |= {"oracle_ks": np.array([1, 3, 10, 20]), "expected_hr": np.array([expected] * 4).T}
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})


def toy_study(tmp_path: Path) -> Path:
    """Two starts x two RL seeds of the synthetic headline (control and gated TAWin), and a
    width-K sweep from start 0; RL moves every user from rank 3 to rank 0 (HR@1 +1)."""
    out = tmp_path / "study"
    base = [3, 3, 3, 3]
    for sft_seed in (0, 1):
        folder = out / "synthetic" / f"sft_seed{sft_seed}"
        folder.mkdir(parents=True)
        write_counts(folder / "test_ranks.npz", base, [0.1] * 4)
        val = {str(s): {"val/ndcg@10": 0.10} for s in (0, 1)}
        record = {"dataset": "synthetic", "sft_seed": sft_seed, "val_by_data_seed": val}
        (folder / "result.json").write_text(json.dumps(record | {"test": {"hr@1": 0.0}}))
        for seed in (0, 1):
            for name, lr, beta, objective, ge in (
                (CONTROL, 3e-4, 0.0, None, base),
                ("tawin_gated", 3e-4, 0.04, VARIANTS["tawin_gated"], [0, 0, 0, 0]),
                ("sweep_tawin_gated_k1", 3e-4, 0.04, sweep(1), [0, 0, 0, 30]),
            ):
                if name.startswith("sweep") and sft_seed == 1:
                    continue
                run = out / "synthetic" / run_name(name, lr, beta, seed, sft_seed)
                run.mkdir()
                write_counts(run / "test_ranks.npz", ge, [0.2] * 4)
                test = {f"hr@{k}": float(np.mean(np.array(ge) < k)) for k in (1, 3, 10, 20)}
                result = {
                    "dataset": "synthetic",
                    "name": name,
                    "objective": objective,
                    "lr": lr,
                    "beta": beta,
                    "seed": seed,
                    "sft_seed": sft_seed,
                    "test": test | {"ndcg@10": 0.3, "auc": 0.9},
                    "curves": {"val/ndcg@10": [[99, 0.2 if name != CONTROL else 0.05]]},
                }
                (run / "result.json").write_text(json.dumps(result))
    return out


def sweep(k: int) -> dict:
    return {
        "class_path": VARIANTS["tawin"]["class_path"],
        "init_args": {"target_k": k, "window_width": k, "gate": "beam"},
    }


def test_the_report_writes_the_headline_with_paired_intervals(tmp_path):
    out = toy_study(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\noutro\n")
    text = write_study_report(out, readme).read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "\nold\n" not in text
    # the control never beats its start on valid (0.05 < 0.10): step 0, the start's test
    control = next(line for line in text.splitlines() if line.startswith(f"| {CONTROL} lr 0.0003"))
    assert "| 4 | 0.0000 ± 0.0000 (4) |" in control
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| RL - ")}
    # every user gains HR@1 in every RL run: +1 in every resample; HR@10 does not move
    assert (
        "| +1.0000 [+1.0000, +1.0000] | +0.0000 [+0.0000, +0.0000] n.d. |" in rows["| RL - start"]
    )
    assert "+0.1000 [+0.1000, +0.1000]" in rows["| RL - start"]  # expected HR@1: 0.2 - 0.1
    control_row = next(line for line in text.splitlines() if line.startswith("| control - start"))
    assert "+0.0000 [+0.0000, +0.0000] n.d." in control_row
    assert "#### synthetic: TAWin gated, lr 0.0003, β 0.04, window [K-1, 2K-1)" in text
    # aimed at 1 loses user 3 from the top (rank 30): HR@1 0.75 against 1 aimed at 10
    assert "| HR@1 (aimed at 1) | - | -0.2500 [-0.7500, +0.0000] n.d. |" in text
    assert "| HR@10 (aimed at 10) | +0.2500 [+0.0000, +0.7500] n.d. | - |" in text
    # each run's own window: WPAUC over ranks [9, 19) of the run aimed at 10
    assert "| WPAUC[9,19) (aimed at 10) | +0.2500 [+0.0000, +0.7500] n.d. | - |" in text
    # the window matrix compares the starts every configuration continues: start 0 only
    assert "mean over the runs from SFT start(s) [0]" in text
    assert "| tawin_gated 0.0003 0.04 | 2 | 1.0000 |" in text
    assert "| synthetic | Δ RL − start | 4 | +1.0000 [+1.0000, +1.0000] |" in text  # summary
    # aimed at 1 against the headline run of the same start and seed: HR@1 0.75 against 1
    assert "| sweep_tawin_gated_k1 0.0003 0.04 | 2 | headline RL | -0.2500 [" in text
    assert (out / "synthetic_starts_curves.png").exists()


def test_tawin_configurations_are_paired_with_gated_tawin_where_it_is_not_the_headline(
    tmp_path, monkeypatch
):
    """On a data set whose headline is another objective (Office: beam-PAUC) each TAWin
    configuration is also compared with plain gated TAWin of the same lr and β."""
    from experiments import study_report

    out = toy_study(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\n{README_END}\n")
    monkeypatch.setitem(study_report.HEADLINE, "synthetic", (CONTROL, 3e-4, 0.0))
    lines = write_study_report(out, readme).read_text().splitlines()
    against_tawin = [line for line in lines if " | gated TAWin | " in line]
    # aimed at 1 against gated TAWin (aimed at 10) of the same start and seed: HR@1 0.75 - 1
    assert len(against_tawin) == 1
    assert against_tawin[0].startswith(
        "| sweep_tawin_gated_k1 0.0003 0.04 | 2 | gated TAWin | -0.2500 ["
    )


@pytest.mark.parametrize("name", ["sft_matched", "tawin_gated"])
def test_every_variant_has_a_run_folder_per_start(name):
    assert run_name(name, 3e-4, 0.0, 0, 0) != run_name(name, 3e-4, 0.0, 0, 1)


def test_window_variants_are_not_sweep_points(tmp_path):
    """Tail negatives or logistic pairs at K = 10 are other objectives, not the sweep's
    K = 10 arm (they once joined it)."""
    from experiments.stats import Run
    from experiments.study_report import sweep_runs

    def run(args: dict, seed: int) -> Run:
        objective = {"class_path": VARIANTS["tawin"]["class_path"], "init_args": args}
        result = {"name": "x", "objective": objective, "lr": 3e-4, "beta": 0.04, "seed": seed}
        return Run(result | {"curves": {"val/ndcg@10": [[99, 0.1]]}}, tmp_path)

    plain = {"target_k": 10, "window_width": 10, "gate": "beam"}
    runs = [
        run(plain, 0),
        run(sweep(1)["init_args"], 0),
        run(plain | {"tail_negatives": 16, "tail_weight": 1.0}, 1),
        run(plain | {"pairwise": "logistic"}, 2),
    ]
    (by,) = sweep_runs(runs).values()
    assert [r.pair[1] for r in by[("K", 10)]] == [0]
