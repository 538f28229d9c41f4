"""wpauc.objectives.functional against independent oracles: closed forms, exact fractions,
brute-force loops and a plain reimplementation of TRL's `grpo` loss semantics."""

import math

import pytest
import torch

from wpauc.decoding import ScoreTable
from wpauc.objectives import (
    RolloutContext,
    TAWinWPAUC,
    grpo_advantages,
    k3_kl,
    policy_loss,
    rank_aware_penalties,
)
from wpauc.objectives.functional import aggregate, tail_negatives


@pytest.mark.parametrize("num_negatives", [1, 2, 5, 16, 99])
def test_binary_rewards_give_sqrt_m_and_minus_inverse_sqrt_m(num_negatives):
    rewards = torch.zeros(3, num_negatives + 1)
    positive_column = torch.tensor([0, num_negatives, num_negatives // 2])
    rewards[torch.arange(3), positive_column] = 1.0
    advantages = grpo_advantages(rewards, eps=0.0)
    expected = torch.full_like(rewards, -1.0 / math.sqrt(num_negatives))
    expected[torch.arange(3), positive_column] = math.sqrt(num_negatives)
    torch.testing.assert_close(advantages, expected)


def test_advantages_match_population_std_oracle_and_unbiased_only_rescales():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 7, generator=generator)
    eps = 1e-4
    population = rewards.std(-1, unbiased=False, keepdim=True)
    expected = (rewards - rewards.mean(-1, keepdim=True)) / (population + eps)
    torch.testing.assert_close(grpo_advantages(rewards, eps=eps), expected)
    # The unbiased std only rescales every advantage by sqrt((G - 1) / G).
    unbiased = (rewards - rewards.mean(-1, keepdim=True)) / rewards.std(-1, keepdim=True)
    torch.testing.assert_close(unbiased, grpo_advantages(rewards, eps=0.0) * math.sqrt(6 / 7))


def test_unscaled_advantages_only_centre():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    torch.testing.assert_close(
        grpo_advantages(rewards, scale=False), torch.tensor([[0.25, -0.75, -0.75, 1.25]])
    )


def test_masked_members_are_left_out_and_get_zero():
    generator = torch.Generator().manual_seed(1)
    rewards = torch.randn(4, 6, generator=generator)
    mask = torch.tensor(
        [[1, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 1], [1] * 6, [0, 1, 1, 1, 1, 1]]
    ).bool()
    advantages = grpo_advantages(rewards, eps=1e-3, mask=mask)
    for row in range(4):
        kept = mask[row]
        torch.testing.assert_close(
            advantages[row, kept], grpo_advantages(rewards[row, kept].unsqueeze(0), eps=1e-3)[0]
        )
        assert (advantages[row, ~kept] == 0).all()


def test_constant_groups_get_exactly_zero_even_without_eps():
    rewards = torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.3, 0.3, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]]).bool()
    assert (grpo_advantages(rewards, eps=0.0, mask=mask) == 0).all()
    fully_masked = grpo_advantages(rewards, eps=0.0, mask=torch.zeros_like(mask))
    assert (fully_masked == 0).all()


def test_zero_one_weights_equal_the_mask_and_soft_weights_follow_the_closed_form():
    generator = torch.Generator().manual_seed(2)
    rewards = torch.randn(3, 5, generator=generator)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]]).bool()
    torch.testing.assert_close(
        grpo_advantages(rewards, weights=mask.float()), grpo_advantages(rewards, mask=mask)
    )
    # Binary rewards, negative weights w: A+ = sqrt(sum w), A_j = -w_j / sqrt(sum w).
    weights = torch.tensor([[1.0, 0.9, 0.5, 0.1, 0.01]])
    binary = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    effective = weights[0, 1:].sum()
    expected = torch.cat([effective.sqrt().view(1), -weights[0, 1:] / effective.sqrt()]).unsqueeze(
        0
    )
    torch.testing.assert_close(grpo_advantages(binary, eps=0.0, weights=weights), expected)


def test_k3_kl_is_non_negative_zero_at_equality_and_unbiased_for_kl():
    generator = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.randn(50, generator=generator), -1)
    ref = torch.log_softmax(torch.randn(50, generator=generator), -1)
    assert (k3_kl(logp, ref) >= 0).all()
    torch.testing.assert_close(k3_kl(logp, logp), torch.zeros(50))
    # E_{x ~ p}[k3] = KL(p || q), summed exactly over the categories.
    expected_kl = (logp.exp() * (logp - ref)).sum()
    torch.testing.assert_close((logp.exp() * k3_kl(logp, ref)).sum(), expected_kl)


def test_rank_aware_penalties_values():
    discounts = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]
    total = sum(discounts)
    torch.testing.assert_close(
        rank_aware_penalties(4), torch.tensor([-value / total for value in discounts])
    )
    assert rank_aware_penalties(16).sum().item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="num_beams"):
        rank_aware_penalties(0)


def _reference_grpo_loss(
    logp, old_logp, ref_logp, advantages, token_mask, member_mask, eps_low, eps_high, beta
):
    """TRL `grpo` loss type written out with loops: per-token clipped surrogate + beta k3,
    mean over each sequence's valid tokens, mean over valid sequences."""
    sequence_losses = []
    for b in range(logp.shape[0]):
        for g in range(logp.shape[1]):
            if not member_mask[b, g] or not token_mask[b, g].any():
                continue
            token_losses = []
            for t in range(logp.shape[2]):
                if not token_mask[b, g, t]:
                    continue
                ratio = torch.exp(logp[b, g, t] - old_logp[b, g, t])
                clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
                advantage = advantages[b, g]
                token_loss = -torch.min(ratio * advantage, clipped * advantage)
                log_ratio = ref_logp[b, g, t] - logp[b, g, t]
                token_loss = token_loss + beta * (torch.exp(log_ratio) - log_ratio - 1)
                token_losses.append(token_loss)
            sequence_losses.append(torch.stack(token_losses).mean())
    return torch.stack(sequence_losses).mean()


@pytest.mark.parametrize(
    ("eps_low", "eps_high", "beta"), [(0.2, None, 0.0), (0.2, 0.28, 0.04), (0.1, 0.5, 1.0)]
)
def test_policy_loss_matches_a_loop_reimplementation_of_trl_grpo(eps_low, eps_high, beta):
    generator = torch.Generator().manual_seed(4)
    shape = (3, 4, 5)
    logp = (-torch.rand(shape, generator=generator) * 3).requires_grad_()
    old_logp = logp.detach() + 0.4 * torch.randn(shape, generator=generator)  # many clipped
    ref_logp = logp.detach() + 0.3 * torch.randn(shape, generator=generator)
    advantages = torch.randn(shape[:2], generator=generator)
    lengths = torch.randint(0, 6, shape[:2], generator=generator)
    token_mask = torch.arange(5) < lengths.unsqueeze(-1)
    member_mask = torch.rand(shape[:2], generator=generator) > 0.2

    loss, stats = policy_loss(
        logp, old_logp, ref_logp, advantages, token_mask, member_mask, eps_low, eps_high, beta
    )
    upper = eps_low if eps_high is None else eps_high
    logp_ref = logp.detach().clone().requires_grad_()
    expected = _reference_grpo_loss(
        logp_ref, old_logp, ref_logp, advantages, token_mask, member_mask, eps_low, upper, beta
    )
    torch.testing.assert_close(loss, expected)
    (gradient,) = torch.autograd.grad(loss, logp)
    (expected_gradient,) = torch.autograd.grad(expected, logp_ref)
    torch.testing.assert_close(gradient, expected_gradient)

    # The statistics, counted token by token.
    valid = token_mask & (member_mask & token_mask.any(-1)).unsqueeze(-1)
    ratio = torch.exp(logp.detach() - old_logp)
    token_advantages = advantages.unsqueeze(-1).expand(shape)
    low = ((ratio < 1 - eps_low) & (token_advantages < 0) & valid).sum() / valid.sum()
    high = ((ratio > 1 + upper) & (token_advantages > 0) & valid).sum() / valid.sum()
    torch.testing.assert_close(stats["clip_ratio_low"], low)
    torch.testing.assert_close(stats["clip_ratio_high"], high)
    torch.testing.assert_close(stats["clip_ratio"], low + high)
    assert low > 0 and high > 0  # the test exercises both clip edges
    torch.testing.assert_close(stats["ratio_mean"], ratio[valid].mean())
    torch.testing.assert_close(stats["pg_loss"] + beta * stats["kl"], loss.detach())
    zero_beta = _reference_grpo_loss(
        logp.detach(), old_logp, ref_logp, advantages, token_mask, member_mask, eps_low, upper, 0.0
    )
    torch.testing.assert_close(stats["pg_loss"], zero_beta)


def test_policy_loss_with_no_old_logp_is_the_on_policy_gradient():
    generator = torch.Generator().manual_seed(5)
    logp = (-torch.rand(2, 3, 4, generator=generator)).requires_grad_()
    advantages = torch.randn(2, 3, generator=generator)
    lengths = torch.tensor([[1, 2, 4], [3, 4, 2]])
    token_mask = torch.arange(4) < lengths.unsqueeze(-1)
    loss, stats = policy_loss(logp, None, None, advantages, token_mask)
    explicit, _ = policy_loss(logp, logp.detach(), None, advantages, token_mask)
    torch.testing.assert_close(loss, explicit)
    (gradient,) = torch.autograd.grad(loss, logp)
    # Ratio 1: d loss / d logp_t = -A / (len * number of sequences) on valid tokens.
    expected = -advantages.unsqueeze(-1) / (lengths.unsqueeze(-1) * 6.0) * token_mask
    torch.testing.assert_close(gradient, expected)
    assert stats["clip_ratio"] == 0 and stats["ratio_mean"] == 1


def test_aggregations_match_loops():
    generator = torch.Generator().manual_seed(4)
    per_token = torch.randn(2, 3, 4, generator=generator)
    token_mask = torch.rand(2, 3, 4, generator=generator) > 0.3
    sequence_mask = torch.tensor([[True, True, False], [True, False, True]])
    token_mask &= sequence_mask.unsqueeze(-1)
    rows = [
        (per_token[b, g][token_mask[b, g]].tolist())
        for b in range(2)
        for g in range(3)
        if sequence_mask[b, g] and token_mask[b, g].any()
    ]
    all_tokens = [value for row in rows for value in row]
    # an all-masked member still counts as a sequence (with value 0) unless sequence_mask drops it
    count = int(sequence_mask.sum())
    expected = {
        "token_mean": sum(all_tokens) / len(all_tokens),
        "sequence_sum": sum(sum(row) for row in rows) / count,
        "sequence_mean": sum(sum(row) / len(row) for row in rows) / count,
    }
    for aggregation, value in expected.items():
        result = aggregate(per_token, token_mask, sequence_mask, aggregation)
        assert result.item() == pytest.approx(value, rel=1e-5), aggregation
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(per_token, token_mask, sequence_mask, "sum")


def test_policy_loss_rejects_bad_input():
    logp = torch.zeros(2, 3, 4)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, None, None, torch.zeros(2, 3), mask, beta=0.1)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, None, None, torch.zeros(2, 4), mask)
    with pytest.raises(ValueError, match="token_mask"):
        policy_loss(logp, None, None, torch.zeros(2, 3), mask[..., :2])


def test_tail_negatives_are_a_uniform_draw_below_the_window_weighted_by_the_inverse_rate():
    num_items, draws = 9, 3
    window_and_above = torch.tensor([[0, 4], [8, 7]]).repeat(2000, 1)
    target = torch.tensor([5, 0]).repeat(2000)
    generator = torch.Generator().manual_seed(0)
    items, weight = tail_negatives(window_and_above, target, num_items, draws, generator)
    assert weight == pytest.approx(6 / 3)  # 9 items less the positive and 2 above: M = 6
    assert (items.sort(-1).values.diff(dim=-1) > 0).all()  # distinct
    for row, (excluded, positive) in enumerate([({0, 4}, 5), ({8, 7}, 0)]):
        drawn = items[row::2]
        tail = [item for item in range(num_items) if item not in excluded | {positive}]
        counts = torch.bincount(drawn.flatten(), minlength=num_items).double()
        assert counts[sorted(excluded | {positive})].sum() == 0
        # each tail item is drawn with probability 3/6 in each of 2000 contexts
        assert ((counts[tail] - 1000).abs() < 5 * math.sqrt(2000 * 0.25)).all()
    # drawing all M is the whole tail, weight 1
    everything, weight = tail_negatives(window_and_above[:2], target[:2], num_items, 6)
    assert everything.tolist() == [[1, 2, 3, 6, 7, 8], [1, 2, 3, 4, 5, 6]] and weight == 1.0
    with pytest.raises(ValueError, match=r"count must be in \[1, 6\]"):
        tail_negatives(window_and_above, target, num_items, 7)


def test_tawin_tail_option_joins_weighted_tail_members_and_checks_its_settings():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0]])
    target = torch.tensor([6])
    objective = TAWinWPAUC(target_k=2, window_width=2, tail_negatives=2, tail_weight=0.75)
    group = objective.group(
        RolloutContext(ScoreTable(scores), target, torch.Generator().manual_seed(0))
    )
    # window negative-ranks [1, 3): items 1, 2; tail: 2 of the M = 8 - 1 - 3 = 4 items 3, 4, 5, 7
    assert group.items[0, :3].tolist() == [6, 1, 2]
    assert set(group.items[0, 3:].tolist()) <= {3, 4, 5, 7}
    # tail weight 0.75 * M / t = 0.75 * 4 / 2
    torch.testing.assert_close(group.weights, torch.tensor([[1.0, 1.0, 1.0, 1.5, 1.5]]))
    plain = TAWinWPAUC(target_k=2, window_width=2).group(RolloutContext(ScoreTable(scores), target))
    assert plain.items.tolist() == [[6, 1, 2]] and plain.weights is None
    with pytest.raises(ValueError, match="TAWinWPAUC: tail_negatives = 5 exceeds the 4"):
        TAWinWPAUC(target_k=2, window_width=2, tail_negatives=5).check_catalog(8)
    with pytest.raises(ValueError, match="tail_negatives needs a hard window"):
        TAWinWPAUC(target_k=2, window_width=2, tail_negatives=2, soft_temperature=1.0)
    with pytest.raises(ValueError, match="tail_negatives must be >= 0"):
        TAWinWPAUC(target_k=2, window_width=2, tail_negatives=-1)
    with pytest.raises(ValueError, match="tail_weight must be > 0"):
        TAWinWPAUC(target_k=2, window_width=2, tail_negatives=2, tail_weight=0.0)


def test_objectives_import_no_lightning():
    import subprocess
    import sys

    check = "import sys, wpauc.objectives; assert 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)
