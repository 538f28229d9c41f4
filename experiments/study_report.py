"""Tables and learning-curve plots of `experiments.study`'s finished runs.

python -m experiments.study --report     # or: python -m experiments.study_report [out]
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

TEST_COLUMNS = ("hr@1", "hr@3", "hr@10", "hr@20", "ndcg@10", "auc")
# Validation curves drawn, in panel order; a tag no run logged (the oracle's on real data,
# AUC under a rank cap) gets no panel.
CURVES = (
    "val/hr@1",
    "val/hr@3",
    "val/hr@10",
    "val/hr@20",
    "val/ndcg@10",
    "val/auc",
    "val/kl_to_oracle",
    "val/oracle_rank_corr",
    "val/entropy",
    "val/top1_prob",
)
PANEL_COLUMNS = 4
SWEEP_COLUMNS = ("hr@1", "hr@3", "hr@10", "hr@20")


def load_results(out: Path) -> dict[str, list[dict]]:
    """Finished runs by dataset."""
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(out.glob("*/*/result.json")):
        result = json.loads(path.read_text())
        by_dataset[result["dataset"]].append(result)
    return by_dataset


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(values: list[float], bold: bool = False) -> str:
    """`mean ± std (n)` of one table cell."""
    mean, std = mean_std(values)
    text = f"{mean:.4f} ± {std:.4f} ({len(values)})"
    return f"**{text}**" if bold else text


def group_runs(results: list[dict]) -> dict[tuple[str, float, float], list[dict]]:
    """Runs by (name, learning rate, KL weight), seeds together."""
    groups: dict[tuple[str, float, float], list[dict]] = defaultdict(list)
    for result in results:
        groups[(result["name"], result["lr"], result.get("beta", 0.0))].append(result)
    return dict(sorted(groups.items()))


def main_table(dataset: str, results: list[dict], start: dict) -> list[str]:
    """Test metrics of the main comparison, mean ± std over seeds (number of seeds)."""
    lines = [
        f"#### {dataset}: RL from the SFT checkpoint (test split, best val/NDCG@10 step)",
        "",
        "| run | lr | KL weight | " + " | ".join(c.upper() for c in TEST_COLUMNS) + " |",
        "|---|---|---" + "|---" * len(TEST_COLUMNS) + "|",
        "| SFT start | - | - | "
        + " | ".join(f"{start.get(f'test/{c}', float('nan')):.4f}" for c in TEST_COLUMNS)
        + " |",
    ]
    for (name, lr, beta), runs in group_runs(results).items():
        if name.startswith("sweep_"):
            continue
        cells = [cell([run["test"][c] for run in runs]) for c in TEST_COLUMNS]
        lines.append(f"| {name} | {lr:g} | {beta:g} | " + " | ".join(cells) + " |")
    return lines


def sweep_form(result: dict) -> tuple[str, int] | None:
    """`(form, K)` of a window-sweep run (TAWin with window_width = target_k), else None."""
    objective = result["objective"]
    if objective is None:
        return None
    init_args = objective["init_args"]
    if not objective["class_path"].endswith("TAWinWPAUC") or "pairwise" in init_args:
        return None
    if init_args.get("window_width") != init_args.get("target_k"):
        return None
    form = "gated (positive in the beam)" if init_args.get("gate") == "beam" else "original"
    return form, init_args["target_k"]


def sweep_groups(results: list[dict]) -> dict[tuple[str, float, float], dict[int, list[dict]]]:
    """Window-sweep runs by (form, learning rate, KL weight), then by aimed K; only the
    groups aimed at two K or more (a lone K = 10 run belongs to the main comparison)."""
    groups: dict[tuple[str, float, float], dict[int, list[dict]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for result in results:
        form = sweep_form(result)
        if form is not None:
            groups[(form[0], result["lr"], result.get("beta", 0.0))][form[1]].append(result)
    return {group: dict(by_k) for group, by_k in sorted(groups.items()) if len(by_k) >= 2}


def sweep_table(dataset: str, results: list[dict], start: dict) -> list[str]:
    """Target-K x measured HR@K of the window sweep; the diagonal (HR at the aimed K) bold."""
    lines = []
    for (form, lr, beta), by_k in sweep_groups(results).items():
        anchor = f", KL weight {beta:g}" if beta else ""
        lines += [
            f"#### {dataset}: TAWin {form} aimed at K (window ranks [K-1, 2K-1)), "
            f"lr {lr:g}{anchor}: test HR@K, mean ± std (seeds); bold = the aimed K",
            "",
            "| aimed at K | " + " | ".join(c.upper() for c in SWEEP_COLUMNS) + " |",
            "|---" * (len(SWEEP_COLUMNS) + 1) + "|",
            "| SFT start | "
            + " | ".join(f"{start.get(f'test/{c}', float('nan')):.4f}" for c in SWEEP_COLUMNS)
            + " |",
        ]
        for k in sorted(by_k):
            cells = [
                cell([run["test"][c] for run in by_k[k]], bold=(c == f"hr@{k}"))
                for c in SWEEP_COLUMNS
            ]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def mean_curve(runs: list[dict], tag: str, start: dict) -> tuple[list[int], list[float]]:
    """`(steps, mean over seeds)` of one logged scalar; step 0 is the SFT start when known."""
    steps_values: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, value in run["curves"].get(tag, []):
            steps_values[step].append(value)
    steps = sorted(steps_values)
    means = [mean_std(steps_values[s])[0] for s in steps]
    if steps and tag in start:
        return [0, *steps], [start[tag], *means]
    return steps, means


def plot_groups(
    lines: list[tuple[str, list[dict], dict]], start: dict, title: str, path: Path
) -> Path:
    """One panel per logged `CURVES` tag, one line per `(label, runs, line style)`; the
    legend beside the panels, so no curve hides behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = [t for t in CURVES if any(t in run["curves"] for _, runs, _ in lines for run in runs)]
    rows = math.ceil(len(tags) / PANEL_COLUMNS)
    figure, axes = plt.subplots(
        rows, PANEL_COLUMNS, figsize=(4 * PANEL_COLUMNS + 3, 3.2 * rows), squeeze=False
    )
    for axis, tag in zip(axes.flat, tags, strict=False):
        for label, runs, style in lines:
            steps, means = mean_curve(runs, tag, start)
            if steps:
                axis.plot(steps, means, marker=".", label=label, **style)
        axis.set_title(tag)
        axis.set_xlabel("RL step")
    for axis in axes.flat[len(tags) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=7)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1 - 2.8 / figure.get_figwidth(), 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(dataset: str, results: list[dict], start: dict, out: Path) -> list[Path]:
    """Validation curves (mean over seeds): `<dataset>_curves.png`, the main comparison (a
    colour per run group), and `<dataset>_sweep_curves.png`, the window sweep (a colour per
    aimed K, a line style per form, learning rate and KL weight)."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    main_groups = [
        (k, runs) for k, runs in group_runs(results).items() if not k[0].startswith("sweep_")
    ]
    main = [
        (f"{name} {lr:g}{beta_label(beta)}", runs, {"color": palette[i % len(palette)]})
        for i, ((name, lr, beta), runs) in enumerate(main_groups)
    ]
    title = f"{dataset}: RL from the SFT checkpoint"
    paths = [plot_groups(main, start, title, out / f"{dataset}_curves.png")]
    groups = sweep_groups(results)
    if groups:
        aimed = sorted({k for by_k in groups.values() for k in by_k})
        colours = {k: palette[2 * i % len(palette)] for i, k in enumerate(aimed)}
        sweep = [
            (
                f"{form.split()[0]} {lr:g}{beta_label(beta)} K={k}",
                runs,
                {"color": colours[k], "linestyle": linestyle},
            )
            for ((form, lr, beta), by_k), linestyle in zip(
                groups.items(), itertools.cycle(("-", "--", ":", "-.")), strict=False
            )
            for k, runs in sorted(by_k.items())
        ]
        title = f"{dataset}: TAWin aimed at K (colour); form, lr, KL weight (line style)"
        paths.append(plot_groups(sweep, start, title, out / f"{dataset}_sweep_curves.png"))
    return paths


def beta_label(beta: float) -> str:
    """The KL weight in a legend label, only when it is not the default 0."""
    return f" β={beta:g}" if beta else ""


README_START = "<!-- study tables: written by `python -m experiments.study --report` -->"
README_END = "<!-- end of study tables -->"


def write_study_report(out: Path, readme: Path | None = None) -> Path:
    """Write `<out>/study.md` and the curve plots; print the tables. With `readme`, also
    replace the tables between its `README_START` and `README_END` markers."""
    sections = ["# RL study", ""]
    for dataset, results in load_results(out).items():
        start_file = out / dataset / "sft_start.json"
        start = json.loads(start_file.read_text()) if start_file.exists() else {}
        sections += main_table(dataset, results, start) + [""]
        sections += sweep_table(dataset, results, start)
        for path in plot_curves(dataset, results, start, out):
            sections += [f"![{dataset} validation curves]({path.name})", ""]
    path = out / "study.md"
    path.write_text("\n".join(sections))
    print(path.read_text())
    if readme is not None:
        splice_tables(readme, sections[2:], out)
    return path


def splice_tables(readme: Path, lines: list[str], out: Path) -> None:
    """Put the study's tables into `readme` between the markers (image paths made relative
    to the README)."""
    folder = out.resolve().relative_to(readme.resolve().parent)
    body = "\n".join(lines).replace("](", f"]({folder.as_posix()}/")
    splice_between(readme, README_START, README_END, body)


def splice_between(readme: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the marker lines `start` and `end` of `readme` by `body`."""
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme}: the markers {start!r} / {end!r} are missing")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}")


if __name__ == "__main__":
    write_study_report(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path("experiments/results/study")
    )
