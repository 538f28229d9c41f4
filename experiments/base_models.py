"""Base recommenders on the real data: counting baselines, SASRec and SFT recipes, 3 seeds.

Every row is fitted on the training split (or, with `--refit`, on train + valid: the same
choice for every row), selected on valid, and tested once on the full test split with the
same exact full-catalog metrics. Rows: popularity and last-item transitions (deterministic),
SASRec (`wpauc.baselines.sasrec`), the SFT recipe first shipped (`v1`) and the shipped
recipe (`configs/<dataset>/sft.yaml` as it is now). Finished runs are skipped.

    python -m experiments.base_models --datasets office industrial --seeds 0 1 2

Writes `<out>/<dataset>/<row>_seed<seed>.json` per run, `<out>/base_models.md` (the tables),
and, with `--readme`, replaces the table between the base-models markers of
experiments/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.runs import (
    CONFIGS,
    EXPERIMENTS_README,
    REPO,
    SFT_V1_RECIPE,
    baseline_metrics,
    load_data,
    markdown_header,
    parse_and_set_up,
    seeds_cell,
    splice_between,
    train_and_test,
)
from wpauc.metrics import metric_columns

OUT = REPO / "experiments" / "results" / "base_models"
SFT_ROWS = {
    "sft_v1": ("SFT, v1 recipe (first shipped)", SFT_V1_RECIPE),
    "sft_shipped": ("SFT, shipped recipe", []),
}
"""SFT rows by key: label and overrides on top of the shipped `configs/<dataset>/sft.yaml`."""
ROWS = ("counting", "sasrec", *SFT_ROWS)
README_START = "<!-- base-model tables: written by `python -m experiments.base_models` -->"
README_END = "<!-- end of base-model tables -->"


def cached(path: Path, compute, run: bool = True) -> dict | None:
    """`compute()`'s metrics, stored at `path` the first time; with `run=False` only what is
    stored (None if nothing is)."""
    if path.exists():
        return json.loads(path.read_text())
    if not run:
        return None
    metrics = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=1))
    return metrics


def sasrec_test_metrics(data, seed: int, refit: bool) -> dict:
    """Test metrics of SASRec fitted with early stopping on valid."""
    from wpauc.baselines import SASRecConfig, fit_samples, fit_sasrec, sasrec_metrics

    train = fit_samples(data, refit)
    model, _ = fit_sasrec(train, data.valid, len(data.catalog), SASRecConfig(seed=seed))
    return sasrec_metrics(model, data.test, top_k=(1, 3, 5, 10, 20))


def dataset_rows(
    dataset: str, keys: list[str], seeds: list[int], refit: bool, out: Path, run: bool = True
) -> dict[str, list[dict]]:
    """The runs (one dict of test metrics per seed) of the rows `keys` on one dataset; with
    `run=False` only the finished ones (rows with none are left out)."""
    data = load_data(dataset)
    root = out / dataset
    rows: dict[str, list[dict | None]] = {}
    if "counting" in keys:
        counts = cached(
            root / "counting.json", lambda: baseline_metrics(data, [], refit=refit), run
        )
        rows.update({name: [metrics] for name, metrics in (counts or {}).items()})
    if "sasrec" in keys:
        rows["SASRec"] = [
            cached(
                root / f"sasrec_seed{seed}.json",
                lambda s=seed: sasrec_test_metrics(data, s, refit),
                run,
            )
            for seed in seeds
        ]
    refit_flag = [f"--data.refit_on_valid={str(refit).lower()}"]
    for slug, (label, overrides) in SFT_ROWS.items():
        if slug not in keys:
            continue
        rows[label] = [
            cached(
                root / f"{slug}_seed{seed}" / "test_metrics.json",
                lambda s=seed, slug=slug, overrides=overrides: train_and_test(
                    CONFIGS / dataset / "sft.yaml",
                    root / f"{slug}_seed{s}",
                    s,
                    [*overrides, *refit_flag],  # the test counts every rank (AUC)
                    ["--model.evaluation.rank_cap=20"],  # validation: exact HR/NDCG, ~beam cost
                ),
                run,
            )
            for seed in seeds
        ]
    finished = {name: [r for r in runs if r is not None] for name, runs in rows.items()}
    return {name: runs for name, runs in finished.items() if runs}


def table(dataset: str, rows: dict[str, list[dict]], refit: bool) -> list[str]:
    """Markdown table: mean ± std over seeds (one value for deterministic rows)."""
    fitted_on = "train + valid" if refit else "train"
    columns = metric_columns(run for runs in rows.values() for run in runs)  # the keys they hold
    lines = [
        f"#### {dataset}: fitted on {fitted_on}, selected on valid, full test split",
        "",
        *markdown_header("model", "seeds", *(c.upper() for c in columns)),
    ]
    for name, runs in rows.items():
        # a column some run lacks (a test with the rank cap has no AUC) is left blank
        cells = [
            seeds_cell([run[c] for run in runs]) if all(c in run for run in runs) else "–"
            for c in columns
        ]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["office", "industrial"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--refit", action="store_true", help="fit every row on train + valid")
    parser.add_argument("--readme", action="store_true", help="also update experiments/README.md")
    parser.add_argument("--report", action="store_true", help="only tabulate finished runs")
    args = parse_and_set_up(parser, OUT)
    out = args.out / ("refit" if args.refit else "train_only")
    # the command that computes the runs (--report / --readme only tabulate them)
    flags = [flag for flag in sys.argv[1:] if flag not in ("--report", "--readme")]
    command = " ".join(["python -m experiments.base_models", *flags])
    lines = [f"Produced by `{command}`.", ""]
    for dataset in args.datasets:
        lines += table(
            dataset,
            dataset_rows(dataset, args.rows, args.seeds, args.refit, out, run=not args.report),
            args.refit,
        )
    (out / "base_models.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.readme:
        splice_between(EXPERIMENTS_README, README_START, README_END, "\n".join(lines))


if __name__ == "__main__":
    main()
