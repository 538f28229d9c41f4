"""Tables, intervals and learning-curve plots of `experiments.study`'s finished runs.

    python -m experiments.study --report     # or: python -m experiments.study_report [out]

Everything is computed from the result files (`experiments.stats`): the selection on
validation by the rule of experiments/README.md, the headline rows with paired bootstrap
intervals over test users, the window sweeps (width K and width 1) with the contrasts of
the aimed K, each run's WPAUC at every swept window, and the first study's grid. The tables
go between the markers of experiments/README.md.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import defaultdict
from pathlib import Path

from experiments.runs import EXPERIMENTS_README, splice_between
from experiments.stats import (
    SWEEP_KS,
    Run,
    config_score,
    group_by_config,
    load_counts,
    load_runs,
    load_starts,
    mean_std,
    paired_difference,
    per_user,
    split_cohorts,
    start_score,
    window_metric,
)
from wpauc.metrics import metric_columns

GATED_TAWIN = "tawin_gated"
"""Plain gated TAWin aimed at K = 10: the base of the window sweeps and variants."""
HEADLINE = {
    "synthetic": (GATED_TAWIN, 3e-4, 0.04),
    "office": ("beam_pauc_gated", 3e-4, 0.04),
    "industrial": (GATED_TAWIN, 3e-4, 0.04),
}
"""The RL row of each data set's headline: the rule's pick on the first study's validation
curves (experiments/README.md, rule 3); its control is `sft_matched` at the same rate."""
CONTROL = "sft_matched"
HEADLINE_METRICS = ("hr@1", "hr@10", "hr@20", "ndcg@10")
ORACLE_METRICS = ("expected_hr@1", "expected_hr@10", "expected_hr@20")
TEST_COLUMNS = ("hr@1", "hr@3", "hr@10", "hr@20", "ndcg@10", "auc")
SWEEP_WIDTHS = ("K", "1")
SHIPPED = {"tawin": "TAWinWPAUC", "beam_pauc": "BeamPAUC", "grpo_auc": "GRPOAUC"}
"""Each shipped objective piece by the objective class whose configurations are its
candidates; a data set runs it as ``configs/<dataset>/rl.yaml`` with that piece."""
# Validation curves drawn, in panel order; a tag no run logged gets no panel.
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


def cell(values: list[float]) -> str:
    """`mean ± std (n)` of one table cell."""
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f} ({len(values)})"


def cell_or_dash(values: list[float]) -> str:
    """`cell`, or "–" where no run logged the metric."""
    return cell(values) if values else "–"


def label(key: tuple[str, float, float]) -> str:
    """`name, lr, β` of a configuration."""
    name, lr, beta = key
    return f"{name} | {lr:g} | {beta:g}"


def interval(found) -> str:
    """A table cell of a paired difference: the interval, and "n.d." when it holds 0."""
    if found is None:
        return "pending"
    diff, _ = found
    mark = " n.d." if diff.holds_zero else ""
    return f"{diff.text()}{mark}"


def per_start_text(found) -> str:
    """The mean difference per SFT start, `s0 +0.0010, s1 ...`."""
    if found is None:
        return ""
    return ", ".join(f"s{seed} {value:+.4f}" for seed, value in found[1].items())


# ---------------------------------------------------------------- selection
def selection_table(
    dataset: str, runs: list[Run], cohort: str, start_value: float | None
) -> list[str]:
    """Every configuration of a cohort: the rule's score (mean selected val/NDCG@10), its
    selected steps, and the test metrics of those steps (mean ± std over runs)."""
    groups = group_by_config(runs)
    ranked = sorted(groups.items(), key=lambda item: -config_score(item[1]))
    # the shown keys the runs hold (every WPAUC window of every run would not fit a page)
    test_columns = [c for c in metric_columns(run.test for run in runs) if c in TEST_COLUMNS]
    lines = [
        f"#### {dataset}, {cohort}: every configuration, by the rule's score",
        "",
        "Score = mean over runs of the selected val/NDCG@10; steps = the selected steps (0:"
        " the start; 99 is the validation after 100 updates)."
        " Test = the selected step, mean ± std (runs).",
        "",
        "| variant | lr | β | score | steps | "
        + " | ".join(c.upper() for c in test_columns)
        + " |",
        "|---|---|---|---|---" + "|---" * len(test_columns) + "|",
    ]
    if start_value is not None:
        lines.append(
            f"| SFT start (step 0) | - | - | {start_value:.4f} | 0 |" + " |" * len(test_columns)
        )
    for key, group in ranked:
        steps = ",".join(str(s) for s in sorted(run.selected_step for run in group))
        tests = [
            cell_or_dash([run.test[c] for run in group if c in run.test]) for c in test_columns
        ]
        lines.append(
            f"| {label(key)} | {config_score(group):.4f} | {steps} | " + " | ".join(tests) + " |"
        )
    return [*lines, ""]


def objective_class(run: Run) -> str | None:
    """The objective class of a run (None: a control)."""
    objective = run.result["objective"]
    return None if objective is None else objective["class_path"].rsplit(".", 1)[1]


def shipped_picks(dataset: str, runs: list[Run], cohort: str) -> list[str]:
    """The rule's pick for each shipped objective piece among its objective's configurations."""
    lines = []
    for config, class_name in SHIPPED.items():
        candidates = {
            k: g for k, g in group_by_config(runs).items() if objective_class(g[0]) == class_name
        }
        if not candidates:
            continue
        key, group = max(candidates.items(), key=lambda item: config_score(item[1]))
        objective = group[0].result["objective"]["init_args"]
        settings = ", ".join(f"{k}={v}" for k, v in objective.items())
        lines.append(
            f"- {config} on `configs/{dataset}/rl.yaml` ({cohort}): {key[0]}, lr {key[1]:g},"
            f" β {key[2]:g}"
            f" ({settings}); score {config_score(group):.4f} of {len(candidates)} candidates"
        )
    return lines


# ---------------------------------------------------------------- headline
def headline_arms(dataset: str, runs: list[Run], starts: dict):
    """`(starts, control runs, RL runs, RL key)` of a data set's headline; the starts those
    runs continue (all when none has finished)."""
    rl_key = HEADLINE[dataset]
    groups = group_by_config(runs)
    rl, control = groups.get(rl_key, []), groups.get((CONTROL, rl_key[1], 0.0), [])
    used = {run.start.sft_seed for run in rl + control}
    starts = {seed: start for seed, start in starts.items() if seed in used or not used}
    return starts, control, rl, rl_key


def summary_table(out: Path) -> list[str]:
    """One table of every data set's headline: the rows' means and the paired differences
    of the RL row (README.md's Results show it)."""
    all_starts = load_starts(out)
    lines = [
        "| data | row | runs | " + " | ".join(m.upper() for m in HEADLINE_METRICS) + " |",
        "|---|---|---" + "|---" * len(HEADLINE_METRICS) + "|",
    ]
    for dataset, runs in load_runs(out).items():
        seeded = split_cohorts(runs)[1]
        if dataset not in HEADLINE or dataset not in all_starts:
            continue
        starts, control, rl, rl_key = headline_arms(dataset, seeded, all_starts[dataset])
        rows = [
            (
                "start",
                len(starts),
                [
                    mean_text([start_metric(s, m) for s in starts.values()])
                    for m in HEADLINE_METRICS
                ],
            ),
            (
                "control",
                len(control),
                [mean_text([run_metric(r, m) for r in control]) for m in HEADLINE_METRICS],
            ),
            (
                "RL",
                len(rl),
                [mean_text([run_metric(r, m) for r in rl]) for m in HEADLINE_METRICS],
            ),
            (
                "Δ RL − start",
                len(rl),
                [
                    interval(paired_difference(rl, None, m)) if rl else "pending"
                    for m in HEADLINE_METRICS
                ],
            ),
            (
                "Δ RL − control",
                len(rl),
                [
                    interval(paired_difference(rl, control, m)) if rl and control else "pending"
                    for m in HEADLINE_METRICS
                ],
            ),
        ]
        for row, count, values in rows:
            lines.append(f"| {dataset} | {row} | {count} | " + " | ".join(values) + " |")
    return [*lines, ""]


def mean_text(values: list[float]) -> str:
    """The mean to 4 decimals, "pending" for no value."""
    return f"{mean_std(values)[0]:.4f}" if values else "pending"


def compared_metrics(counts_paths: list[Path | None]) -> list[str]:
    """The metrics of the paired tables: the headline metrics, and the noise-free expected
    HR@K where the counts hold it (the synthetic world)."""
    has_oracle = any(
        path is not None and "expected_hr" in load_counts(path) for path in counts_paths
    )
    return [*HEADLINE_METRICS, *(ORACLE_METRICS if has_oracle else ())]


def headline(dataset: str, runs: list[Run], starts: dict) -> list[str]:
    """The start, the matched control and the headline RL variant: test metrics and the
    paired differences with their intervals."""
    if dataset not in HEADLINE:
        return []
    starts, control, rl, rl_key = headline_arms(dataset, runs, starts)
    control_key = (CONTROL, rl_key[1], 0.0)
    metrics = compared_metrics([s.counts_path for s in starts.values()])
    lines = [
        f"#### {dataset}: headline (SFT starts {sorted(starts)} x RL seeds; test split)",
        "",
        "| row | runs | " + " | ".join(m.upper() for m in metrics) + " |",
        "|---|---" + "|---" * len(metrics) + "|",
    ]
    start_values = {m: [start_metric(s, m) for s in starts.values()] for m in metrics}
    lines.append(
        "| SFT start | "
        + f"{len(starts)} | "
        + " | ".join(cell(start_values[m]) for m in metrics)
        + " |"
    )
    for name, group in (
        (f"{CONTROL} lr {control_key[1]:g}", control),
        (label(rl_key).replace(" | ", " "), rl),
    ):
        values = [
            cell([run_metric(run, m) for run in group]) if group else "pending" for m in metrics
        ]
        lines.append(f"| {name} | {len(group)} | " + " | ".join(values) + " |")
    lines += [
        "",
        "Paired differences over test users, 95 % bootstrap interval (n.d.: no detectable"
        " difference, the interval holds 0); per SFT start below each.",
        "",
        "| difference | " + " | ".join(m.upper() for m in metrics) + " |",
        "|---" + "|---" * len(metrics) + "|",
    ]
    comparisons = (
        ("RL - start", rl, None),
        ("RL - control", rl, control),
        ("control - start", control, None),
    )
    for name, a, b in comparisons:
        found = {m: paired_difference(a, b, m) if a and (b is None or b) else None for m in metrics}
        lines.append(f"| {name} | " + " | ".join(interval(found[m]) for m in metrics) + " |")
        lines.append(
            "| (per start) | " + " | ".join(per_start_text(found[m]) for m in metrics) + " |"
        )
    return [*lines, ""]


def start_metric(start, metric: str) -> float:
    """A start's test value of `metric` (from its counts for the oracle metrics)."""
    if metric in start.test:
        return start.test[metric]
    return float(per_user(load_counts(start.counts_path), metric).mean())


def run_metric(run: Run, metric: str) -> float:
    """A run's test value of `metric` at its selected step."""
    if metric in run.test:
        return run.test[metric]
    return float(per_user(load_counts(run.counts_path), metric).mean())


def comparisons(dataset: str, runs: list[Run]) -> list[str]:
    """Every configuration of the seeded starts against its starts, against the headline RL
    variant and, for a TAWin configuration where the headline is not gated TAWin, against
    gated TAWin at the same lr and β (the base of the sweeps and window variants); paired
    by start and RL seed: the intervals behind any claim."""
    groups = group_by_config(runs)
    headline_key = HEADLINE.get(dataset)
    metrics = compared_metrics([run.counts_path for run in runs])
    lines = [
        f"#### {dataset}: every configuration against the start, the headline RL row and,"
        " for TAWin where the headline is another objective, gated TAWin",
        "",
        "| configuration | runs | vs | " + " | ".join(m.upper() for m in metrics) + " |",
        "|---|---|---" + "|---" * len(metrics) + "|",
    ]
    for key, group in groups.items():
        references = [("start", None)]
        if key != headline_key and groups.get(headline_key):
            references.append(("headline RL", groups[headline_key]))
        tawin_key = (GATED_TAWIN, *key[1:])
        if (
            objective_class(group[0]) == "TAWinWPAUC"
            and key != tawin_key
            and headline_key != tawin_key
            and groups.get(tawin_key)
        ):
            references.append(("gated TAWin", groups[tawin_key]))
        for against, other in references:
            cells = [interval(paired_difference(group, other, m)) for m in metrics]
            name = label(key).replace(" | ", " ")
            lines.append(f"| {name} | {len(group)} | {against} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# ---------------------------------------------------------------- steering
def sweep_runs(runs: list[Run]) -> dict[tuple[str, float, float], dict[tuple[str, int], list[Run]]]:
    """Gated-TAWin sweep runs by (form, lr, β), then by (width "K" or "1", aimed K)."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        objective = run.result["objective"]
        if objective is None or objective_class(run) != "TAWinWPAUC":
            continue
        args = objective["init_args"]
        if set(args) - {"target_k", "window_width", "gate"}:
            continue  # a variant of the window (logistic pairs, tail negatives), not a sweep point
        k, width = args["target_k"], args["window_width"]
        form = "gated" if args.get("gate") == "beam" else "original"
        key = (form, run.result["lr"], run.result.get("beta", 0.0))
        if width == k:
            groups[key][("K", k)].append(run)
        if width == 1:
            groups[key][("1", k)].append(run)
    return {key: dict(by) for key, by in sorted(groups.items()) if len(by) >= 2}


def steering(dataset: str, runs: list[Run]) -> list[str]:
    """Per sweep: test HR@K of each aimed K, and the paired contrast of the aimed K's HR@K
    against each other aimed K's (with the expected HR@K on the synthetic world)."""
    lines = []
    for (form, lr, beta), by in sweep_runs(runs).items():
        for width in SWEEP_WIDTHS:
            aimed = {k: by[(width, k)] for k in SWEEP_KS if (width, k) in by}
            if len(aimed) < 2:
                continue
            # the arms' means are compared: only the starts every arm continues
            shared = set.intersection(*({r.pair[0] for r in g} for g in aimed.values()))
            aimed = {k: [r for r in g if r.pair[0] in shared] for k, g in aimed.items()}
            window = "[K-1, 2K-1)" if width == "K" else "[K-1, K) (exactly HR@K)"
            lines += [
                f"#### {dataset}: TAWin {form}, lr {lr:g}, β {beta:g}, window {window}",
                "",
                "| aimed at K | " + " | ".join(f"HR@{k}" for k in SWEEP_KS) + " |",
                "|---" * (len(SWEEP_KS) + 1) + "|",
            ]
            for k, group in aimed.items():
                lines.append(
                    f"| {k} | "
                    + " | ".join(cell([run.test[f"hr@{j}"] for run in group]) for j in SWEEP_KS)
                    + " |"
                )
            if any(r.start is None for g in aimed.values() for r in g):
                lines.append("")
                continue  # the first study saved no counts: no paired contrasts
            oracle = all(
                "expected_hr" in load_counts(r.counts_path)
                for g in aimed.values()
                for r in g
                if r.counts_path
            )
            metrics = {"HR": lambda k: f"hr@{k}"}
            if oracle:
                metrics["EXPECTED_HR"] = lambda k: f"expected_hr@{k}"
            if width == "K":  # the window each run optimises (at width 1 it is HR@K itself)
                metrics["WPAUC"] = lambda k: window_metric(k, k)
            lines += [
                "",
                "Contrast: the aimed K's own metric at K minus the same metric of the run aimed at"
                " K' (paired over users; n.d. = no detectable difference).",
                "",
                "| metric of the aimed K | "
                + " | ".join(f"minus aimed at {k}" for k in aimed)
                + " |",
                "|---" * (len(aimed) + 1) + "|",
            ]
            for name, metric_of in metrics.items():
                for k, group in aimed.items():
                    cells = [
                        "-"
                        if other == k
                        else interval(paired_difference(group, aimed[other], metric_of(k)))
                        for other in aimed
                    ]
                    shown = f"WPAUC[{k - 1},{2 * k - 1})" if name == "WPAUC" else f"{name}@{k}"
                    lines.append(f"| {shown} (aimed at {k}) | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def window_matrix(dataset: str, runs: list[Run], starts: dict) -> list[str]:
    """Test WPAUC of every configuration (and the start) at every swept window, from the
    saved counts: the objective x window matrix."""
    windows = [(k, k) for k in SWEEP_KS] + [(k, 1) for k in SWEEP_KS if k > 1]
    names = [f"[{k - 1},{k - 1 + w})" for k, w in windows]
    configs = group_by_config(runs)
    # means are compared across rows: only the starts every configuration continues
    shared = set(starts).intersection(*({r.pair[0] for r in g} for g in configs.values()))
    lines = [
        f"#### {dataset}: test WPAUC at every swept window (negative-ranks [lo, hi)),"
        f" mean over the runs from SFT start(s) {sorted(shared)}",
        "",
        "| configuration | runs | " + " | ".join(names) + " |",
        "|---|---" + "|---" * len(names) + "|",
    ]
    rows = [("SFT start", [starts[seed].counts_path for seed in sorted(shared)])]
    for key, group in configs.items():
        paths = [r.counts_path for r in group if r.pair[0] in shared and r.counts_path]
        if paths:
            rows.append((label(key).replace(" | ", " "), paths))
    for name, paths in rows:
        values = []
        for k, w in windows:
            per_run = [float(per_user(load_counts(p), window_metric(k, w)).mean()) for p in paths]
            values.append(f"{mean_std(per_run)[0]:.4f}")
        lines.append(f"| {name} | {len(paths)} | " + " | ".join(values) + " |")
    return [*lines, ""]


# ---------------------------------------------------------------- curves
def mean_curve(results: list[dict], tag: str) -> tuple[list[int], list[float]]:
    """`(steps, mean over runs)` of one logged scalar."""
    steps_values: dict[int, list[float]] = defaultdict(list)
    for result in results:
        for step, value in result["curves"].get(tag, []):
            steps_values[step].append(value)
    steps = sorted(steps_values)
    return steps, [mean_std(steps_values[s])[0] for s in steps]


def plot_curves(groups: dict[tuple[str, float, float], list[Run]], title: str, path: Path) -> Path:
    """One panel per logged `CURVES` tag, one line (mean over runs) per configuration; the
    legend beside the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    results = {key: [run.result for run in group] for key, group in groups.items()}
    tags = [t for t in CURVES if any(t in r["curves"] for rs in results.values() for r in rs)]
    rows = math.ceil(len(tags) / PANEL_COLUMNS)
    figure, axes = plt.subplots(
        rows, PANEL_COLUMNS, figsize=(4 * PANEL_COLUMNS + 3, 3.2 * rows), squeeze=False
    )
    styles = itertools.cycle(("-", "--", ":", "-."))
    for index, (key, rs) in enumerate(results.items()):
        style = {"color": palette[index % len(palette)], "linestyle": next(styles)}
        for axis, tag in zip(axes.flat, tags, strict=False):
            steps, means = mean_curve(rs, tag)
            if steps:
                axis.plot(steps, means, marker=".", label=label(key).replace(" | ", " "), **style)
    for axis, tag in zip(axes.flat, tags, strict=False):
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


# ---------------------------------------------------------------- the report
README_START = "<!-- study tables: written by `python -m experiments.study --report` -->"
README_END = "<!-- end of study tables -->"


def report_lines(out: Path) -> list[str]:
    """Every generated section, data set by data set."""
    all_starts = load_starts(out)
    lines = [
        "### Summary: the headline rows",
        "",
        "Test split; means over runs; Δ = paired difference over test users with its 95 %"
        " bootstrap interval (n.d.: no detectable difference).",
        "",
        *summary_table(out),
    ]
    for dataset, runs in load_runs(out).items():
        first, seeded = split_cohorts(runs)
        starts = all_starts.get(dataset, {})
        lines += [f"### {dataset}", ""]
        if seeded:
            seeds = sorted({run.pair[1] for run in seeded})
            value = start_score(list(starts.values()), seeds)
            lines += headline(dataset, seeded, starts)
            lines += comparisons(dataset, seeded)
            lines += steering(dataset, seeded)
            lines += window_matrix(dataset, seeded, starts)
            lines += selection_table(dataset, seeded, "from the seeded SFT starts", value)
            lines += shipped_picks(dataset, seeded, "seeded starts") + [""]
            name = f"{dataset}_starts_curves.png"
            plot_curves(
                group_by_config(seeded), f"{dataset}: runs from the seeded SFT starts", out / name
            )
            lines += [f"![{dataset} validation curves, seeded starts](results/study/{name})", ""]
        if first:
            again = first[0].reproduced_start
            cohort = "first study (one SFT start, 3 RL seeds, step 0 not measured)"
            value = None
            if again is not None:
                cohort = (
                    f"first study (one SFT start, 3 RL seeds; step 0: start {again.sft_seed} of"
                    " this study, which reproduces it)"
                )
                value = start_score([again], sorted({run.pair[1] for run in first}))
            lines += selection_table(dataset, first, cohort, value)
            lines += shipped_picks(dataset, first, "first study") + [""]
            lines += steering(dataset, first)
            name = f"{dataset}_curves.png"
            plot_curves(group_by_config(first), f"{dataset}: the first study's runs", out / name)
            lines += [f"![{dataset} validation curves, first study](results/study/{name})", ""]
    return lines


def write_study_report(out: Path, readme: Path) -> Path:
    """Replace the tables between `readme`'s markers by the report; print it."""
    body = "\n".join(report_lines(out))
    splice_between(readme, README_START, README_END, body)
    print(body)
    return readme


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("experiments/results/study")
    write_study_report(out, EXPERIMENTS_README)
