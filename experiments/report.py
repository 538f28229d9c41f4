"""Turn ``results.json`` of :mod:`experiments.run_experiments` into tables and plots.

python -m experiments.report experiments/results      # rewrite results.md and plots
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.runs import markdown_header, seeds_cell
from experiments.stats import mean_std
from wpauc.metrics import metric_columns
from wpauc.window import wpauc_key

NAMES = {
    "SFT": "SFT only",
    "grpo_auc": "GRPO/AUC (uniform)",
    "beam_pauc": "beam-PAUC",
    "tawin": "TAWin-WPAUC (K=10)",
}


def dataset_table(name: str, entry: dict) -> str:
    wpauc = wpauc_key(*entry["top10_window"])
    results = [
        *entry["baselines"].values(),
        *(run for runs in entry["runs"].values() for run in runs),
    ]
    columns = [key for key in metric_columns(results) if key != wpauc]  # the keys they hold
    header = [*columns, "WPAUC (ranks 9-18)"]
    lines = [
        f"### {name} ({entry['num_items']} items; test split; "
        f"mean ± std over seeds {entry['seeds']})",
        "",
        *markdown_header("method", *(h if h.startswith("WPAUC") else h.upper() for h in header)),
    ]
    for baseline, metrics in entry["baselines"].items():
        lines.append(
            f"| {baseline} | " + " | ".join(f"{metrics[k]:.4f}" for k in (*columns, wpauc)) + " |"
        )
    for run_name, runs in entry["runs"].items():
        cells = [seeds_cell([run[k] for run in runs]) for k in (*columns, wpauc)]
        lines.append(f"| {NAMES.get(run_name, run_name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(name: str, entry: dict) -> str:
    ks = sorted({int(label.split("K=")[1].rstrip(")")) for label in entry["sweep"]})
    hr_keys = [f"hr@{k}" for k in sorted(set(ks) | {1, 10})]
    lines = [
        f"### {name}: TAWin window sweep (window = negative-ranks [r-1, 2r-1); test split; "
        f"seeds {entry['sweep_seeds']})",
        "",
        *markdown_header("window aimed at rank r", *(k.upper() for k in hr_keys)),
    ]
    sft_runs = [
        run
        for seed, run in zip(entry["seeds"], entry["runs"]["SFT"], strict=True)
        if seed in entry["sweep_seeds"]
    ]
    lines.append(
        "| none (the SFT start point) | "
        + " | ".join(seeds_cell([r[k] for r in sft_runs]) for k in hr_keys)
        + " |"
    )
    by_rank = {}
    for item in entry["sweep"].values():
        by_rank[item["target_rank"]] = item["runs"]
    for rank in sorted(by_rank):
        runs = by_rank[rank]
        lines.append(
            f"| {rank} | "
            + " | ".join(seeds_cell([run[k] for run in runs]) for k in hr_keys)
            + " |"
        )
    return "\n".join(lines)


def plot(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, entry in report["datasets"].items():
        figure, axis = plt.subplots(figsize=(5, 3.5))
        ks = [1, 3, 5, 10, 20]
        for run_name, runs in entry["runs"].items():
            means = [mean_std([run[f"hr@{k}"] for run in runs])[0] for k in ks]
            axis.plot(ks, means, marker="o", label=NAMES.get(run_name, run_name))
        for baseline, metrics in entry["baselines"].items():
            axis.plot(ks, [metrics[f"hr@{k}"] for k in ks], linestyle="--", label=baseline)
        axis.set_xscale("log")
        axis.set_xlabel("K")
        axis.set_ylabel("test HR@K")
        axis.set_title(f"{name}: HR@K")
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = out / f"{name}_hr_at_k.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths


def write_report(report: dict, out: Path) -> Path:
    sections = [
        "# Results",
        "",
        f"Produced by `{report['command']}`. Model selection on the validation split (best "
        "val/NDCG@10 checkpoint); each number is the full test split, evaluated once.",
        "",
    ]
    for name, entry in report["datasets"].items():
        sections += [dataset_table(name, entry), ""]
        if entry["sweep"]:
            sections += [sweep_table(name, entry), ""]
    plot(report, out)
    path = out / "results.md"
    path.write_text("\n".join(sections))
    print(path.read_text())
    return path


if __name__ == "__main__":
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results")
    write_report(json.loads((directory / "results.json").read_text()), directory)
