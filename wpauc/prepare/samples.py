"""From a review log to time-ordered (history, next item) samples and their split: steps 3
(iterative k-core), 4 (user and item ids) and 5 (samples, global chronological 8:1:1 split)
of the pipeline described in :mod:`wpauc.prepare.amazon`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Review:
    """One review, reduced to what the pipeline needs."""

    user: str
    """``reviewerID``."""
    asin: str
    """Amazon item id."""
    time: int
    """``unixReviewTime`` (seconds)."""
    line: int
    """Line of the review file it came from (for messages)."""


@dataclass(frozen=True)
class TimedSample:
    """One (history, next item) pair with the time of the next item."""

    user: int
    """User number (position in the user list of :func:`build_samples`)."""
    history: tuple[int, ...]
    """Item ids of the previous items, oldest first."""
    target: int
    """Item id of the next item."""
    time: int
    """``unixReviewTime`` of the next item."""


def k_core_filter(reviews: list[Review], k: int) -> tuple[list[Review], int]:
    """Iteratively drop reviews of users and items with fewer than ``k`` reviews until
    every remaining user and item has at least ``k``. Returns ``(kept, rounds)``.

    Args:
        reviews: the reviews to filter.
        k: minimum number of reviews per user and per item.
    """
    rounds = 0
    while True:
        rounds += 1
        user_counts = Counter(review.user for review in reviews)
        item_counts = Counter(review.asin for review in reviews)
        kept = [
            review
            for review in reviews
            if user_counts[review.user] >= k and item_counts[review.asin] >= k
        ]
        if len(kept) == len(reviews):
            return kept, rounds
        reviews = kept


def build_samples(
    reviews: list[Review], max_history: int
) -> tuple[list[str], list[str], list[TimedSample]]:
    """Number users and items (step 4 in :mod:`wpauc.prepare.amazon`) and make every (previous
    ``<= max_history`` items, next item) sample, sorted by target time (stable).

    Args:
        reviews: the filtered reviews, in file order.
        max_history: longest history per sample.

    Returns:
        ``(users, asins, samples)``: reviewer ids and asins in number order, and samples.
    """
    by_user: dict[str, list[Review]] = {}
    for review in reviews:
        by_user.setdefault(review.user, []).append(review)
    item_ids: dict[str, int] = {}
    samples = []
    for user_number, user_reviews in enumerate(by_user.values()):
        user_reviews.sort(key=lambda review: review.time)
        sequence = [item_ids.setdefault(review.asin, len(item_ids)) for review in user_reviews]
        for position in range(1, len(sequence)):
            history = tuple(sequence[max(0, position - max_history) : position])
            samples.append(
                TimedSample(user_number, history, sequence[position], user_reviews[position].time)
            )
    samples.sort(key=lambda sample: sample.time)
    return list(by_user), list(item_ids), samples


def chronological_split(
    samples: Sequence[TimedSample], cut_points: tuple[float, float] = (0.8, 0.9)
) -> dict[str, list[TimedSample]]:
    """Cut time-sorted samples into train / valid / test at ``int(c0 n)`` and ``int(c1 n)``
    (the defaults give MiniOneRec's 8:1:1, computed exactly as it does).

    Args:
        samples: samples sorted by target time.
        cut_points: cumulative fractions ``(c0, c1)`` where train and valid end.
    """
    if len(cut_points) != 2 or not 0.0 <= cut_points[0] <= cut_points[1] <= 1.0:
        raise ValueError(f"cut_points must satisfy 0 <= c0 <= c1 <= 1, got {tuple(cut_points)}")
    total = len(samples)
    train_end, valid_end = int(total * cut_points[0]), int(total * cut_points[1])
    return {
        "train": list(samples[:train_end]),
        "valid": list(samples[train_end:valid_end]),
        "test": list(samples[valid_end:]),
    }
