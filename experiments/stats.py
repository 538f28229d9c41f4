"""Runs, seeds and statistics of the RL study, written once for the report and the tests.

- **Runs**: every `result.json` under the study folder, grouped by configuration (variant,
  learning rate, KL weight); the SFT starts (`sft_seed<k>/result.json`) by SFT seed.
- **Selection on validation only** (the rule of experiments/README.md): a run's selected
  step is the step of its highest val/NDCG@10 among 0 (the SFT start, measured on the run's
  own validation subset) and every logged validation, ties to the earlier step; a
  configuration's score is the mean over its runs of that value. Test numbers are read only
  for the selected step.
- **Statistics**: mean and sample std over seeds; per-user metrics from the saved test
  counts (`wpauc.callbacks.TestRanksWriter`); paired bootstrap intervals and sign tests
  over test users.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SELECTION_METRIC = "val/ndcg@10"
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0


# ---------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Difference:
    """A paired difference `a - b` of per-user means with its bootstrap interval."""

    mean: float
    low: float
    high: float
    wins: int
    """Users with a higher value under `a`."""
    losses: int
    """Users with a lower value under `a`."""
    sign_p: float
    """Two-sided exact sign test over the users that differ."""

    @property
    def holds_zero(self) -> bool:
        """True when the interval holds 0: no detectable difference."""
        return self.low <= 0.0 <= self.high

    def text(self) -> str:
        """`+0.0012 [-0.0003, +0.0027]`."""
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """`(mean(a - b), low, high)`: the percentile interval of the mean paired difference
    when the users (the rows of `a` and `b`, one value each) are resampled with replacement."""
    diff = _paired(a, b)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(diff))  # bounded memory for large test splits
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        rows = rng.integers(0, len(diff), size=(stop - start, len(diff)))
        means[start:stop] = diff[rows].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diff.mean()), float(low), float(high)


def sign_test(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """`(wins, losses, p)`: users with `a > b`, with `a < b`, and the two-sided exact
    binomial p-value of that split under "either is equally likely" (ties dropped)."""
    diff = _paired(a, b)
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 0, 0, 1.0
    # P(X <= k) for X ~ Binomial(n, 1/2), in log space (n can be thousands)
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return wins, losses, min(1.0, 2.0 * tail)


def difference(a: np.ndarray, b: np.ndarray) -> Difference:
    """The paired bootstrap interval and the sign test of `a - b` over users."""
    mean, low, high = paired_bootstrap(a, b)
    wins, losses, p = sign_test(a, b)
    return Difference(mean, low, high, wins, losses, p)


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(
            f"paired values must be two 1-D arrays of one length, got {a.shape} and {b.shape}"
        )
    return a - b


# ---------------------------------------------------------------- per-user metrics
@functools.lru_cache(maxsize=1024)
def load_counts(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a `TestRanksWriter` file (cached: the report reads each many times)."""
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}


def per_user(counts: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """`[S]` per-test-context values of `metric` from saved counts: `hr@K`, `ndcg@K`, `auc`,
    `wpauc@ranks[lo,hi)` (the FPR window covering negative-ranks lo..hi-1) or, on the
    synthetic world, `expected_hr@K`."""
    import torch

    from wpauc.metrics.functional import (
        PositiveRanks,
        auc_from_ranks,
        hit_rate_from_ranks,
        ndcg_from_ranks,
        windowed_partial_auc_from_ranks,
    )

    if metric.startswith("expected_hr@"):
        if "expected_hr" not in counts:
            raise ValueError(
                f"{metric}: these counts hold no expected_hr (not the synthetic world)"
            )
        ks = list(counts["oracle_ks"])
        k = int(metric.split("@")[1])
        if k not in ks:
            raise ValueError(f"{metric}: expected_hr was saved for K in {ks} only")
        return counts["expected_hr"][:, ks.index(k)].astype(np.float64)
    n = int(counts["num_negatives"])
    ranks = PositiveRanks(
        torch.from_numpy(counts["gt"].astype(np.int64)),
        torch.from_numpy(counts["ge"].astype(np.int64)),
        n,
    )
    name, _, argument = metric.partition("@")
    if name == "hr":
        values = hit_rate_from_ranks(ranks, int(argument))
    elif name == "ndcg":
        values = ndcg_from_ranks(ranks, int(argument))
    elif name == "auc":
        values = auc_from_ranks(ranks)
    elif name == "wpauc" and argument.startswith("ranks["):
        low, high = (int(x) for x in argument.removeprefix("ranks[").rstrip(")").split(","))
        values = windowed_partial_auc_from_ranks(ranks, low / n, (high - low) / n)
    else:
        raise ValueError(f"unknown per-user metric {metric!r}")
    return values.double().numpy()


SWEEP_KS = (1, 3, 10, 20)
"""The aimed K of the study's window sweeps (`experiments.study`'s plans, the report's tables)."""


def window_metric(target_k: int, width: int) -> str:
    """The `per_user` name of the WPAUC over TAWin's window aimed at K: ranks [K-1, K-1+w)."""
    return f"wpauc@ranks[{target_k - 1},{target_k - 1 + width})"


# ---------------------------------------------------------------- runs and selection
@dataclass
class Start:
    """One SFT start: its validation per data seed, its test metrics and counts."""

    dataset: str
    sft_seed: int
    val_by_data_seed: dict[int, dict[str, float]]
    test: dict[str, float]
    folder: Path

    @property
    def counts_path(self) -> Path:
        """The start's saved test counts."""
        return self.folder / "test_ranks.npz"


@dataclass
class Run:
    """One RL (or control) run and its selection on validation."""

    result: dict
    folder: Path
    start: Start | None = None
    """The SFT start it continues (None for the first study's runs, whose start is gone)."""
    reproduced_start: Start | None = None
    """For a first-study run: this study's start when it reproduces the first study's start
    (`reproduced_start`), so that step 0 is a candidate there too; not used for pairing."""
    selected_step: int = field(init=False)
    selected_value: float = field(init=False)

    def __post_init__(self) -> None:
        curve = [(int(s), float(v)) for s, v in self.result["curves"].get(SELECTION_METRIC, [])]
        step0 = self.step0_value
        if step0 is not None:
            curve = [(0, step0), *curve]
        if not curve:
            raise ValueError(f"{self.folder / 'result.json'}: no {SELECTION_METRIC} curve")
        best = max(value for _, value in curve)
        self.selected_step = min(step for step, value in curve if value == best)
        self.selected_value = best

    @property
    def step0_start(self) -> Start | None:
        """The start whose validation is this run's step 0, when measured."""
        return self.start or self.reproduced_start

    @property
    def step0_value(self) -> float | None:
        """The start's val/NDCG@10 on this run's validation subset, when measured."""
        seed = int(self.result["seed"])
        if self.step0_start is None or seed not in self.step0_start.val_by_data_seed:
            return None
        return self.step0_start.val_by_data_seed[seed][SELECTION_METRIC]

    @property
    def key(self) -> tuple[str, float, float]:
        """The configuration: (variant, learning rate, KL weight)."""
        return self.result["name"], self.result["lr"], self.result.get("beta", 0.0)

    @property
    def pair(self) -> tuple[int | None, int]:
        """(SFT seed, RL seed): runs of two configurations with one pair are paired."""
        return self.result.get("sft_seed"), int(self.result["seed"])

    @property
    def test(self) -> dict[str, float]:
        """Test metrics of the selected step (the start's when it is step 0)."""
        if self.selected_step == 0:
            return self.step0_start.test
        return self.result["test"]

    @property
    def counts_path(self) -> Path | None:
        """Saved test counts of the selected step, None where the run saved none."""
        if self.selected_step == 0:
            return self.step0_start.counts_path
        path = self.folder / "test_ranks.npz"
        return path if path.exists() else None


def load_starts(out: Path) -> dict[str, dict[int, Start]]:
    """SFT starts by dataset and SFT seed (those with a result)."""
    starts: dict[str, dict[int, Start]] = defaultdict(dict)
    for path in sorted(out.glob("*/sft_seed*/result.json")):
        record = json.loads(path.read_text())
        val = {int(seed): metrics for seed, metrics in record["val_by_data_seed"].items()}
        start = Start(record["dataset"], record["sft_seed"], val, record["test"], path.parent)
        starts[start.dataset][start.sft_seed] = start
    return dict(starts)


REPRODUCED_KEYS = ("hr@1", "hr@10", "hr@20", "ndcg@10", "auc")


def reproduced_start(out: Path, dataset: str, starts: dict[int, Start]) -> Start | None:
    """This study's start that reproduces the first study's (`<dataset>/sft_start.json`):
    the same recipe and seed, and the same test metrics to 1e-6; None if none does."""
    path = out / dataset / "sft_start.json"
    if not path.exists():
        return None
    first = json.loads(path.read_text())
    for start in starts.values():
        if all(
            abs(start.test.get(key, math.inf) - first.get(f"test/{key}", math.nan)) < 1e-6
            for key in REPRODUCED_KEYS
        ):
            return start
    return None


def load_runs(out: Path) -> dict[str, list[Run]]:
    """Every finished run by dataset, each tied to its SFT start where it names one (a
    first-study run to the start that reproduces its own, for step 0)."""
    starts = load_starts(out)
    reproduced = {ds: reproduced_start(out, ds, by_seed) for ds, by_seed in starts.items()}
    runs: dict[str, list[Run]] = defaultdict(list)
    for path in sorted(out.glob("*/*/result.json")):
        if path.parent.name.startswith("sft_seed"):
            continue
        result = json.loads(path.read_text())
        start = None
        if result.get("sft_seed") is not None:
            start = starts.get(result["dataset"], {}).get(result["sft_seed"])
            if start is None:
                raise ValueError(f"{path}: its start sft_seed{result['sft_seed']} has no result")
        again = reproduced.get(result["dataset"]) if start is None else None
        runs[result["dataset"]].append(Run(result, path.parent, start, again))
    return dict(runs)


def group_by_config(runs: list[Run]) -> dict[tuple[str, float, float], list[Run]]:
    """Runs by configuration, in name order (runs of one cohort: see `split_cohorts`)."""
    groups: dict[tuple[str, float, float], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    return dict(sorted(groups.items()))


def split_cohorts(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(the first study's runs: one SFT start, gone, no counts; the runs from this study's
    seeded starts)."""
    return [r for r in runs if r.start is None], [r for r in runs if r.start is not None]


def config_score(runs: list[Run]) -> float:
    """The rule's score of a configuration: mean selected val/NDCG@10 over its runs."""
    return mean_std([run.selected_value for run in runs])[0]


def start_score(starts: Sequence[Start], seeds: Sequence[int]) -> float:
    """The rule's score of "no RL": the starts' mean val/NDCG@10 over the RL seeds' subsets."""
    return mean_std([s.val_by_data_seed[seed][SELECTION_METRIC] for s in starts for seed in seeds])[
        0
    ]


def paired_difference(
    a: list[Run], b: list[Run] | None, metric: str
) -> tuple[Difference, dict[int, float]] | None:
    """`a - b` of `metric` per test user, each user's difference averaged over the run pairs
    (same SFT start and RL seed; `b` None: each run of `a` against its own start), with the
    bootstrap interval and the sign test; and the mean difference per SFT start. None when
    no pair has counts."""
    by_pair = {run.pair: run for run in (b or [])}
    pairs = []
    for run in a:
        other = run.start if b is None else by_pair.get(run.pair)
        if other is not None and run.counts_path is not None and other.counts_path is not None:
            pairs.append((run, other))
    if not pairs:
        return None
    per_pair = [
        (
            run.pair[0],
            per_user(load_counts(run.counts_path), metric)
            - per_user(load_counts(other.counts_path), metric),
        )
        for run, other in pairs
    ]
    diff = np.mean([d for _, d in per_pair], axis=0)
    by_start: dict[int, list[float]] = defaultdict(list)
    for sft_seed, d in per_pair:
        by_start[sft_seed].append(float(d.mean()))
    per_start = {seed: mean_std(values)[0] for seed, values in sorted(by_start.items())}
    return difference(diff, np.zeros_like(diff)), per_start


def seed_averaged(paths: Sequence[Path], metric: str) -> np.ndarray:
    """`[S]` per-user `metric` averaged over the runs whose counts are at `paths` (one
    test split: every file must hold the same contexts)."""
    arrays = []
    for path in paths:
        counts = load_counts(path)
        if arrays and len(counts["sample_index"]) != len(arrays[0]):
            raise ValueError(
                f"{path}: {len(counts['sample_index'])} test contexts, not {len(arrays[0])}"
            )
        arrays.append(per_user(counts, metric))
    return np.mean(arrays, axis=0)
