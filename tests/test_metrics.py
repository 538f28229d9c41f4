"""Ranking metrics against independent oracles: brute-force counting, torchmetrics
retrieval metrics, sklearn's roc_auc_score and its roc_curve integrated over the window."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torchmetrics.functional.retrieval import retrieval_hit_rate, retrieval_normalized_dcg

from wpauc.metrics import (
    AUC,
    DEFAULT_METRICS,
    NDCG,
    HitRate,
    PositiveRanks,
    RankingMetrics,
    TopKSpec,
    WindowedPartialAUC,
    WPAUCSpec,
    auc,
    hit_rate,
    metric_columns,
    metric_spec,
    ndcg,
    positive_ranks,
    windowed_partial_auc,
)

NUM_USERS = 48
NUM_ITEMS = 41  # n = 40 negatives, so windows on multiples of 1/40 hit the ROC's kinks
WINDOWS = [
    (0.0, 1.0),
    (0.0, 0.1),
    (0.05, 0.1),
    (0.025, 0.05),
    (0.013, 0.071),
    (0.3, 0.7),
    (0.9, 0.1),
]


def make_batch(ties: bool, seed: int, num_users: int = NUM_USERS, num_items: int = NUM_ITEMS):
    """Random ``(scores [B, N] float64, target [B])``. With ``ties``, scores are small
    integers, so most positives tie with several negatives; without, they are continuous.
    The positive gets a random boost so its rank covers the whole range."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(num_items, (num_users,), generator=generator)
    rows = torch.arange(num_users)
    if ties:
        scores = torch.randint(0, 6, (num_users, num_items), generator=generator).double()
        scores[rows, target] += torch.randint(0, 3, (num_users,), generator=generator).double()
    else:
        scores = torch.randn(num_users, num_items, generator=generator, dtype=torch.float64)
        scores[rows, target] += 3 * torch.rand(num_users, generator=generator, dtype=torch.float64)
    return scores, target


def labels_of(target: torch.Tensor, num_items: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, num_items).bool()


def roc_window_mean(labels: np.ndarray, scores: np.ndarray, alpha: float, d: float) -> float:
    """Mean TPR over FPR [alpha, alpha + d] of sklearn's ROC curve, integrating each linear
    segment exactly over its overlap with the window (vertical segments add nothing)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    low, high = alpha, min(alpha + d, 1.0)
    area = 0.0
    for x0, x1, y0, y1 in zip(fpr[:-1], fpr[1:], tpr[:-1], tpr[1:], strict=True):
        start, end = max(x0, low), min(x1, high)
        if end > start:
            y_start, y_end = np.interp([start, end], [x0, x1], [y0, y1])
            area += (end - start) * (y_start + y_end) / 2
    return area / (high - low)


@pytest.mark.parametrize("ties", [False, True])
def test_positive_ranks_match_brute_force(ties):
    scores, target = make_batch(ties, seed=0)
    ranks = positive_ranks(scores, target)
    for user, (row, column) in enumerate(zip(scores.tolist(), target.tolist(), strict=True)):
        others = row[:column] + row[column + 1 :]
        assert ranks.gt[user] == sum(score > row[column] for score in others)
        assert ranks.ge[user] == sum(score >= row[column] for score in others)
    assert ranks.num_negatives == NUM_ITEMS - 1


@pytest.mark.parametrize("k", [1, 3, 10, 40, 41, 100])
def test_hit_rate_and_ndcg_match_torchmetrics_without_ties(k):
    scores, target = make_batch(ties=False, seed=1)
    labels = labels_of(target, NUM_ITEMS)
    expected_hr = torch.stack(
        [retrieval_hit_rate(s, y, top_k=k) for s, y in zip(scores, labels, strict=True)]
    )
    expected_ndcg = torch.stack(
        [retrieval_normalized_dcg(s, y, top_k=k) for s, y in zip(scores, labels, strict=True)]
    )
    torch.testing.assert_close(hit_rate(scores, target, k), expected_hr.float())
    torch.testing.assert_close(ndcg(scores, target, k), expected_ndcg.float())
    assert 0 < expected_hr.sum() < NUM_USERS or k >= NUM_ITEMS  # the data exercise both outcomes


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_ties_count_against_the_positive(k):
    """On integer scores, our metrics equal torchmetrics' on scores where the positive is
    moved just below the negatives it ties with (a gap of 1 separates distinct scores)."""
    scores, target = make_batch(ties=True, seed=2)
    labels = labels_of(target, NUM_ITEMS)
    pessimistic = scores - 0.5 * labels
    expected_hr = torch.stack(
        [retrieval_hit_rate(s, y, top_k=k) for s, y in zip(pessimistic, labels, strict=True)]
    )
    expected_ndcg = torch.stack(
        [retrieval_normalized_dcg(s, y, top_k=k) for s, y in zip(pessimistic, labels, strict=True)]
    )
    torch.testing.assert_close(hit_rate(scores, target, k), expected_hr.float())
    torch.testing.assert_close(ndcg(scores, target, k), expected_ndcg.float())
    assert (positive_ranks(scores, target).ge > positive_ranks(scores, target).gt).any()


def test_constant_scores_earn_nothing_at_the_top_and_half_the_auc():
    scores, target = torch.zeros(4, 9), torch.tensor([0, 3, 8, 5])
    assert hit_rate(scores, target, 8).eq(0).all()
    assert ndcg(scores, target, 8).eq(0).all()
    assert hit_rate(scores, target, 9).eq(1).all()  # K > n: every item is in the top K
    torch.testing.assert_close(auc(scores, target), torch.full((4,), 0.5))
    torch.testing.assert_close(
        windowed_partial_auc(scores, target, 0.25, 0.5), torch.full((4,), 0.5)
    )


@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(ties):
    scores, target = make_batch(ties, seed=3)
    labels = labels_of(target, NUM_ITEMS)
    expected = [roc_auc_score(y.numpy(), s.numpy()) for s, y in zip(scores, labels, strict=True)]
    torch.testing.assert_close(auc(scores, target), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("alpha, d", WINDOWS)
def test_windowed_partial_auc_matches_sklearn_roc_curve(ties, alpha, d):
    scores, target = make_batch(ties, seed=4)
    labels = labels_of(target, NUM_ITEMS)
    expected = [
        roc_window_mean(y.numpy(), s.numpy(), alpha, d) for s, y in zip(scores, labels, strict=True)
    ]
    values = windowed_partial_auc(scores, target, alpha, d)
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float32))
    assert 0 < values.mean() < 1


@pytest.mark.parametrize("alpha, d", WINDOWS)
def test_windowed_partial_auc_closed_form_without_ties(alpha, d):
    scores, target = make_batch(ties=False, seed=5)
    ranks = positive_ranks(scores, target)
    assert torch.equal(ranks.gt, ranks.ge)
    expected = ((alpha + d - ranks.gt.double() / ranks.num_negatives) / d).clamp(0, 1)
    torch.testing.assert_close(windowed_partial_auc(scores, target, alpha, d), expected.float())


@pytest.mark.parametrize("ties", [False, True])
def test_auc_is_the_full_window(ties):
    scores, target = make_batch(ties, seed=6)
    torch.testing.assert_close(auc(scores, target), windowed_partial_auc(scores, target, 0.0, 1.0))


def test_window_ending_a_rounding_error_past_one_is_accepted():
    scores, target = make_batch(ties=True, seed=7)
    assert 0.3 + (0.7 + 1e-10) > 1.0
    torch.testing.assert_close(
        windowed_partial_auc(scores, target, 0.3, 0.7 + 1e-10),
        windowed_partial_auc(scores, target, 0.3, 0.7),
    )
    with pytest.raises(ValueError, match=r"alpha \+ d must be <= 1"):
        windowed_partial_auc(scores, target, 0.3, 0.7 + 1e-6)


def test_float32_scores_give_the_same_values():
    scores, target = make_batch(ties=True, seed=8)
    for metric, args in [
        (hit_rate, (5,)),
        (ndcg, (5,)),
        (auc, ()),
        (windowed_partial_auc, (0.05, 0.1)),
    ]:
        values = metric(scores.float(), target, *args)
        assert values.dtype == torch.float32
        torch.testing.assert_close(values, metric(scores, target, *args))


def test_metric_classes_are_the_mean_of_the_functional_forms():
    batches = [
        make_batch(ties, seed, num_users)
        for seed, (ties, num_users) in enumerate([(True, 5), (False, 17), (True, 30)])
    ]
    cases = [
        (HitRate(5), lambda s, t: hit_rate(s, t, 5)),
        (NDCG(10), lambda s, t: ndcg(s, t, 10)),
        (AUC(), auc),
        (WindowedPartialAUC(0.05, 0.1), lambda s, t: windowed_partial_auc(s, t, 0.05, 0.1)),
    ]
    for metric, functional_form in cases:
        for scores, target in batches:
            batch_value = metric(scores, target)  # forward: this batch's mean, and accumulate
            torch.testing.assert_close(batch_value, functional_form(scores, target).mean())
        expected = torch.cat([functional_form(scores, target) for scores, target in batches]).mean()
        torch.testing.assert_close(metric.compute(), expected)
        metric.reset()
        metric.update(*batches[0])
        torch.testing.assert_close(metric.compute(), functional_form(*batches[0]).mean())


def test_ranking_metrics_match_the_single_metrics():
    metrics = ["hr@1", "hr@5", "ndcg@1", "ndcg@5", "auc", "wpauc@[0,0.1]", WPAUCSpec(0.05, 0.1)]
    collection = RankingMetrics(metrics, prefix="val/")
    singles = {
        "val/hr@1": HitRate(1),
        "val/hr@5": HitRate(5),
        "val/ndcg@1": NDCG(1),
        "val/ndcg@5": NDCG(5),
        "val/auc": AUC(),
        "val/wpauc@[0,0.1]": WindowedPartialAUC(0.0, 0.1),
        "val/wpauc@[0.05,0.15]": WindowedPartialAUC(0.05, 0.1),
    }
    assert collection.names == tuple(singles)
    for seed in range(3):
        batch = make_batch(ties=seed % 2 == 0, seed=seed, num_users=10 + seed)
        collection.update(*batch)
        for metric in singles.values():
            metric.update(*batch)
    results = collection.compute()
    assert list(results) == list(singles)
    for name, metric in singles.items():
        torch.testing.assert_close(results[name], metric.compute())


def brute_force_counts(scores: torch.Tensor, target: torch.Tensor) -> tuple[list[int], list[int]]:
    """(gt, ge) of each row by a Python loop over its negatives."""
    gt, ge = [], []
    for row, positive in enumerate(target.tolist()):
        negatives = [float(s) for item, s in enumerate(scores[row]) if item != positive]
        gt.append(sum(s > float(scores[row, positive]) for s in negatives))
        ge.append(sum(s >= float(scores[row, positive]) for s in negatives))
    return gt, ge


def test_update_ranks_gives_the_metrics_of_the_scores_they_count():
    """Counts alone (as exact_positive_ranks gives them) make the same metrics as the score
    table; the AUC is also checked against sklearn on the table."""
    metrics = ["hr@1", "hr@5", "ndcg@1", "ndcg@5", "auc", "wpauc@[0,0.1]", "wpauc@[0.05,0.15]"]
    from_scores = RankingMetrics(metrics)
    from_counts = RankingMetrics(metrics)
    sklearn_aucs = []
    for seed in range(3):
        scores, target = make_batch(ties=seed % 2 == 0, seed=seed, num_users=10 + seed)
        from_scores.update(scores, target)
        gt, ge = brute_force_counts(scores, target)
        from_counts.update_ranks(torch.tensor(gt), torch.tensor(ge), NUM_ITEMS - 1)
        labels = labels_of(target, NUM_ITEMS).numpy()
        sklearn_aucs += [roc_auc_score(labels[row], scores[row].numpy()) for row in range(len(gt))]
    expected, results = from_scores.compute(), from_counts.compute()
    assert list(results) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(results[name], value)
    torch.testing.assert_close(results["auc"].double(), torch.tensor(np.mean(sklearn_aucs)))


@pytest.mark.parametrize(
    ("gt", "ge", "message"),
    [
        ([3], [2], r"ranks row 0: need 0 <= gt <= ge <= num_negatives=40, got gt=3, ge=2"),
        ([0, 1], [0, 41], r"ranks row 1: .* got gt=1, ge=41"),
        ([0.0], [1.0], "gt must be a 1-D integer tensor"),
        ([0, 1], [1], "gt and ge must have the same shape"),
    ],
)
def test_update_ranks_rejects_impossible_counts(gt, ge, message):
    with pytest.raises(ValueError, match=message):
        RankingMetrics(DEFAULT_METRICS).update_ranks(
            torch.tensor(gt), torch.tensor(ge), NUM_ITEMS - 1
        )


def test_metric_attributes():
    singles = [HitRate(1), NDCG(1), AUC(), WindowedPartialAUC(0.0, 0.5)]
    for metric in [*singles, RankingMetrics(DEFAULT_METRICS)]:
        assert (
            metric.higher_is_better
            and not metric.is_differentiable
            and not metric.full_state_update
        )
        assert all(metric._reductions[name] is not None for name in ("total", "count"))


BAD_METRIC_ARGUMENTS = [
    (lambda: HitRate(0), "k must"),
    (lambda: HitRate(-3), "k must"),
    (lambda: HitRate(2.5), "k must"),
    (lambda: HitRate(True), "k must"),
    (lambda: NDCG("5"), "k must"),
    (lambda: WindowedPartialAUC(-0.1, 0.5), "alpha must"),
    (lambda: WindowedPartialAUC(1.5, 0.5), "alpha must"),
    (lambda: WindowedPartialAUC(math.nan, 0.5), "alpha must"),
    (lambda: WindowedPartialAUC(0.1, 0.0), "d must be > 0"),
    (lambda: WindowedPartialAUC(0.1, -0.2), "d must"),
    (lambda: WindowedPartialAUC(0.0, 1.5), "d must"),
    (lambda: WindowedPartialAUC(0.6, 0.5), r"alpha \+ d must be <= 1"),
    (lambda: RankingMetrics(["hr@5", "hr@0"]), "metric 'hr@0': k must"),
    (lambda: RankingMetrics(["ndcg@5", "ndcg@five"]), "ndcg@K needs an integer K"),
    (lambda: RankingMetrics(["hr"]), "hr@K needs an integer K"),
    (lambda: RankingMetrics(["hr@5", "hr@5"]), r"metrics repeat \['hr@5'\]"),
    # one key: the same column of the logs, whatever the floats
    (lambda: RankingMetrics(["wpauc@[0.1,0.3]", WPAUCSpec(0.1, 0.2)]), "repeat"),
    (lambda: RankingMetrics(["wpauc@0.1"]), r"wpauc@\[A,B\]"),
    (lambda: RankingMetrics(["wpauc@[0.1]"]), r"wpauc@\[A,B\]"),
    (lambda: RankingMetrics(["wpauc@[0.1,x]"]), "two numbers"),
    (lambda: RankingMetrics(["wpauc@[0.9,1.1]"]), r"alpha \+ d"),
    (lambda: RankingMetrics(["wpauc@[0.3,0.2]"]), "d must"),
    (lambda: RankingMetrics(["auc@5"]), "auc takes no argument"),
    (lambda: RankingMetrics(["nonsense@5"]), "unknown metric 'nonsense@5': the metric families"),
    (lambda: RankingMetrics("hr@10"), "must be a list of metrics"),
    (lambda: RankingMetrics([10]), "a metric is a key such as 'hr@10'"),
    (lambda: PositiveRanks(torch.tensor([2]), torch.tensor([1]), 5), "ranks row 0"),
    (lambda: PositiveRanks(torch.tensor([0]), torch.tensor([6]), 5), "ranks row 0"),
]


@pytest.mark.parametrize("build, message", BAD_METRIC_ARGUMENTS)
def test_bad_metric_arguments_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def _with_value(row: int, column: int, value: float):
    scores, target = make_batch(ties=False, seed=9, num_users=4, num_items=6)
    scores[row, column] = value
    return scores, target


BAD_INPUTS = [
    (lambda: (torch.zeros(6), torch.tensor([0])), "scores must be a 2-D float tensor"),
    (lambda: (torch.zeros(2, 3, 4), torch.tensor([0, 1])), "scores must be a 2-D float tensor"),
    (
        lambda: (torch.zeros(2, 6, dtype=torch.long), torch.tensor([0, 1])),
        "scores must be a 2-D float",
    ),
    (lambda: (torch.zeros(2, 1), torch.tensor([0, 0])), "N >= 2"),
    (lambda: (torch.zeros(2, 6), torch.tensor([0, 1, 2])), r"target must have shape \[B\]=\[2\]"),
    (lambda: (torch.zeros(2, 6), torch.tensor([[0], [1]])), r"target must have shape"),
    (lambda: (torch.zeros(2, 6), torch.tensor([0.0, 1.0])), "target must be an integer tensor"),
    (lambda: (torch.zeros(2, 6), [0, 1]), "target must be an integer tensor"),
    (lambda: (torch.zeros(2, 6), torch.tensor([0, 6])), r"target\[1\]=6 is not a column"),
    (lambda: (torch.zeros(2, 6), torch.tensor([-1, 0])), r"target\[0\]=-1 is not a column"),
    (lambda: _with_value(2, 3, math.nan), "scores row 2 holds a non-finite value"),
    (lambda: _with_value(1, 0, math.inf), "scores row 1 holds a non-finite value"),
    (lambda: _with_value(3, 5, -math.inf), "scores row 3 holds a non-finite value"),
]


@pytest.mark.parametrize("make_inputs, message", BAD_INPUTS)
def test_bad_inputs_raise_in_functional_forms_and_metrics(make_inputs, message):
    scores, target = make_inputs()
    calls = [
        lambda: hit_rate(scores, target, 1),
        lambda: ndcg(scores, target, 1),
        lambda: auc(scores, target),
        lambda: windowed_partial_auc(scores, target, 0.0, 0.5),
        lambda: HitRate(1).update(scores, target),
        lambda: RankingMetrics(["wpauc@[0,0.5]"]).update(scores, target),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, t: hit_rate(s, t, 0), "k must"),
        (lambda s, t: ndcg(s, t, 1.0), "k must"),
        (lambda s, t: windowed_partial_auc(s, t, 0.5, 0.0), "d must be > 0"),
        (lambda s, t: windowed_partial_auc(s, t, 0.5, 0.6), r"alpha \+ d"),
    ],
)
def test_bad_functional_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(*make_batch(ties=False, seed=10, num_users=3, num_items=5))


def test_update_ranks_counts_as_an_update_for_torchmetrics():
    import warnings

    metrics = RankingMetrics(["hr@1"])
    metrics.update_ranks(torch.tensor([0, 2]), torch.tensor([0, 3]), num_negatives=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "compute called before update" would raise
        values = metrics.compute()
    assert values["hr@1"].item() == pytest.approx(0.5)


def test_capped_counts_give_exact_hit_rate_and_ndcg_and_no_auc():
    """Counts cut at rank 5 (users out-scored by >= 5 negatives keep only lower bounds >= 5)
    give the HR@K / NDCG@K (K <= 5) of the full counts; AUC and WPAUC are not computed."""
    cap, top_k = 5, (1, 3, 5)
    keys = [f"{name}@{k}" for name in ("hr", "ndcg") for k in top_k]
    full = RankingMetrics([*keys, "auc", "wpauc@[0,0.1]"])
    capped = RankingMetrics(keys, rank_cap=cap, prefix="val/")
    for seed in range(3):
        scores, target = make_batch(ties=seed != 1, seed=seed, num_users=12)
        full.update(scores, target)
        ranks = positive_ranks(scores, target)
        beyond = ranks.gt >= cap
        assert beyond.any() and not beyond.all()
        # any lower bounds >= cap do: the true counts halved towards the cap
        gt = torch.where(beyond, torch.maximum((ranks.gt + cap) // 2, torch.tensor(cap)), ranks.gt)
        capped.update_ranks(gt, torch.where(beyond, gt, ranks.ge), NUM_ITEMS - 1, beyond)
    expected, results = full.compute(), capped.compute()
    assert list(results) == [f"val/{name}@{k}" for name in ("hr", "ndcg") for k in top_k]
    for name, value in results.items():
        torch.testing.assert_close(value, expected[name.removeprefix("val/")], rtol=0, atol=0)


def test_capped_counts_are_refused_where_they_would_give_a_wrong_metric():
    gt, ge = torch.tensor([0, 7]), torch.tensor([1, 9])
    beyond = torch.tensor([False, True])
    with pytest.raises(
        ValueError, match=r"1 users are beyond a rank cap .* \(AUC and WPAUC need every count\)"
    ):
        RankingMetrics(["hr@5", "auc"]).update_ranks(gt, ge, NUM_ITEMS - 1, beyond)
    with pytest.raises(ValueError, match="beyond a rank cap"):
        HitRate(5).update_ranks(gt, ge, NUM_ITEMS - 1, beyond)
    exact = torch.zeros(2, dtype=torch.bool)
    RankingMetrics(["hr@5", "auc"]).update_ranks(gt, ge, NUM_ITEMS - 1, exact)
    with pytest.raises(ValueError, match=r"row 1 is beyond the cap with gt=7 < rank_cap=10"):
        RankingMetrics(["hr@5"], rank_cap=10).update_ranks(gt, ge, NUM_ITEMS - 1, beyond)
    with pytest.raises(ValueError, match="beyond_cap must be a bool tensor shaped like gt"):
        RankingMetrics(["hr@5"], rank_cap=5).update_ranks(gt, ge, NUM_ITEMS - 1, beyond.long())
    with pytest.raises(ValueError, match="rank_cap=5 is below K=10 of ndcg@10"):
        RankingMetrics(["hr@1", "ndcg@10"], rank_cap=5)
    with pytest.raises(ValueError, match=r"wpauc@\[0,0.1\] with rank_cap=5: it needs every count"):
        RankingMetrics(["hr@5", "wpauc@[0,0.1]"], rank_cap=5)
    with pytest.raises(ValueError, match="auc with rank_cap=5: it needs every count"):
        RankingMetrics(["hr@5", "auc"], rank_cap=5)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        RankingMetrics(["hr@5"], rank_cap=0)


def test_metric_keys_read_back_into_their_specs():
    for key in DEFAULT_METRICS:
        assert metric_spec(key).key == key
    assert metric_spec(" hr@010 ").key == "hr@10"
    assert metric_spec("wpauc@[0.05, 0.15]") == WPAUCSpec.between(0.05, 0.15)
    assert [metric_spec(key).cutoff for key in ("hr@3", "ndcg@7", "auc", "wpauc@[0,0.1]")] == [
        3,
        7,
        None,
        None,
    ]


def test_a_window_written_with_every_digit_is_the_window_it_was_written_from():
    """``wpauc@[A,B]`` with A and B printed by repr gives WPAUC values bit-identical to
    those of ``(alpha, d)``, however ``B - A`` rounds (the functional reads alpha + d)."""
    for num_negatives in (40, 63, 1023, 3443):
        for first, width in ((0, 10), (2, 3), (9, 10), (19, 21)):
            alpha, d = first / num_negatives, width / num_negatives
            written = metric_spec(f"wpauc@[{alpha!r},{alpha + d!r}]")
            assert written.alpha == alpha and written.alpha + written.d == alpha + d
    scores, target = make_batch(ties=True, seed=11)
    ranks = positive_ranks(scores, target)
    alpha, d = 9 / 40, 10 / 40
    written = metric_spec(f"wpauc@[{alpha!r},{alpha + d!r}]")
    assert torch.equal(written(ranks), WPAUCSpec(alpha, d)(ranks))


def test_a_new_metric_is_its_functional_and_its_spec():
    """A metric of the top K defined here, nowhere else: its key parses, RankingMetrics
    reports it beside the others (also from capped counts) and lists it for figures of
    metric@K."""

    def reciprocal_rank_from_ranks(ranks: PositiveRanks, k: int) -> torch.Tensor:
        return torch.where(ranks.ge < k, 1.0 / (ranks.ge + 1).double(), 0.0).float()

    class ReciprocalRankSpec(TopKSpec):
        family = "test_rr"

        def __call__(self, ranks: PositiveRanks) -> torch.Tensor:
            return reciprocal_rank_from_ranks(ranks, self.k)

    scores, target = make_batch(ties=False, seed=12)
    metrics = RankingMetrics(["hr@5", "test_rr@5", "test_rr@1"], prefix="val/", rank_cap=5)
    metrics.update(scores, target)
    ge = positive_ranks(scores, target).ge.double()
    expected = torch.where(ge < 5, 1.0 / (ge + 1), 0.0).mean()
    torch.testing.assert_close(metrics.compute()["val/test_rr@5"].double(), expected)
    assert metrics.at_k() == {
        "hr": [(5, "val/hr@5")],
        "test_rr": [(1, "val/test_rr@1"), (5, "val/test_rr@5")],
    }
    assert ReciprocalRankSpec(3).key == "test_rr@3"


def test_metric_columns_are_the_metric_keys_the_results_hold():
    results = [
        {"ndcg@10": 0.1, "hr@10": 0.2, "auc": 0.9, "expected_hr@10": 0.3, "epoch": 4},
        {"hr@1": 0.1, "wpauc@[0,0.05]": 0.2, "wpauc@[0,0.01]": 0.1},
    ]
    assert metric_columns(results) == (
        "hr@1",
        "hr@10",
        "ndcg@10",
        "auc",
        "wpauc@[0,0.01]",
        "wpauc@[0,0.05]",
    )
    assert metric_columns(results, ("hr@1", "hr@3", "auc")) == ("hr@1", "auc")
    assert metric_columns([]) == ()
