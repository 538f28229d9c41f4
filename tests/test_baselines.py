"""The fitting set of the baselines: the training split, or train + valid with `refit`."""

from __future__ import annotations

import torch

from wpauc.baselines import fit_samples, popularity_scores
from wpauc.data import SyntheticSource

SMALL = dict(num_items=64, num_users=60, num_categories=2, subcategories_per_category=4)


def test_fit_samples_add_valid_only_with_refit():
    data = SyntheticSource(**SMALL).load()
    train = list(data.train)
    assert fit_samples(data, refit=False) == train
    assert fit_samples(data, refit=True) == train + data.valid
    assert data.train == train  # the split itself is left alone
    # a counting baseline fitted on the refit set counts the valid targets too
    refit_counts = popularity_scores(fit_samples(data, refit=True), data.test[:1], 64)[0]
    valid_counts = torch.bincount(torch.tensor([s.target for s in data.valid]), minlength=64)
    train_counts = popularity_scores(data.train, data.test[:1], 64)[0]
    torch.testing.assert_close(refit_counts, train_counts + valid_counts.float())
