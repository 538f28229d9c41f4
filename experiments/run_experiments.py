"""The paper's comparison, end to end, with baselines and a TAWin window sweep.

For each dataset and seed: SFT, then GRPO/AUC, beam-PAUC and TAWin-WPAUC from the same SFT
checkpoint, each selected on the validation split (best val/ndcg@10 checkpoint) and tested
once on the full test split. Beside them: popularity, last-item transition counts and, on
the synthetic world, the Bayes-optimal oracle, on the same test split and metrics. Then the
window sweep: TAWin aimed at different ranks, to see whether HR@K follows the window.

    python -m experiments.run_experiments                       # everything (long)
    python -m experiments.run_experiments --datasets synthetic --seeds 0 1 2

Writes ``<out>/results.json`` (every run's test metrics), ``<out>/results.md`` (tables:
mean and std over seeds) and ``<out>/*.png`` (plots). Re-running skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from experiments.stats import mean_std
from wpauc.window import Window

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = ("grpo_auc", "beam_pauc", "tawin")
STUDY_SETTINGS = {
    ("synthetic", "grpo_auc"): ["--model.loss.beta=0.0", "--model.optimizer.init_args.lr=1e-4"],
    ("synthetic", "beam_pauc"): ["--model.loss.beta=0.0"],
    ("office", "grpo_auc"): ["--model.loss.beta=0.0", "--model.optimizer.init_args.lr=1e-4"],
}
"""Where an objective's settings on a data set differ from its `configs/<dataset>/rl.yaml`
(configs/README.md)."""


def metric_keys(windows: list[tuple[float, float]]) -> list[str]:
    """HR@K and NDCG@K (K = 1, 3, 5, 10, 20), AUC and each window's WPAUC as metric keys, the
    windows written with every digit (`wpauc.metrics.WPAUCSpec.between`: the same window)."""
    top_k = [f"{name}@{k}" for name in ("hr", "ndcg") for k in (1, 3, 5, 10, 20)]
    return [*top_k, "auc", *(f"wpauc@[{alpha!r},{alpha + d!r}]" for alpha, d in windows)]


def _cli_args(config: Path, run_dir: Path, seed: int, extra: list[str]) -> list[str]:
    return [
        f"--config={config}",
        f"--seed_everything={seed}",
        f"--model.policy.init_args.seed={seed}",
        f"--model.rollout_seed={seed}",
        f"--data.seed={seed}",  # training order; also the seeded valid subset for model selection
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        f"--trainer.callbacks.dirpath={run_dir}/checkpoints",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def objective_args(dataset: str, name: str) -> list[str]:
    """The objective piece `name` after `configs/<dataset>/rl.yaml`, with the data set's
    settings for it; TAWin is the entry point's own objective."""
    if name == "tawin":
        return []
    piece = REPO / "configs" / "objective" / f"{name}.yaml"
    return [f"--model.objective={piece}", *STUDY_SETTINGS.get((dataset, name), [])]


def train_and_test(
    config: Path, run_dir: Path, seed: int, extra: list[str], fit_extra: list[str]
) -> dict:
    """Fit (model selection on valid), then test the best checkpoint on the full test split.

    A finished fit leaves `fit.json` beside its checkpoints, so that a run stopped during its
    test (or whose test is to be redone: delete `test_metrics.json`) is only tested again."""
    from wpauc.cli import run_cli

    result_file = run_dir / "test_metrics.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    fit_file = run_dir / "fit.json"
    best = run_dir / "checkpoints" / "best.ckpt"
    if fit_file.exists() and best.exists():
        fit_seconds = json.loads(fit_file.read_text())["fit_seconds"]
    else:
        start = time.perf_counter()
        fit_args = _cli_args(config, run_dir, seed, extra + fit_extra)
        run_cli(["fit", *fit_args, "--test_after_fit=false"])
        fit_seconds = time.perf_counter() - start
        fit_file.write_text(json.dumps({"fit_seconds": fit_seconds}))
    cli = run_cli(
        [
            "test",
            *_cli_args(config, run_dir, seed, extra),
            "--data.max_eval_samples=null",
            f"--ckpt_path={best}",
        ]
    )
    metrics = {
        k.removeprefix("test/"): float(v)
        for k, v in cli.trainer.callback_metrics.items()
        if k.startswith("test/")
    }
    metrics["fit_seconds"] = fit_seconds
    result_file.write_text(json.dumps(metrics, indent=1))
    return metrics


def load_data(dataset: str):
    """The dataset as its SFT config loads it."""
    from wpauc.cli import run_cli

    cli = run_cli([f"--config={REPO / 'configs' / dataset / 'sft.yaml'}"], run=False)
    return cli.datamodule.source.load()


def baseline_metrics(
    data, windows: list[tuple[float, float]], refit: bool = False
) -> dict[str, dict]:
    """Popularity, last-item transitions and (synthetic) the Bayes oracle on the full test
    split; the baselines count the training split, or train + valid with `refit`."""
    from wpauc.baselines import fit_samples, last_item_transition_scores, popularity_scores
    from wpauc.data import bayes_optimal_scores
    from wpauc.metrics import RankingMetrics

    fitted, test, num_items = fit_samples(data, refit), data.test, len(data.catalog)
    scorers = {
        "popularity": lambda: popularity_scores(fitted, test, num_items),
        "last-item transitions": lambda: last_item_transition_scores(fitted, test, num_items),
    }
    if data.true_next_item_probs is not None:
        scorers["Bayes-optimal oracle"] = lambda: bayes_optimal_scores(data, "test")
    target = torch.tensor([s.target for s in test])
    results = {}
    for name, scorer in scorers.items():
        metrics = RankingMetrics(metric_keys(windows))
        scores = scorer()
        for chunk in range(0, len(test), 512):
            metrics.update(scores[chunk : chunk + 512].float(), target[chunk : chunk + 512])
        results[name] = {k: float(v) for k, v in metrics.compute().items()}
    return results


def summarise(runs: list[dict], keys) -> dict[str, tuple[float, float]]:
    summary = {}
    for key in keys:
        summary[key] = mean_std([run[key] for run in runs if key in run])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["synthetic", "office"],
        help="config folders under configs/",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--sweep-k", nargs="+", type=int, default=[3, 20], help="target K of the window sweep"
    )
    parser.add_argument("--sweep-seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--sweep-datasets", nargs="*", default=["synthetic"], help="datasets that get the sweep"
    )
    parser.add_argument(
        "--sft-epochs", type=int, default=None, help="override the SFT configs' max_epochs"
    )
    parser.add_argument(
        "--rl-epochs", type=int, default=None, help="override the RL configs' max_epochs"
    )
    parser.add_argument(
        "--rl-batches", type=int, default=None, help="limit_train_batches of each RL epoch"
    )
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "results")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # configs name the data relative to the repository

    report = {
        "command": "python -m experiments.run_experiments " + " ".join(sys.argv[1:]),
        "datasets": {},
    }
    for dataset in args.datasets:
        configs = REPO / "configs" / dataset
        root = args.out / dataset
        data = load_data(dataset)
        # TAWin's window for target_k=10, width 10: negative-ranks [9, 19)
        top10_window = Window.top_k(10, 10).fractions(len(data.catalog) - 1)
        windows = [(0.0, 0.01), (0.0, 0.05), top10_window]
        eval_windows = "--model.metrics=" + json.dumps(metric_keys(windows))
        sft_extra = [f"--trainer.max_epochs={args.sft_epochs}"] if args.sft_epochs else []
        rl_extra = [f"--trainer.max_epochs={args.rl_epochs}"] if args.rl_epochs else []
        if args.rl_batches:
            rl_extra.append(f"--trainer.limit_train_batches={args.rl_batches}")
        runs: dict[str, list[dict]] = {"SFT": [], **{name: [] for name in OBJECTIVES}}
        for seed in args.seeds:
            sft_dir = root / f"seed{seed}" / "sft"
            runs["SFT"].append(
                train_and_test(configs / "sft.yaml", sft_dir, seed, [eval_windows], sft_extra)
            )
            init = [eval_windows, f"--model.init_from={sft_dir}/checkpoints/best.ckpt"]
            for name in OBJECTIVES:
                run_dir = root / f"seed{seed}" / name
                objective = [*init, *objective_args(dataset, name)]
                runs[name].append(
                    train_and_test(configs / "rl.yaml", run_dir, seed, objective, rl_extra)
                )
                print(f"[{dataset} seed {seed}] {name}: {runs[name][-1]}", flush=True)

        sweep = {}
        for k in args.sweep_k if dataset in args.sweep_datasets else []:
            for aim in sorted({1, k, 4 * k}):
                label = f"window at rank {aim} (K={k})"
                if label in sweep:
                    continue
                results = []
                for seed in args.sweep_seeds:
                    run_dir = root / f"seed{seed}" / f"sweep_target{aim}"
                    extra = [
                        eval_windows,
                        f"--model.init_from={root / f'seed{seed}' / 'sft'}/checkpoints/best.ckpt",
                        f"--model.objective.init_args.target_k={aim}",
                        f"--model.objective.init_args.window_width={aim}",
                    ]
                    results.append(
                        train_and_test(configs / "rl.yaml", run_dir, seed, extra, rl_extra)
                    )
                sweep[label] = {"target_rank": aim, "runs": results}

        report["datasets"][dataset] = {
            "num_items": len(data.catalog),
            "top10_window": windows[-1],
            "runs": runs,
            "baselines": baseline_metrics(data, windows),
            "sweep": sweep,
            "seeds": args.seeds,
            "sweep_seeds": args.sweep_seeds,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    from experiments.report import write_report

    write_report(report, args.out)


if __name__ == "__main__":
    main()
