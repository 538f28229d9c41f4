"""Threshold-pruned exact ranking (`exact_positive_ranks`) against the counts of the full
score table (`positive_ranks(score_items(...))`): SID and title tries, ties made on purpose,
renormalised scores, left padding, a positive ranked last, a batch of one, the censoring cap,
and the rank cap (HR@K / NDCG@K exact at beam-search cost). tests/test_exact_ranks_at_scale.py
checks the cost at a real model's cache shape."""

import pytest
import torch

from tests.helpers.decoding import (
    END_TOKEN,
    PROMPT_LENGTHS,
    left_padded_prompts,
    real_prompt,
    sid_codes,
    tiny_model,
    title_codes,
)
from wpauc.decoding import ItemTrie, exact_positive_ranks, score_items
from wpauc.metrics import RankingMetrics, positive_ranks


def mixed_length_sids(num_items: int, seed: int) -> list[list[int]]:
    """3-token SIDs where some colliding items get a 4th token, as the SID codec makes them."""
    codes = sid_codes(num_items, seed)
    for group, code in enumerate(codes[:4]):
        codes.append(code[:3] + [32 + group])  # a second item with the same 3 tokens
        code.append(36 + group)  # the first one gets its own 4th token
    return codes


CATALOGS = {
    "sid": lambda: sid_codes(40, seed=11),
    "title": lambda: title_codes(40, seed=11),
    "mixed_sid": lambda: mixed_length_sids(30, seed=12),
}


def reference_counts(model, input_ids, attention_mask, trie, target, renormalize=False):
    scores = score_items(model, input_ids, attention_mask, trie, renormalize=renormalize)
    return positive_ranks(scores, target), scores


def assert_same_counts(counts, expected):
    assert torch.equal(counts.gt, expected.gt)
    assert torch.equal(counts.ge, expected.ge)
    assert not counts.censored.any()


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
@pytest.mark.parametrize("catalog", sorted(CATALOGS))
def test_counts_equal_the_full_score_table(catalog, renormalize):
    """Every item as the positive of every (left-padded) prompt, chunks of 1, 5 and default."""
    model = tiny_model()
    codes = CATALOGS[catalog]()
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie, renormalize=renormalize)
    num_prompts = len(PROMPT_LENGTHS)
    for chunk_size in (None, 5, 1):
        for first in range(0, len(codes), num_prompts):
            target = (first + torch.arange(num_prompts)) % len(codes)
            counts = exact_positive_ranks(
                model, input_ids, attention_mask, trie, target, renormalize, chunk_size=chunk_size
            )
            assert_same_counts(counts, positive_ranks(scores, target))
            torch.testing.assert_close(
                counts.positive_scores, scores.gather(1, target[:, None])[:, 0]
            )
            if chunk_size is not None:
                break  # the other chunk sizes on the first targets only


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_positive_ranked_first_and_last(attn_implementation):
    """The best item costs few expansions; the worst one ranks last (ge = N - 1) and costs at
    most every inner node."""
    model = tiny_model(attn_implementation)
    codes = title_codes(40, seed=13)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie)
    inner_nodes = int((trie.node_item < 0).sum()) - 1  # the root runs with the prompt
    best, worst = scores.argmax(dim=1), scores.argmin(dim=1)

    top = exact_positive_ranks(model, input_ids, attention_mask, trie, best)
    assert top.ge.eq(0).all() and top.gt.eq(0).all()
    assert (top.expansions < inner_nodes).all()
    bottom = exact_positive_ranks(model, input_ids, attention_mask, trie, worst)
    assert bottom.ge.eq(len(codes) - 1).all() and bottom.gt.eq(len(codes) - 1).all()
    assert (bottom.expansions <= inner_nodes).all()
    assert (bottom.expansions > top.expansions).all()


def test_left_padding_and_batch_of_one_give_the_batched_counts():
    model = tiny_model()
    trie = ItemTrie.from_codes(title_codes(40, seed=14))
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    target = torch.tensor([3, 17, 17, 30])
    batched = exact_positive_ranks(model, input_ids, attention_mask, trie, target)
    for row in range(len(PROMPT_LENGTHS)):
        alone = real_prompt(input_ids, attention_mask, row)[None]
        single = exact_positive_ranks(
            model, alone, torch.ones_like(alone), trie, target[row : row + 1]
        )
        assert int(single.gt) == int(batched.gt[row]) and int(single.ge) == int(batched.ge[row])


def tie_model(tied_tokens: list[tuple[int, int]], constant: bool = False):
    """The test model with output rows made equal for each pair of tokens (their log-probs
    are then equal after any prefix), or with all logits 0 (``constant``)."""
    model = tiny_model()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        if constant:
            head.zero_()
        for first, second in tied_tokens:
            head[second] = head[first]
    return model


def test_ties_between_siblings_are_counted_as_ties():
    """Items that differ only in their last token, whose output rows are equal, tie exactly:
    ge - gt counts them, as in the full score table."""
    codes = [[0, 8, 16], [0, 8, 17], [0, 9, 16], [0, 9, 17], [1, 8, 16], [1, 8, 18], [2, 10, 19]]
    model = tie_model([(16, 17)])
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    for renormalize in (False, True):
        for item in range(len(codes)):
            target = torch.full((len(PROMPT_LENGTHS),), item)
            expected, scores = reference_counts(
                model, input_ids, attention_mask, trie, target, renormalize
            )
            assert torch.equal(scores[:, 0], scores[:, 1])
            assert torch.equal(scores[:, 2], scores[:, 3])
            counts = exact_positive_ranks(
                model, input_ids, attention_mask, trie, target, renormalize
            )
            assert_same_counts(counts, expected)
            if item < 4:
                assert (counts.ge - counts.gt).ge(1).all()


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
def test_ties_across_the_trie_with_constant_logits(renormalize):
    """All logits 0: raw scores are -length * log V (titles of one length tie across the
    whole trie), renormalised ones -sum log(branching); the counts still match the table."""
    model = tie_model([], constant=True)
    codes = title_codes(40, seed=15)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    for item in range(0, len(codes), 3):
        target = torch.full((len(PROMPT_LENGTHS),), item)
        expected, _ = reference_counts(model, input_ids, attention_mask, trie, target, renormalize)
        counts = exact_positive_ranks(model, input_ids, attention_mask, trie, target, renormalize)
        assert_same_counts(counts, expected)
        if not renormalize:  # every title ties with the others of its length
            assert (counts.ge > counts.gt).all()


def test_renormalized_single_item_subtrees_are_not_expanded():
    """With renormalised scores a title's own tail adds exactly 0, so the walk stops where the
    prefix has one item under it: fewer expansions than raw scores for the same counts."""
    model = tiny_model()
    codes = [code[:-1] + [24, 25, 26, END_TOKEN] for code in title_codes(30, seed=16)]
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    target = torch.tensor([0, 5, 10, 29])
    raw = exact_positive_ranks(model, input_ids, attention_mask, trie, target)
    renormalized = exact_positive_ranks(
        model, input_ids, attention_mask, trie, target, renormalize=True
    )
    expected, _ = reference_counts(model, input_ids, attention_mask, trie, target, True)
    assert_same_counts(renormalized, expected)
    assert (renormalized.expansions < raw.expansions).all()


def test_capped_expansions_are_flagged_and_bound_the_exact_counts():
    model = tiny_model()
    codes = title_codes(40, seed=17)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie)
    target = scores.argmin(dim=1)  # every prefix out-scores the worst item: the most work
    exact = positive_ranks(scores, target)
    free = exact_positive_ranks(model, input_ids, attention_mask, trie, target)
    cap = int(free.expansions.min()) // 3
    capped = exact_positive_ranks(
        model, input_ids, attention_mask, trie, target, max_expansions=cap
    )
    assert capped.censored.all() and (capped.unresolved > 0).all()
    assert (capped.gt <= exact.gt).all() and (exact.gt <= capped.gt + capped.unresolved).all()
    assert (capped.ge <= exact.ge).all() and (exact.ge <= capped.ge + capped.unresolved).all()
    code_lengths = trie.item_code_lengths[target]
    assert (capped.expansions <= cap + code_lengths).all()
    torch.testing.assert_close(capped.positive_scores, free.positive_scores)
    # a cap nobody reaches changes nothing
    roomy = exact_positive_ranks(
        model, input_ids, attention_mask, trie, target, max_expansions=int(free.expansions.max())
    )
    assert_same_counts(roomy, exact)


def test_bad_arguments_raise():
    model = tiny_model()
    trie = ItemTrie.from_codes(sid_codes(20, seed=19))
    input_ids, attention_mask = left_padded_prompts([4, 2])
    target = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"target must be an integer tensor of shape \[B\]=\[2\]"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, target[:1])
    with pytest.raises(ValueError, match=r"target must be an integer tensor"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, target.float())
    with pytest.raises(ValueError, match=r"target\[1\]=20 is not a catalog index \(N=20\)"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, torch.tensor([0, 20]))
    with pytest.raises(ValueError, match="max_expansions=0 must be positive"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, target, max_expansions=0)
    with pytest.raises(ValueError, match="rank_cap=0 must be positive"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, target, rank_cap=0)
    with pytest.raises(ValueError, match="chunk_size=0 must be positive"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, target, chunk_size=0)
    with pytest.raises(ValueError, match=r"left-padded.*rows \[1\]"):
        exact_positive_ranks(model, input_ids, attention_mask.flip(1), trie, target)
    with torch.no_grad():
        model.get_output_embeddings().weight.fill_(torch.nan)
    with pytest.raises(ValueError, match=r"positive of row 0 \(item 0\) has score nan"):
        exact_positive_ranks(model, input_ids, attention_mask, trie, target)


def capped_metrics_equal_full_ones(counts, scores, target, cap: int) -> None:
    """HR@K and NDCG@K (K <= cap) from the capped counts equal those of the score table."""
    top_k = sorted({1, max(cap // 2, 1), cap})
    keys = [f"{name}@{k}" for name in ("hr", "ndcg") for k in top_k]
    capped, full = RankingMetrics(keys, rank_cap=cap), RankingMetrics(keys)
    capped.update_ranks(counts.gt, counts.ge, scores.shape[1] - 1, counts.beyond_cap)
    full.update(scores, target)
    expected = full.compute()
    results = capped.compute()
    assert list(results) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(results[name], value, rtol=0, atol=0, msg=name)


def assert_capped_counts(counts, expected, cap: int) -> None:
    """Exact counts below the cap; beyond it exactly where ``cap`` items beat the positive,
    with lower bounds of at least ``cap``."""
    beyond = counts.beyond_cap
    assert torch.equal(beyond, expected.gt >= cap)
    assert torch.equal(counts.gt[~beyond], expected.gt[~beyond])
    assert torch.equal(counts.ge[~beyond], expected.ge[~beyond])
    assert (counts.gt[beyond] >= cap).all() and (counts.gt[beyond] <= expected.gt[beyond]).all()
    assert (counts.ge[beyond] >= counts.gt[beyond]).all()
    assert (counts.ge[beyond] <= expected.ge[beyond]).all()
    assert not counts.censored.any()


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
@pytest.mark.parametrize("catalog", sorted(CATALOGS))
def test_rank_cap_resolves_ranks_below_the_cap_and_flags_the_others(catalog, renormalize):
    """Every item as the positive of every prompt, caps 1, 5 and 12: the counts are exact
    where fewer than ``cap`` items beat the positive, ``beyond_cap`` exactly elsewhere, the
    HR@K / NDCG@K (K <= cap) those of the full score table, and no context costs more than
    its full count."""
    model = tiny_model()
    codes = CATALOGS[catalog]()
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie, renormalize=renormalize)
    num_prompts = len(PROMPT_LENGTHS)
    for cap in (1, 5, 12):
        beyond = []
        for first in range(0, len(codes), num_prompts):
            target = (first + torch.arange(num_prompts)) % len(codes)
            counts = exact_positive_ranks(
                model, input_ids, attention_mask, trie, target, renormalize, rank_cap=cap
            )
            full = exact_positive_ranks(model, input_ids, attention_mask, trie, target, renormalize)
            assert_capped_counts(counts, positive_ranks(scores, target), cap)
            capped_metrics_equal_full_ones(counts, scores, target, cap)
            torch.testing.assert_close(counts.positive_scores, full.positive_scores)
            assert (counts.expansions <= full.expansions).all()
            beyond.append(counts.beyond_cap)
        beyond = torch.cat(beyond)
        assert beyond.any() and not beyond.all()  # ranks on both sides of the cap


def peaked_model(step: float):
    """The test model with a logit bias of ``-step * (token % 8)``: each SID level's next
    token is far likelier than the next one, as after training, so item scores spread out."""
    model = tiny_model()
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.copy_(-step * (torch.arange(head.out_features) % 8).float())
    model.lm_head = biased
    return model


def test_a_positive_beyond_the_cap_costs_the_beam_search_only():
    """Median and last-ranked positives of a model whose scores spread out: the full count
    runs nearly every inner node; with a cap the beam search's 5 items out-score the positive,
    so the context is ``beyond_cap`` (counts >= 5, lower bounds of the true ones) after the beam
    search's prefixes and its own."""
    model = peaked_model(2.0)
    trie = ItemTrie.from_codes(sid_codes(400, seed=11))
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie)
    inner_nodes = int((trie.node_item < 0).sum()) - 1
    for target in (scores.argsort(dim=1)[:, 200], scores.argmin(dim=1)):
        full = exact_positive_ranks(model, input_ids, attention_mask, trie, target)
        capped = exact_positive_ranks(model, input_ids, attention_mask, trie, target, rank_cap=5)
        assert (full.expansions > inner_nodes * 0.9).all()
        assert capped.beyond_cap.all()
        assert (capped.expansions <= (5 + 1) * (trie.max_code_length - 1)).all()
        assert (capped.gt >= 5).all() and (capped.ge >= capped.gt).all()
        assert_capped_counts(capped, positive_ranks(scores, target), cap=5)


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
def test_rank_cap_with_ties_at_the_cap(renormalize):
    """All logits 0: raw scores tie across every title of one length (renormalised ones
    wherever the branching is equal), so the cap's item, found by the beam search, ties with
    many others and with the positive. A cap at, inside or just past a tie group still gives
    ``beyond_cap == (gt >= cap)`` and exact counts below it."""
    model = tie_model([], constant=True)
    codes = title_codes(40, seed=15)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie, renormalize=renormalize)
    tied_positives = 0
    for item in range(0, len(codes), 3):
        target = torch.full((len(PROMPT_LENGTHS),), item)
        expected = positive_ranks(scores, target)
        gt, ge = int(expected.gt[0]), int(expected.ge[0])
        tied_positives += ge > gt
        for cap in sorted({gt, gt + 1, ge, ge + 1} - {0}):
            counts = exact_positive_ranks(
                model, input_ids, attention_mask, trie, target, renormalize, rank_cap=cap
            )
            assert_capped_counts(counts, expected, cap)
            if cap <= len(codes) - 1:
                capped_metrics_equal_full_ones(counts, scores, target, cap)
    assert tied_positives >= 5


def test_rank_cap_of_the_catalog_size_or_more_changes_nothing():
    model = tiny_model()
    codes = sid_codes(20, seed=19)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    target = torch.tensor([0, 5, 11, 19])
    full = exact_positive_ranks(model, input_ids, attention_mask, trie, target)
    for cap in (len(codes), len(codes) + 7):
        capped = exact_positive_ranks(model, input_ids, attention_mask, trie, target, rank_cap=cap)
        assert not capped.beyond_cap.any()
        for field in ("gt", "ge", "expansions"):
            assert torch.equal(getattr(capped, field), getattr(full, field))
