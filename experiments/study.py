"""The RL study: does RL improve a converged SFT model, and does TAWin's window steer HR@K?

From one SFT checkpoint per dataset, every RL run (objective variant x learning rate x
seed) trains `--steps` steps, validates every `--val-every` steps (learning curves of the
ranking metrics and of the diagnostics), keeps the best checkpoint by val/NDCG@10 and is
tested once on the full test split. Runs are independent pieces: a finished run (its
`result.json` exists) is skipped, so the command can be stopped and re-run.

    python -m experiments.study --dataset synthetic --plan sweep --seeds 0 1 2
    python -m experiments.study --dataset synthetic --plan main --lrs 1e-4 1e-3
    python -m experiments.study --report          # tables, plots, and README.md's tables

Writes `<out>/<dataset>/<run>/result.json` per run and, with `--report`,
`<out>/study.md` and `<out>/*.png` (`experiments.study_report`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "experiments" / "results" / "study"

TAWIN = "wpauc.objectives.TAWinWPAUC"
VARIANTS: dict[str, dict | None] = {
    "sft_more": None,  # the control: the same steps of SFT instead of RL
    "grpo_auc": {"class_path": "wpauc.objectives.GRPOAUC", "init_args": {"num_negatives": 16}},
    "beam_pauc": {
        "class_path": "wpauc.objectives.BeamPAUC",
        "init_args": {"num_negatives": 16, "positive_only_if_generated": False},
    },
    "beam_pauc_gated": {
        "class_path": "wpauc.objectives.BeamPAUC",
        "init_args": {"num_negatives": 16, "positive_only_if_generated": True},
    },
    "rank_aware_gated": {
        "class_path": "wpauc.objectives.RankAwareReward",
        "init_args": {"num_beams": 16, "positive_only_if_generated": True},
    },
    "tawin": {
        "class_path": TAWIN,
        "init_args": {"target_k": 10, "window_width": 10, "gate": "none"},
    },
    "tawin_gated": {
        "class_path": TAWIN,
        "init_args": {"target_k": 10, "window_width": 10, "gate": "beam"},
    },
    "tawin_logistic": {
        "class_path": TAWIN,
        "init_args": {"target_k": 10, "window_width": 10, "pairwise": "logistic"},
    },
}
"""The objectives of the main comparison, by run name. Every setting that a shipped config
piece may set is given explicitly: jsonargparse merges the init_args of an override with
the config's when the class is the same."""

SWEEP_FORMS = {"tawin": {"gate": "none"}, "tawin_gated": {"gate": "beam"}}
"""The window sweep: TAWin aimed at each K (width K), original and gated."""


def sweep_variant(form: str, target_k: int) -> dict:
    """TAWin aimed at HR@target_k: window negative-ranks [K - 1, 2K - 1)."""
    init_args = {"target_k": target_k, "window_width": target_k, **SWEEP_FORMS[form]}
    return {"class_path": TAWIN, "init_args": init_args}


def plan_runs(plan: str, seeds: list[int], lrs: list[float]) -> list[tuple[str, dict, float, int]]:
    """`(run name, objective, learning rate, seed)` of every run of the plan, in run order.

    Main plan: seed-major, so that a stopped study has every variant of the first seeds.
    Sweep: the extreme windows (K = 1 and K = 20) for every seed first, the two claims the
    sweep tests, then K = 3 and K = 10.
    """
    runs = []
    if plan == "main":
        for seed in seeds:
            for lr in lrs:
                runs += [(name, objective, lr, seed) for name, objective in VARIANTS.items()]
        return runs
    for ks in ((1, 20), (3, 10)):
        for seed in seeds:
            for lr in lrs:
                for target_k in ks:
                    for form in SWEEP_FORMS:
                        # aimed at K = 10 the sweep's run is the main plan's: shared, not rerun
                        name = form if target_k == 10 else f"sweep_{form}_k{target_k}"
                        runs.append((name, sweep_variant(form, target_k), lr, seed))
    return runs


def cli_args(
    dataset: str, run_dir: Path, objective: dict | None, lr: float, seed: int, args
) -> list[str]:
    """`wpauc fit` arguments of one RL run (objective None: SFT) from the SFT checkpoint."""
    return [
        f"--config={REPO / 'configs' / dataset / 'tawin.yaml'}",
        f"--model.objective={json.dumps(objective)}",
        f"--model.init_from={args.sft_checkpoint}",
        f"--model.loss.beta={args.beta}",
        f"--model.optimizer.init_args.lr={lr}",
        f"--seed_everything={seed}",
        f"--model.rollout_seed={seed}",
        f"--data.seed={seed}",
        f"--trainer.max_steps={args.steps}",
        "--trainer.max_epochs=-1",
        f"--trainer.val_check_interval={args.val_every}",
        "--trainer.check_val_every_n_epoch=null",
        f"--trainer.default_root_dir={run_dir}",  # logs and checkpoints follow it
        "--trainer.enable_progress_bar=false",
        *([f"--model.eval_rank_cap={args.val_rank_cap}"] if args.val_rank_cap else []),
        "--test_after_fit=false",
    ]


def run_name(name: str, lr: float, beta: float, seed: int) -> str:
    """Folder name of one run; the KL weight appears only when it is not the default 0."""
    anchor = f"_beta{beta:g}" if beta else ""
    return f"{name}_lr{lr:g}{anchor}_seed{seed}"


def finished_result(run_dir: Path) -> dict | None:
    """The run's `result.json` if it finished; otherwise None, its folder cleared (an
    interrupted run starts again from scratch)."""
    result_file = run_dir / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return None


def run_one(dataset: str, name: str, objective: dict | None, lr: float, seed: int, args) -> dict:
    """Fit, test the best checkpoint on the full test split, save curves and metrics."""
    from wpauc.cli import run_cli

    run_dir = args.out / dataset / run_name(name, lr, args.beta, seed)
    result_file = run_dir / "result.json"
    if (finished := finished_result(run_dir)) is not None:
        return finished
    start = time.perf_counter()
    fit_args = cli_args(dataset, run_dir, objective, lr, seed, args)
    run_cli(["fit", *fit_args])
    best = run_dir / "checkpoints" / "best.ckpt"
    # the test is exact over every rank (AUC too), whatever the validation's cap
    test_args = ["--data.max_eval_samples=null", "--model.eval_rank_cap=null"]
    cli = run_cli(["test", *fit_args[:-1], *test_args, f"--ckpt_path={best}"])
    test = {
        key.removeprefix("test/"): float(value)
        for key, value in cli.trainer.callback_metrics.items()
        if key.startswith("test/")
    }
    result = {
        "dataset": dataset,
        "name": name,
        "objective": objective,
        "lr": lr,
        "seed": seed,
        "steps": args.steps,
        "beta": args.beta,
        "test": test,
        "curves": read_curves(run_dir),
        "seconds": time.perf_counter() - start,
    }
    result_file.write_text(json.dumps(result, indent=1))
    return result


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run logged to TensorBoard: `{tag: [(step, value), ...]}`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[tuple[int, float]]] = {}
    for events_dir in sorted({path.parent for path in run_dir.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            curves.setdefault(tag, []).extend(
                (event.step, event.value) for event in accumulator.Scalars(tag)
            )
    return curves


def start_point(dataset: str, args) -> dict:
    """Validation and test metrics of the SFT checkpoint itself (step 0 of every curve)."""
    from wpauc.cli import run_cli

    result_file = args.out / dataset / "sft_start.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    result_file.parent.mkdir(parents=True, exist_ok=True)
    base = [
        f"--config={REPO / 'configs' / dataset / 'sft.yaml'}",
        f"--trainer.default_root_dir={args.out / dataset / 'sft_start'}",
        "--trainer.enable_progress_bar=false",
        f"--ckpt_path={args.sft_checkpoint}",
    ]
    metrics = {}
    for stage, extra in (("validate", []), ("test", ["--data.max_eval_samples=null"])):
        cli = run_cli([stage, *base, *extra])
        metrics.update({k: float(v) for k, v in cli.trainer.callback_metrics.items()})
    result_file.write_text(json.dumps(metrics, indent=1))
    return metrics


def set_up_process(threads: int) -> None:
    """What every experiment command does first: torch's thread count, and the repository as
    the working folder (configs name their data relative to it; `WPAUC_DATA` says where the
    real data sets are, as for `wpauc` itself)."""
    import torch

    torch.set_num_threads(threads)
    os.chdir(REPO)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="synthetic", help="config folder under configs/")
    parser.add_argument("--plan", choices=("main", "sweep"), default="main")
    parser.add_argument("--sft-checkpoint", type=Path, help="the converged SFT checkpoint")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4])
    parser.add_argument("--steps", type=int, default=600, help="RL steps per run")
    parser.add_argument("--val-every", type=int, default=100, help="steps between validations")
    parser.add_argument(
        "--val-rank-cap",
        type=int,
        default=None,
        help="validate with model.eval_rank_cap (exact HR/NDCG@K for K <= cap, no AUC curve)",
    )
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight to the SFT start")
    parser.add_argument("--only", nargs="*", default=None, help="run only these run names")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only write tables and plots")
    args = parser.parse_args()

    set_up_process(args.threads)
    if args.report:
        from experiments.study_report import write_study_report

        write_study_report(args.out, REPO / "README.md")
        return
    if args.sft_checkpoint is None or not args.sft_checkpoint.exists():
        sys.exit(f"--sft-checkpoint: no checkpoint at {args.sft_checkpoint}")
    start_point(args.dataset, args)
    for name, objective, lr, seed in plan_runs(args.plan, args.seeds, args.lrs):
        if args.only and name not in args.only:
            continue
        result = run_one(args.dataset, name, objective, lr, seed, args)
        summary = {k: round(result["test"][k], 4) for k in ("hr@1", "hr@10", "hr@20", "ndcg@10")}
        print(f"[{args.dataset}] {name} lr={lr:g} seed={seed}: {summary}", flush=True)


if __name__ == "__main__":
    main()
