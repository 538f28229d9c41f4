"""The synthetic world: determinism, split structure, and that targets really follow the
exposed true next-item probabilities (chi-square calibration), with headroom over
popularity."""

import pytest
import torch
from scipy.stats import chi2

from wpauc.data import Catalog, RecData, Sample, SyntheticSource, bayes_optimal_scores

SMALL = dict(num_items=200, num_users=400, num_categories=4, subcategories_per_category=5)


@pytest.fixture(scope="module")
def world() -> RecData:
    """The default-size world (the one training uses)."""
    return SyntheticSource().load()


def test_same_seed_same_world_other_seed_other_world():
    first, second = SyntheticSource(**SMALL).load(), SyntheticSource(**SMALL).load()
    assert first.catalog == second.catalog
    for split in ("train", "valid", "test"):
        assert first.split(split) == second.split(split)
    for split in ("valid", "test"):
        assert torch.equal(first.true_next_item_probs[split], second.true_next_item_probs[split])
    other = SyntheticSource(**SMALL, seed=1).load()
    assert other.train != first.train


def test_catalog_is_the_item_tree():
    data = SyntheticSource(
        num_items=22, num_users=5, num_categories=2, subcategories_per_category=3
    ).load()
    catalog = data.catalog
    assert catalog.item_ids == tuple(range(22))
    # 22 items over 6 subcategories: sizes 4, 4, 4, 4, 3, 3 in contiguous blocks
    assert catalog.sids[:5] == (
        ("<a_0>", "<b_0>", "<c_0>"),
        ("<a_0>", "<b_0>", "<c_1>"),
        ("<a_0>", "<b_0>", "<c_2>"),
        ("<a_0>", "<b_0>", "<c_3>"),
        ("<a_0>", "<b_1>", "<c_0>"),
    )
    assert catalog.sids[-1] == ("<a_1>", "<b_2>", "<c_2>")
    assert catalog.titles[-1] == "cat1 sub2 item2"
    assert len(set(catalog.titles)) == 22


def test_leave_one_out_splits():
    source = SyntheticSource(**SMALL, max_history=4)
    data = source.load()
    by_user: dict[str, dict[str, list[Sample]]] = {}
    for split in ("train", "valid", "test"):
        for sample in data.split(split):
            by_user.setdefault(sample.user, {"train": [], "valid": [], "test": []})[split].append(
                sample
            )
    assert len(by_user) == source.num_users == len(data.valid) == len(data.test)
    lengths = []
    for samples in by_user.values():
        assert len(samples["valid"]) == len(samples["test"]) == 1
        chain = samples["train"] + samples["valid"] + samples["test"]
        sequence = [chain[0].history[0]] + [sample.target for sample in chain]
        lengths.append(len(sequence))
        assert len(set(sequence)) == len(sequence)  # no item repeats in a user's sequence
        for position, sample in enumerate(chain, start=1):
            assert sample.history == tuple(sequence[max(0, position - 4) : position])
    assert min(lengths) >= source.min_sequence_length and max(lengths) <= source.max_sequence_length


@pytest.mark.parametrize("split", ["valid", "test"])
def test_true_probabilities_are_distributions_over_unseen_items(world, split):
    probs = bayes_optimal_scores(world, split)
    assert probs.shape == (len(world.split(split)), len(world.catalog))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(probs)), atol=1e-5, rtol=0)
    for row, sample in enumerate(world.split(split)):
        assert probs[row, sample.target] > 0
        assert torch.all(probs[row, list(sample.history)] == 0)


def calibration_pvalue(probs: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> float:
    """Pearson chi-square p-value of observed vs expected target counts per item group.

    `groups[s, i]` labels item i for sample s. Expected count of group b: sum over samples
    of the probability mass on b; observed: samples whose target is in b. (Targets drawn
    from different distributions make the statistic conservative.)
    """
    num_groups = int(groups.max()) + 1
    expected = torch.zeros(num_groups, dtype=torch.float64).index_add_(
        0, groups.flatten(), probs.flatten().double()
    )
    observed = torch.bincount(groups.gather(1, targets[:, None]).squeeze(1), minlength=num_groups)
    used = expected > 0
    statistic = ((observed[used] - expected[used]) ** 2 / expected[used]).sum().item()
    return float(chi2.sf(statistic, int(used.sum()) - 1))


def item_groupings(data: RecData, probs: torch.Tensor, samples: list[Sample]) -> dict:
    """Several ways to bin (sample, item) pairs: by probability, category, and relation to
    the last history item."""
    category = torch.tensor([int(sid[0][3:-1]) for sid in data.catalog.sids])
    subcategory = category * 100 + torch.tensor([int(sid[1][3:-1]) for sid in data.catalog.sids])
    last = torch.tensor([sample.history[-1] for sample in samples])
    edges = torch.tensor([1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3])
    return {
        "probability bin": torch.bucketize(probs, edges),
        "category": category.expand(len(samples), -1),
        "same subcategory as last item": (
            subcategory[None, :] == subcategory[last][:, None]
        ).long(),
    }


@pytest.mark.parametrize("split", ["valid", "test"])
def test_targets_follow_the_true_probabilities(world, split):
    samples = world.split(split)
    probs = bayes_optimal_scores(world, split)
    targets = torch.tensor([sample.target for sample in samples])
    for name, groups in item_groupings(world, probs, samples).items():
        assert calibration_pvalue(probs, targets, groups) > 1e-3, name
    # the check has power: a slightly tempered distribution fails it
    tempered = probs**0.8 / (probs**0.8).sum(dim=1, keepdim=True)
    groups = item_groupings(world, tempered, samples)["probability bin"]
    assert calibration_pvalue(tempered, targets, groups) < 1e-6


def hit_rate_at(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Brute-force HR@k with ties counted against the positive."""
    positive = scores.gather(1, targets[:, None])
    at_least = (scores >= positive).sum(dim=1) - 1
    return (at_least < k).float().mean().item()


def test_bayes_optimal_has_headroom_over_popularity(world):
    probs = bayes_optimal_scores(world, "test")
    targets = torch.tensor([sample.target for sample in world.test])
    expected_oracle_hr10 = probs.topk(10, dim=1).values.sum(dim=1).mean().item()
    oracle_hr10 = hit_rate_at(probs, targets, 10)
    popularity = torch.bincount(
        torch.tensor([sample.target for sample in world.train]), minlength=len(world.catalog)
    )
    popularity_hr10 = hit_rate_at(popularity.float().expand(len(targets), -1), targets, 10)
    assert 0.3 < expected_oracle_hr10 < 0.6
    assert abs(oracle_hr10 - expected_oracle_hr10) < 0.03  # 3000 draws: std ~ 0.009
    assert popularity_hr10 < 0.5 * oracle_hr10


def test_bayes_optimal_scores_needs_the_synthetic_world():
    catalog = Catalog(item_ids=(0, 1), titles=("a", "b"))
    sample = Sample("u", (0,), 1)
    data = RecData(catalog=catalog, train=[sample], valid=[sample], test=[sample])
    with pytest.raises(ValueError, match="only the synthetic world"):
        bayes_optimal_scores(data, "test")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_items=10), "num_items=10 must be >= num_categories"),
        (dict(min_sequence_length=2), "need 3 <= min_sequence_length"),
        (dict(min_sequence_length=9, max_sequence_length=8), "need 3 <= min_sequence_length"),
        (dict(sequential_weight=1.5), "sequential_weight must be in"),
        (dict(same_subcategory_prob=-0.1), "same_subcategory_prob must be in"),
        (dict(taste_concentration=0.0), "taste_concentration must be > 0"),
        (dict(num_categories=1, subcategories_per_category=1), "at least 2 subcategories"),
        (dict(num_users=0), "num_users and max_history"),
    ],
)
def test_invalid_configuration(fields, message):
    with pytest.raises(ValueError, match=message):
        SyntheticSource(**fields)
