"""SASRec: shapes, causal and padding masks, the loss against brute force, seeding, early
stopping keeping the best epoch, learning a deterministic world, and (real data) beating
popularity on Office."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from wpauc.baselines import (
    SASRec,
    SASRecConfig,
    fit_sasrec,
    next_item_loss,
    popularity_scores,
    sasrec_metrics,
    sasrec_scores,
)
from wpauc.baselines.sasrec import IGNORED_TARGET, attention_allowed, left_padded, training_tensors
from wpauc.data import MiniOneRecSource, Sample
from wpauc.metrics import RankingMetrics

NUM_ITEMS = 12
TINY = SASRecConfig(
    hidden_size=16,
    num_blocks=2,
    num_heads=2,
    dropout=0.0,
    max_len=4,
    learning_rate=1e-2,
    batch_size=16,
    max_epochs=30,
    patience=3,
)


def shifted_world(num_samples: int, seed: int, step: int = 1) -> list[Sample]:
    """Samples of the deterministic world where item i is followed by item i + step mod N,
    with 1 to 4 history items."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for user in range(num_samples):
        start = int(torch.randint(NUM_ITEMS, (1,), generator=generator))
        length = int(torch.randint(1, 5, (1,), generator=generator))
        sequence = [(start + step * position) % NUM_ITEMS for position in range(length + 1)]
        samples.append(Sample(str(user), tuple(sequence[:-1]), sequence[-1]))
    return samples


def random_model(config: SASRecConfig = TINY, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(NUM_ITEMS, config).eval()


def test_shapes_and_training_targets():
    model = random_model()
    items = torch.tensor([[NUM_ITEMS, 3, 4], [1, 2, 3]])
    assert model(items).shape == (2, 3, TINY.hidden_size)
    assert model.score_histories(items).shape == (2, NUM_ITEMS)
    samples = [Sample("a", (3, 4), 5), Sample("b", (), 0), Sample("c", (1, 2, 3, 4, 5), 6)]
    assert sasrec_scores(model, samples, NUM_ITEMS).shape == (3, NUM_ITEMS)
    inputs, targets = training_tensors(samples, max_len=4, padding_id=NUM_ITEMS)
    pad, ignored = NUM_ITEMS, IGNORED_TARGET
    # each position's target is the item after it; longer histories keep their last items
    assert inputs.tolist() == [[pad, pad, 3, 4], [pad] * 4, [2, 3, 4, 5]]
    assert targets.tolist() == [[ignored, ignored, 4, 5], [ignored] * 4, [3, 4, 5, 6]]


def test_a_position_never_sees_later_items():
    model = random_model()
    items = torch.tensor([[NUM_ITEMS, 1, 2, 3]])
    changed = items.clone()
    changed[0, 3] = 7
    before, after = model(items), model(changed)
    torch.testing.assert_close(before[:, :3], after[:, :3], rtol=0, atol=0)
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_left_padding_does_not_change_the_scores():
    model = random_model()
    unpadded = model.score_histories(torch.tensor([[5, 6, 7]]))
    padded = model.score_histories(torch.tensor([[NUM_ITEMS, 5, 6, 7]]))
    torch.testing.assert_close(unpadded, padded)
    # sasrec_scores reads the last max_len items of a longer history
    longer = [Sample("a", (9, 1, 2, 3, 4), 0), Sample("b", (1, 2, 3, 4), 0)]
    scores = sasrec_scores(model, longer, NUM_ITEMS)
    torch.testing.assert_close(scores[0], scores[1])


def test_an_empty_history_gets_finite_scores():
    model = random_model()
    assert attention_allowed(torch.ones(1, 4, dtype=torch.bool)).any(dim=-1).all()
    scores = sasrec_scores(model, [Sample("a", (), 0), Sample("b", (1,), 0)], NUM_ITEMS)
    assert torch.isfinite(scores).all()
    assert left_padded([()], 3, NUM_ITEMS).tolist() == [[NUM_ITEMS] * 3]


def brute_force_softmax_loss(hidden, embeddings, targets) -> torch.Tensor:
    """Mean over positions with a target of -log softmax(h . e_j)[target], position by
    position."""
    terms = []
    for row, column in (targets != IGNORED_TARGET).nonzero().tolist():
        logits = torch.stack([hidden[row, column] @ embedding for embedding in embeddings])
        terms.append(-torch.log_softmax(logits, dim=0)[targets[row, column]])
    return torch.stack(terms).mean()


def test_losses_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 4, 8, generator=generator, dtype=torch.float64)
    embeddings = torch.randn(NUM_ITEMS, 8, generator=generator, dtype=torch.float64)
    targets = torch.randint(NUM_ITEMS, (3, 4), generator=generator)
    targets[0, :2] = IGNORED_TARGET
    targets[2] = IGNORED_TARGET
    torch.testing.assert_close(
        next_item_loss(hidden, embeddings, targets),
        brute_force_softmax_loss(hidden, embeddings, targets),
    )
    # with two items the sampled negative can only be the other one
    pair, binary_targets = embeddings[:2], targets.remainder(2)
    binary_targets[targets == IGNORED_TARGET] = IGNORED_TARGET
    terms = []
    for row, column in (binary_targets != IGNORED_TARGET).nonzero().tolist():
        positive = int(binary_targets[row, column])
        state = hidden[row, column]
        terms.append(
            -math.log(torch.sigmoid(state @ pair[positive]))
            - math.log(1 - torch.sigmoid(state @ pair[1 - positive]))
        )
    loss = next_item_loss(hidden, pair, binary_targets, loss="bce")
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_fitting_is_seeded_and_leaves_the_global_random_state_alone():
    train, valid = shifted_world(60, seed=0), shifted_world(20, seed=1)
    config = replace(TINY, max_epochs=2, dropout=0.3, loss="bce")
    state = torch.get_rng_state()
    first, first_history = fit_sasrec(train, valid, NUM_ITEMS, config)
    assert torch.equal(torch.get_rng_state(), state)
    second, second_history = fit_sasrec(train, valid, NUM_ITEMS, config)
    other, _ = fit_sasrec(train, valid, NUM_ITEMS, replace(config, seed=1))
    assert first_history == second_history
    for name, weight in first.state_dict().items():
        assert torch.equal(weight, second.state_dict()[name]), name
    assert not torch.equal(first.item_embeddings, other.item_embeddings)


def test_learns_a_deterministic_world():
    train, valid = shifted_world(100, seed=0), shifted_world(30, seed=1)
    model, _ = fit_sasrec(train, valid, NUM_ITEMS, TINY)
    test = shifted_world(30, seed=2)
    assert sasrec_metrics(model, test, top_k=(1,))["hr@1"] == 1.0


def test_early_stopping_keeps_the_best_epoch():
    # valid follows another world (i -> i + 5), so its NDCG@10 peaks and falls off
    train, valid = shifted_world(100, seed=0), shifted_world(30, seed=2, step=5)
    model, history = fit_sasrec(train, valid, NUM_ITEMS, replace(TINY, num_blocks=1, seed=1))
    values = [record["ndcg@10"] for record in history]
    best_epoch = values.index(max(values))
    assert len(history) < TINY.max_epochs  # stopped early ...
    assert best_epoch == len(history) - 1 - TINY.patience  # ... `patience` epochs after the best
    assert sasrec_metrics(model, valid)["ndcg@10"] == max(values)
    assert [record["epoch"] for record in history] == list(range(len(history)))


@pytest.mark.parametrize(
    "field, value",
    [("hidden_size", 0), ("num_heads", 3), ("dropout", 1.0), ("loss", "hinge"), ("patience", 0)],
)
def test_invalid_configs_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        SASRecConfig(**{field: value})


@pytest.mark.real_data
def test_beats_popularity_on_office(amazon18_dir):
    data = MiniOneRecSource(str(amazon18_dir), "Office_Products").load()
    num_items, valid, test = len(data.catalog), data.valid[:500], data.test[:1000]
    model, _ = fit_sasrec(data.train, valid, num_items, SASRecConfig(max_epochs=2))
    popularity = RankingMetrics(["ndcg@10"])
    popularity.update(
        popularity_scores(data.train, test, num_items), torch.tensor([s.target for s in test])
    )
    assert sasrec_metrics(model, test)["ndcg@10"] > float(popularity.compute()["ndcg@10"])
