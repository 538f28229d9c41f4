"""The RL study: does RL improve a converged SFT model, and does TAWin's window steer HR@K?

From SFT starts (`--sft-seeds`: the dataset's SFT recipe trained with each seed, the plan
`starts`), every RL run (objective variant x learning rate x KL weight x RL seed) trains
`--steps` steps, validates every `--val-every` steps (learning curves of the ranking metrics
and of the diagnostics), keeps the best checkpoint by val/NDCG@10 and is tested once on the
full test split, saving each test context's counts (`wpauc.callbacks.TestRanksWriter`) for
paired statistics. Each start is validated on every RL seed's validation subset, so that
step 0 is a selection candidate (`experiments.stats`). Runs are independent pieces: a
finished run (its `result.json` exists) is skipped, so the command can be stopped and re-run;
with `--commit` each finished run's folder is committed to git.

    python -m experiments.study --dataset synthetic --plan starts --sft-seeds 0 1 2
    python -m experiments.study --dataset synthetic --plan main --only tawin_gated sft_matched \\
        --lrs 3e-4 --beta 0.04 --sft-seeds 0 1 2 --seeds 0 1 2 --commit
    python -m experiments.study --dataset office --plan sweep1 --lrs 3e-4 --beta 0.04 ...
    python -m experiments.study --report          # experiments/README.md's tables and plots

Writes `<out>/<dataset>/<run>/result.json` (+ `test_ranks.npz`) per run,
`<out>/<dataset>/sft_seed<k>/` per start, and, with `--report`, the generated part of
experiments/README.md and `<out>/*.png` (`experiments.study_report`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from experiments.runs import (
    CONFIGS,
    EXPERIMENTS_README,
    REPO,
    finished_result,
    objective_piece,
    parse_and_set_up,
    read_curves,
    run_wpauc,
    seed_args,
    test_metrics,
)

OUT = REPO / "experiments" / "results" / "study"

TAWIN = "wpauc.objectives.TAWinWPAUC"
CONTROL = "sft_matched"
"""The control: the same steps of SFT instead of RL, with the dataset's SFT recipe (its
policy's dropout, weight decay and schedule; `configs/<dataset>/sft.yaml`) at the RL run's
learning rate."""


def gated_tawin_with_tail(tail_weight: float) -> dict:
    """Gated TAWin aimed at K = 10 with 16 tail negatives of weight `tail_weight`."""
    return {
        "class_path": TAWIN,
        "init_args": {
            "target_k": 10,
            "window_width": 10,
            "gate": "beam",
            "tail_negatives": 16,
            "tail_weight": tail_weight,
        },
    }


VARIANTS: dict[str, dict | None] = {
    CONTROL: None,
    "grpo_auc": {"class_path": "wpauc.objectives.GRPOAUC", "init_args": {"num_negatives": 16}},
    "beam_pauc": {
        "class_path": "wpauc.objectives.BeamPAUC",
        "init_args": {"num_negatives": 16, "positive_only_if_generated": False},
    },
    "beam_pauc_gated": objective_piece(CONFIGS / "objective" / "beam_pauc.yaml"),
    "rank_aware_gated": {
        "class_path": "wpauc.objectives.RankAwareReward",
        "init_args": {"num_beams": 16, "positive_only_if_generated": True},
    },
    "tawin": {
        "class_path": TAWIN,
        "init_args": {"target_k": 10, "window_width": 10, "gate": "none"},
    },
    "tawin_gated": objective_piece(CONFIGS / "objective" / "tawin.yaml"),
    # gated TAWin plus tail negatives below the window (docs/design.md section 11: the
    # window then has no lower edge), at weight 1 and at the weight the section's bound asks
    # for (lambda* at most 0.082 on the synthetic world's validation contexts)
    "tawin_gated_tail": gated_tawin_with_tail(tail_weight=1.0),
    "tawin_gated_tail_small": gated_tawin_with_tail(tail_weight=0.1),
    # the first study gave no gate here and inherited gate: beam from
    # configs/objective/tawin.yaml: it ran gated, as it is written now
    "tawin_logistic": {
        "class_path": TAWIN,
        "init_args": {"target_k": 10, "window_width": 10, "gate": "beam", "pairwise": "logistic"},
    },
}
"""The objectives of the main comparison, by run name: the shipped pieces as they are, the
other variants with every setting that a shipped piece may set given explicitly
(jsonargparse merges the init_args of an override with the config's when the class is the
same)."""

SWEEP_FORMS = {"tawin": {"gate": "none"}, "tawin_gated": {"gate": "beam"}}
"""The window sweeps: TAWin aimed at each K, original and gated."""


def sweep_variant(form: str, target_k: int, width: int | None = None) -> dict:
    """TAWin aimed at HR@target_k: window negative-ranks [K - 1, K - 1 + width); width K by
    default (the mean of HR@K..HR@(2K-1)); width 1 is HR@K itself."""
    width = target_k if width is None else width
    init_args = {"target_k": target_k, "window_width": width, **SWEEP_FORMS[form]}
    return {"class_path": TAWIN, "init_args": init_args}


def sweep_name(form: str, target_k: int, width: int | None = None) -> str:
    """Run name of a sweep point; aimed at K = 10 with width 10 it is the main plan's run,
    and width 1 at K = 1 is the width-K sweep's K = 1 run (the same window)."""
    if width is None or width == target_k:
        return form if target_k == 10 else f"sweep_{form}_k{target_k}"
    return f"sweep1_{form}_k{target_k}"


def plan_runs(
    plan: str, seeds: list[int], lrs: list[float]
) -> list[tuple[str, dict | None, float, int]]:
    """`(run name, objective, learning rate, seed)` of every run of the plan, in run order.

    Main plan: seed-major, so that a stopped study has every variant of the first seeds.
    Sweep (width K) and sweep1 (width 1): the extreme windows (K = 1 and K = 20) for every
    seed first, the two claims the sweep tests, then K = 3 and K = 10.
    """
    runs: list[tuple[str, dict | None, float, int]] = []
    if plan == "main":
        for seed in seeds:
            for lr in lrs:
                runs += [(name, objective, lr, seed) for name, objective in VARIANTS.items()]
        return runs
    if plan not in ("sweep", "sweep1"):
        raise ValueError(f"unknown plan {plan!r}: main, sweep or sweep1")
    for ks in ((1, 20), (3, 10)):
        for seed in seeds:
            for lr in lrs:
                for target_k in ks:
                    for form in SWEEP_FORMS:
                        width = 1 if plan == "sweep1" else None
                        name = sweep_name(form, target_k, width)
                        runs.append((name, sweep_variant(form, target_k, width), lr, seed))
    return runs


def cli_args(
    dataset: str,
    run_dir: Path,
    name: str,
    objective: dict | None,
    lr: float,
    seed: int,
    init: Path,
    args,
) -> list[str]:
    """`wpauc fit` arguments of one run from the SFT start `init`: RL from
    `configs/<dataset>/rl.yaml` with `objective`, or the control (SFT recipe)."""
    config = "sft.yaml" if name == CONTROL else "rl.yaml"
    objective_args = [] if name == CONTROL else [f"--model.objective={json.dumps(objective)}"]
    return [
        f"--config={CONFIGS / dataset / config}",
        *objective_args,
        f"--model.init_from={init}",
        f"--model.loss.beta={0.0 if name == CONTROL else args.beta}",
        f"--model.optimizer.init_args.lr={lr}",
        *seed_args(seed, policy_init=False),  # RL and the control start from the SFT weights
        f"--trainer.max_steps={args.steps}",
        "--trainer.max_epochs=-1",
        f"--trainer.val_check_interval={args.val_every}",
        "--trainer.check_val_every_n_epoch=null",
        f"--trainer.default_root_dir={run_dir}",  # logs and checkpoints follow it
        "--trainer.enable_progress_bar=false",
        *([f"--model.evaluation.rank_cap={args.val_rank_cap}"] if args.val_rank_cap else []),
        "--test_after_fit=false",
    ]


TEST_ARGS = [
    # the test is exact over every rank (AUC too), whatever the validation's cap
    "--data.max_eval_samples=null",
    "--model.evaluation.rank_cap=null",
    '--trainer.callbacks+={"class_path": "wpauc.callbacks.TestRanksWriter"}',
]


def run_name(name: str, lr: float, beta: float, seed: int, sft_seed: int | None = None) -> str:
    """Folder name of one run; the KL weight appears only when it is not the default 0, the
    SFT seed only for runs from this study's starts (the first study had one start)."""
    anchor = f"_beta{beta:g}" if beta else ""
    start = "" if sft_seed is None else f"_sft{sft_seed}"
    return f"{name}_lr{lr:g}{anchor}{start}_seed{seed}"


def run_one(
    dataset: str, name: str, objective: dict | None, lr: float, seed: int, sft_seed: int, args
) -> dict:
    """Fit from the start `sft_seed`, test the best checkpoint on the full test split (with
    the per-context counts), save curves and metrics."""
    beta = 0.0 if name == CONTROL else args.beta  # no KL term without an objective
    run_dir = args.out / dataset / run_name(name, lr, beta, seed, sft_seed)
    if (finished := finished_result(run_dir)) is not None:
        return finished
    start = time.perf_counter()
    init = start_policy(args.out, dataset, sft_seed)
    fit_args = cli_args(dataset, run_dir, name, objective, lr, seed, init, args)
    run_wpauc(["fit", *fit_args])
    best = run_dir / "checkpoints" / "best.ckpt"
    cli = run_wpauc(["test", *fit_args[:-1], *TEST_ARGS, f"--ckpt_path={best}"])
    result = {
        "dataset": dataset,
        "name": name,
        "objective": objective,
        "lr": lr,
        "seed": seed,
        "sft_seed": sft_seed,
        "steps": args.steps,
        "beta": beta,
        "test": test_metrics(cli),
        "curves": read_curves(run_dir),
        "seconds": time.perf_counter() - start,
        "code_commit": code_commit(),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    if args.commit:
        commit(run_dir, f"results: {dataset} study: {run_dir.name}")
    return result


def start_folder(out: Path, dataset: str, sft_seed: int) -> Path:
    """Folder of one SFT start."""
    return out / dataset / f"sft_seed{sft_seed}"


def start_policy(out: Path, dataset: str, sft_seed: int) -> Path:
    """The start's policy weights (`train_start`'s slim copy of its best checkpoint)."""
    path = start_folder(out, dataset, sft_seed) / "start_policy.pt"
    if not path.exists():
        sys.exit(f"{path}: no SFT start; run --plan starts --sft-seeds {sft_seed} first")
    return path


def train_start(dataset: str, sft_seed: int, args) -> Path:
    """Train `configs/<dataset>/sft.yaml` with seed `sft_seed` (skipped once `fit.json`
    marks it finished) and keep the best checkpoint's policy weights and catalog record as
    `start_policy.pt` (small enough to commit, so that later sessions reuse the start)."""
    import torch

    from wpauc.models.provenance import CATALOG_KEY

    folder = start_folder(args.out, dataset, sft_seed)
    slim = folder / "start_policy.pt"
    if not (folder / "fit.json").exists():
        if folder.exists():
            shutil.rmtree(folder)
        began = time.perf_counter()
        run_wpauc(
            [
                "fit",
                f"--config={CONFIGS / dataset / 'sft.yaml'}",
                *seed_args(sft_seed),
                f"--trainer.default_root_dir={folder}",
                "--trainer.enable_progress_bar=false",
                "--test_after_fit=false",
            ]
        )
        (folder / "fit.json").write_text(json.dumps({"fit_seconds": time.perf_counter() - began}))
    if not slim.exists():
        checkpoint = torch.load(
            folder / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
        )
        torch.save(
            {"state_dict": checkpoint["state_dict"], CATALOG_KEY: checkpoint[CATALOG_KEY]}, slim
        )
    return slim


def start_point(dataset: str, sft_seed: int, args) -> dict:
    """The start's validation on every RL seed's subset (step 0 of those runs' curves, with
    their settings) and its test with per-context counts: `sft_seed<k>/result.json`."""
    folder = start_folder(args.out, dataset, sft_seed)
    result_file = folder / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    began = time.perf_counter()
    init = train_start(dataset, sft_seed, args)
    objective = VARIANTS["tawin_gated"]  # any: validation metrics depend on the weights only
    val_by_data_seed = {}
    for seed in args.seeds:
        val_args = cli_args(
            dataset, folder / f"val_seed{seed}", "start", objective, 1e-4, seed, init, args
        )
        cli = run_wpauc(["validate", *val_args[:-1]])
        val_by_data_seed[seed] = {
            k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")
        }
    test_args = cli_args(dataset, folder, "start", objective, 1e-4, sft_seed, init, args)[:-1]
    cli = run_wpauc(["test", *test_args, *TEST_ARGS])
    result = {
        "dataset": dataset,
        "name": "sft_start",
        "sft_seed": sft_seed,
        "val_by_data_seed": val_by_data_seed,
        "test": test_metrics(cli),
        "fit_seconds": json.loads((folder / "fit.json").read_text())["fit_seconds"],
        "seconds": time.perf_counter() - began,
        "code_commit": code_commit(),
    }
    result_file.write_text(json.dumps(result, indent=1))
    if args.commit:
        commit(folder, f"results: {dataset} study: SFT start seed {sft_seed}")
    return result


def commit(folder: Path, message: str) -> None:
    """Commit `folder`'s files (git's ignore rules apply: no checkpoints, no TensorBoard
    logs) and nothing else, in the repository that holds `folder` (the study may run from a
    snapshot of the code, `experiments/run_plan.sh`); waits while another process holds
    git's index lock."""
    git = ["git", "-C", str(folder)]
    for _attempt in range(60):
        add = subprocess.run([*git, "add", "--", "."], capture_output=True, text=True)
        done = (
            add.returncode == 0
            and subprocess.run(
                [*git, "commit", "-q", "-m", message, "--", "."], capture_output=True, text=True
            ).returncode
            == 0
        )
        if done:
            return
        time.sleep(5)
    print(f"commit of {folder} failed after 60 tries: {add.stderr}", flush=True)


def code_commit() -> str | None:
    """The commit of the code that ran (`experiments/run_plan.sh` sets `WPAUC_STUDY_COMMIT`
    for its snapshot), recorded in every result."""
    return os.environ.get("WPAUC_STUDY_COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="synthetic", help="config folder under configs/")
    parser.add_argument("--plan", choices=("starts", "main", "sweep", "sweep1"), default="main")
    parser.add_argument("--sft-seeds", nargs="+", type=int, default=[0], help="SFT starts")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="RL seeds")
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4])
    parser.add_argument("--steps", type=int, default=600, help="RL steps per run")
    parser.add_argument("--val-every", type=int, default=100, help="steps between validations")
    parser.add_argument(
        "--val-rank-cap",
        type=int,
        default=None,
        help="validate with model.evaluation.rank_cap (exact HR/NDCG@K for K <= cap, no AUC)",
    )
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight to the SFT start")
    parser.add_argument("--only", nargs="*", default=None, help="run only these run names")
    parser.add_argument("--commit", action="store_true", help="git-commit each finished run")
    parser.add_argument("--report", action="store_true", help="only write tables and plots")
    args = parse_and_set_up(parser, OUT)
    if args.report:
        from experiments.study_report import write_study_report

        write_study_report(args.out, EXPERIMENTS_README)
        return
    # start-major, each start trained when its runs begin: a stopped plan has every run of
    # its first starts
    for sft_seed in args.sft_seeds:
        start_point(args.dataset, sft_seed, args)
        if args.plan == "starts":
            continue
        for name, objective, lr, seed in plan_runs(args.plan, args.seeds, args.lrs):
            if args.only and name not in args.only:
                continue
            result = run_one(args.dataset, name, objective, lr, seed, sft_seed, args)
            summary = {
                k: round(result["test"][k], 4) for k in ("hr@1", "hr@10", "hr@20", "ndcg@10")
            }
            print(
                f"[{args.dataset}] {name} lr={lr:g} sft={sft_seed} seed={seed}: {summary}",
                flush=True,
            )


if __name__ == "__main__":
    main()
