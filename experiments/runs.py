"""What every experiment driver and report shares: the repository's paths, the process set-up,
the seeds of a run, running `wpauc`, finished runs, their curves and test metrics, a shipped
objective piece, the counting baselines, a seeds table cell, and the generated blocks of
experiments/README.md (the only README the experiments write).

Drivers (`experiments.run_experiments`, `base_models`, `sft_recipes`, `study`) and reports
(`experiments.report`, `study_report`) import this module and `experiments.stats`, never each
other's drivers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from experiments.stats import mean_std

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENTS_README = REPO / "experiments" / "README.md"
SFT_V1_RECIPE = [
    "--model.policy.init_args.hidden_size=64",
    "--model.policy.init_args.num_layers=2",
    "--model.policy.init_args.intermediate_size=256",
    "--model.optimizer.init_args.lr=0.003",
    "--model.optimizer.init_args.weight_decay=0.0",
    "--trainer.max_epochs=10",
    "--model.scheduler=null",
    "--model.policy.init_args.attention_dropout=0.0",
    "--model.policy.init_args.embedding_dropout=0.0",
]
"""The recipe first shipped in configs/office/sft.yaml and configs/industrial/sft.yaml, every
setting a later shipped config may change given explicitly, so that the recipes mean the
same whatever `configs/<dataset>/sft.yaml` ships now."""


def set_up_process(threads: int) -> None:
    """What every experiment command does first: torch's thread count, and the repository as
    the working folder (configs name their data relative to it; `WPAUC_DATA` says where the
    real data sets are, as for `wpauc` itself)."""
    import torch

    torch.set_num_threads(threads)
    os.chdir(REPO)


def parse_and_set_up(parser: argparse.ArgumentParser, out: Path, threads: int = 1):
    """A driver's arguments, with the two that every driver takes (`--out`, `--threads`),
    and the process set up for them."""
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--threads", type=int, default=threads)
    args = parser.parse_args()
    set_up_process(args.threads)
    return args


def seed_args(seed: int, *, policy_init: bool = True, rollouts: bool = True) -> list[str]:
    """`wpauc` arguments seeding a run: everything, the policy's initial weights (pointless
    for a run that starts from a checkpoint), the rollouts (unused by SFT) and the data
    (training order and the seeded valid subset of model selection)."""
    return [
        f"--seed_everything={seed}",
        *([f"--model.policy.init_args.seed={seed}"] if policy_init else []),
        *([f"--model.rollout_seed={seed}"] if rollouts else []),
        f"--data.seed={seed}",
    ]


def run_wpauc(args: list[str], run: bool = True):
    """`wpauc <args>` in this process (`wpauc.cli.run_cli`, imported when first needed so that
    the reports start without Lightning)."""
    from wpauc.cli import run_cli

    return run_cli(args, run=run)


def test_metrics(cli) -> dict[str, float]:
    """The `test/` metrics of a finished `wpauc test`, prefix removed."""
    return {
        key.removeprefix("test/"): float(value)
        for key, value in cli.trainer.callback_metrics.items()
        if key.startswith("test/")
    }


def finished_result(run_dir: Path) -> dict | None:
    """The run's `result.json` if it finished; otherwise None, its folder cleared (an
    interrupted run starts again from scratch)."""
    result_file = run_dir / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return None


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


def _fit_test_args(config: Path, run_dir: Path, seed: int, extra: list[str]) -> list[str]:
    return [
        f"--config={config}",
        *seed_args(seed),
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        f"--trainer.callbacks.dirpath={run_dir}/checkpoints",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def train_and_test(
    config: Path, run_dir: Path, seed: int, extra: list[str], fit_extra: list[str]
) -> dict:
    """Fit (model selection on valid), then test the best checkpoint on the full test split.

    A finished fit leaves `fit.json` beside its checkpoints, so that a run stopped during its
    test (or whose test is to be redone: delete `test_metrics.json`) is only tested again."""
    result_file = run_dir / "test_metrics.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    fit_file = run_dir / "fit.json"
    best = run_dir / "checkpoints" / "best.ckpt"
    if fit_file.exists() and best.exists():
        fit_seconds = json.loads(fit_file.read_text())["fit_seconds"]
    else:
        start = time.perf_counter()
        fit_args = _fit_test_args(config, run_dir, seed, extra + fit_extra)
        run_wpauc(["fit", *fit_args, "--test_after_fit=false"])
        fit_seconds = time.perf_counter() - start
        fit_file.write_text(json.dumps({"fit_seconds": fit_seconds}))
    test_args = _fit_test_args(config, run_dir, seed, extra)
    cli = run_wpauc(["test", *test_args, "--data.max_eval_samples=null", f"--ckpt_path={best}"])
    metrics = {**test_metrics(cli), "fit_seconds": fit_seconds}
    result_file.write_text(json.dumps(metrics, indent=1))
    return metrics


def objective_piece(path: Path) -> dict:
    """A piece as `--model.objective` takes it inline: `{"class_path": ..., "init_args": ...}`."""
    return yaml.safe_load(path.read_text())


def load_data(dataset: str):
    """The dataset as its SFT config loads it."""
    cli = run_wpauc([f"--config={CONFIGS / dataset / 'sft.yaml'}"], run=False)
    return cli.datamodule.source.load()


def metric_keys(windows: list[tuple[float, float]]) -> list[str]:
    """HR@K and NDCG@K (K = 1, 3, 5, 10, 20), AUC and each window's WPAUC as metric keys, the
    windows written with every digit (`wpauc.metrics.WPAUCSpec.between`: the same window)."""
    top_k = [f"{name}@{k}" for name in ("hr", "ndcg") for k in (1, 3, 5, 10, 20)]
    return [*top_k, "auc", *(f"wpauc@[{alpha!r},{alpha + d!r}]" for alpha, d in windows)]


def baseline_metrics(
    data, windows: list[tuple[float, float]], refit: bool = False
) -> dict[str, dict]:
    """Popularity, last-item transitions and (synthetic) the Bayes oracle on the full test
    split; the baselines count the training split, or train + valid with `refit`."""
    import torch

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


def seeds_cell(values: list[float]) -> str:
    """A table cell over seeds: `mean ± std` (sample std), the value alone for one run."""
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def markdown_header(*names: str) -> list[str]:
    """The header and rule lines of a Markdown table with the columns `names`."""
    return ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]


def splice_between(readme: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the marker lines `start` and `end` of `readme` by `body`."""
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme}: the markers {start!r} / {end!r} are missing")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}")
