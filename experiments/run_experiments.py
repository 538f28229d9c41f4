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
import sys

from experiments.runs import (
    CONFIGS,
    REPO,
    baseline_metrics,
    load_data,
    metric_keys,
    parse_and_set_up,
    train_and_test,
)
from wpauc.window import Window

OBJECTIVES = ("grpo_auc", "beam_pauc", "tawin")
STUDY_SETTINGS = {
    ("synthetic", "grpo_auc"): ["--model.loss.beta=0.0", "--model.optimizer.init_args.lr=1e-4"],
    ("synthetic", "beam_pauc"): ["--model.loss.beta=0.0"],
    ("office", "grpo_auc"): ["--model.loss.beta=0.0", "--model.optimizer.init_args.lr=1e-4"],
}
"""Where an objective's settings on a data set differ from its `configs/<dataset>/rl.yaml`
(configs/README.md)."""


def objective_args(dataset: str, name: str) -> list[str]:
    """The objective piece `name` after `configs/<dataset>/rl.yaml`, with the data set's
    settings for it; TAWin is the entry point's own objective."""
    if name == "tawin":
        return []
    piece = CONFIGS / "objective" / f"{name}.yaml"
    return [f"--model.objective={piece}", *STUDY_SETTINGS.get((dataset, name), [])]


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
    args = parse_and_set_up(parser, REPO / "experiments" / "results", threads=2)

    report = {
        "command": "python -m experiments.run_experiments " + " ".join(sys.argv[1:]),
        "datasets": {},
    }
    for dataset in args.datasets:
        configs = CONFIGS / dataset
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
