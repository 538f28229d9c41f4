"""Counting baselines: item popularity and last-item transitions.

Each returns ``[S, N]`` scores over the catalog for the samples of a split, ready for
:mod:`wpauc.metrics`. Only the fitting samples ``train`` are counted (plus each evaluation
sample's own history, which is its input): pass ``fit_samples(data, refit)``, the training
split by default, so nothing leaks from valid or test targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wpauc.data.catalog import Sample

#: Weight of popularity inside the transition baseline: small enough never to overturn a
#: transition count, large enough to order items that share one (ties count against the
#: positive, so unbroken ties would understate the baseline).
_TIE_BREAK = 1.0e-6


def item_popularity(train: Sequence[Sample], num_items: int) -> torch.Tensor:
    """[N] how often each item is a training target."""
    counts = torch.zeros(num_items)
    targets = torch.tensor([s.target for s in train], dtype=torch.long)
    counts.index_add_(0, targets, torch.ones(len(targets)))
    return counts


def popularity_scores(
    train: Sequence[Sample], samples: Sequence[Sample], num_items: int
) -> torch.Tensor:
    """[S, N] the same popularity ranking for every sample."""
    return item_popularity(train, num_items).expand(len(samples), num_items).clone()


def transition_counts(train: Sequence[Sample], num_items: int) -> torch.Tensor:
    """[N, N] counts of (item, next item) pairs along training histories and targets."""
    counts = torch.zeros(num_items, num_items)
    previous, following = [], []
    for sample in train:
        sequence = (*sample.history, sample.target)
        previous.extend(sequence[:-1])
        following.extend(sequence[1:])
    flat = torch.tensor(previous, dtype=torch.long) * num_items + torch.tensor(
        following, dtype=torch.long
    )
    counts.view(-1).index_add_(0, flat, torch.ones(len(flat)))
    return counts


def last_item_transition_scores(
    train: Sequence[Sample], samples: Sequence[Sample], num_items: int
) -> torch.Tensor:
    """[S, N] next-item counts after each sample's last history item, popularity breaking ties."""
    transitions = transition_counts(train, num_items)
    popularity = item_popularity(train, num_items)
    popularity = popularity / popularity.max().clamp_min(1.0)
    last = torch.tensor([s.history[-1] if s.history else -1 for s in samples], dtype=torch.long)
    scores = torch.zeros(len(samples), num_items)
    has_history = last >= 0
    scores[has_history] = transitions[last[has_history]]
    return scores + _TIE_BREAK * popularity
