"""wpauc.window, the one home of the FPR window: rank bounds against exact fractions, the
rank form (target_k, width), metric keys, and errors that name the field."""

from fractions import Fraction

import pytest
import torch

from wpauc.metrics import PositiveRanks, windowed_partial_auc_from_ranks
from wpauc.window import Window, window_bounds, wpauc_key


def _exact_window(num_negatives, alpha, d):
    """Oracle: negatives of rank r with alpha <= r / n < alpha + d, in exact fractions."""
    alpha_exact, d_exact = Fraction(str(alpha)), Fraction(str(d))
    ranks = [
        rank
        for rank in range(num_negatives)
        if alpha_exact <= Fraction(rank, num_negatives) < alpha_exact + d_exact
    ]
    return ranks


def window_mask(neg_rank: torch.Tensor, num_negatives: int, alpha: float, d: float):
    """Bool mask of the negatives inside the window: 0-based `neg_rank` (each negative's rank
    among the negatives only) in `[lo, hi)` of `window_bounds`."""
    lo, hi = window_bounds(num_negatives, alpha, d)
    return (neg_rank >= lo) & (neg_rank < hi)


@pytest.mark.parametrize("num_negatives", [1, 3, 7, 10, 30, 100, 113])
def test_window_bounds_match_exact_fractions_on_a_decimal_grid(num_negatives):
    for alpha_percent in range(0, 100, 3):
        for d_percent in range(1, 101 - alpha_percent, 3):
            alpha, d = alpha_percent / 100, d_percent / 100
            lo, hi = window_bounds(num_negatives, alpha, d)
            exact = _exact_window(num_negatives, alpha, d)
            assert list(range(lo, hi)) == exact, (num_negatives, alpha, d)
            mask = window_mask(torch.arange(num_negatives), num_negatives, alpha, d)
            assert mask.nonzero().flatten().tolist() == exact


@pytest.mark.parametrize(
    ("num_negatives", "alpha", "d", "expected"),
    [
        (30, 0.1, 0.2, (3, 9)),  # 0.1 * 30 and 0.3 * 30 are not integers in floating point
        (10, 0.1, 0.2, (1, 3)),  # 0.1 + 0.2 != 0.3 in floating point
        (10, 0.7, 0.3, (7, 10)),
        (10, 0.0, 1.0, (0, 10)),
        (10, 0.05, 0.1, (1, 2)),  # 0.5 -> 1, 1.5 -> 2
        (10, 0.11, 0.01, (2, 2)),  # an empty window
        (3, 1 / 3, 1 / 3, (1, 2)),
        (0, 0.2, 0.3, (0, 0)),
    ],
)
def test_window_bounds_edge_values(num_negatives, alpha, d, expected):
    assert window_bounds(num_negatives, alpha, d) == expected


@pytest.mark.parametrize("num_negatives", [10, 63, 1023])
def test_wpauc_over_a_rank_window_is_the_share_of_its_negatives_the_positive_beats(num_negatives):
    """The window's negatives (the mask of its bounds) are the ones WPAUC counts: over a
    window of whole ranks, a positive without ties that out-ranks the negatives of rank >= r
    gets the share of the window's negatives among them."""
    for first, width in ((0, 1), (0, 5), (2, 3), (4, 6), (9, 10)):
        if first + width > num_negatives:
            continue
        alpha, d = first / num_negatives, width / num_negatives
        inside = window_mask(torch.arange(num_negatives), num_negatives, alpha, d)
        rank = torch.arange(num_negatives + 1)
        ranks = PositiveRanks(gt=rank, ge=rank, num_negatives=num_negatives)
        beaten = torch.stack([inside[r:].sum() for r in rank.tolist()]) / inside.sum()
        torch.testing.assert_close(
            windowed_partial_auc_from_ranks(ranks, alpha, d), beaten.float(), rtol=0, atol=1e-6
        )


def test_rank_fractions_map_back_to_their_ranks():
    # What TAWin's target_k form produces: alpha = (k - 1) / n, d = w / n, computed in floats.
    for num_negatives in (7, 10, 49, 100, 3443):
        for first in range(min(num_negatives, 60)):
            for width in (1, 2, 5, 10):
                if first + width > num_negatives:
                    continue
                bounds = window_bounds(num_negatives, first / num_negatives, width / num_negatives)
                assert bounds == (first, first + width)


@pytest.mark.parametrize(
    ("alpha", "d"), [(-0.1, 0.2), (1.1, 0.1), (0.2, 0.0), (0.2, 1.2), (0.6, 0.5)]
)
def test_window_bounds_reject_bad_windows(alpha, d):
    with pytest.raises(ValueError, match="alpha|d"):
        window_bounds(10, alpha, d)


def test_window_forms_give_ranks_fractions_and_metric_keys():
    by_rank = Window.top_k(10, 10)
    assert by_rank.ranks(1023) == (9, 19) and by_rank.max_rank == 19
    alpha, d = by_rank.fractions(1023)
    assert window_bounds(1023, alpha, d) == (9, 19)
    assert by_rank.metric_key(1023) == wpauc_key(alpha, d)
    by_fraction = Window.fpr(0.0, 0.05)
    assert by_fraction.fractions(99) == (0.0, 0.05) and by_fraction.max_rank is None
    assert by_fraction.ranks(99) == (0, 5)
    assert by_fraction.metric_key(99) == "wpauc@[0,0.05]"
    assert wpauc_key(0.001, 0.002) == "wpauc@[0.001,0.003]"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Window.top_k(0, 3), "target_k"),
        (lambda: Window.top_k(2, 0), "window_width"),
        (lambda: Window.top_k(30, 2).ranks(20), "target_k"),
        (lambda: Window.top_k(19, 5).ranks(20), "window_width"),
        (lambda: Window.fpr(0.12, 0.01).ranks(9), "d"),
        (lambda: Window.fpr(1.2, 0.1), "alpha"),
    ],
)
def test_window_errors_name_the_field(make, field):
    with pytest.raises(ValueError, match=f"^{field} "):
        make()
