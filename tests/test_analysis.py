"""wpauc.analysis against closed forms on toy distributions, autograd and scipy."""

import math

import pytest
import torch
from scipy.stats import entropy, spearmanr

from wpauc.analysis import (
    distribution_diagnostics,
    expected_score_update,
    order_report,
    simulate_tabular_policy,
    tabular_log_prob_update,
)
from wpauc.decoding import ScoreTable
from wpauc.objectives import BeamPAUC, PolicyLoss, TAWinWPAUC

P = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10, 0.0])
LOG_PI = torch.tensor([-1.0, -1.5, -2.0, -2.5, -3.0, -3.5])  # pi ranks items 0, 1, 2, ...
NO_EPS = PolicyLoss()


def approx(value, expected):
    # GRPO's std gets eps = 1e-4 added: relative error of order 1e-4
    torch.testing.assert_close(
        value, torch.as_tensor(expected, dtype=value.dtype), rtol=1e-3, atol=1e-4
    )


def test_window_at_rank_one_pushes_the_top_item_down_unless_p_exceeds_one_half():
    # TAWin K=1, width 1: the group is {y, the best negative}; A+ = 1, A- = -1, G = 2.
    update = expected_score_update(TAWinWPAUC(target_k=1, window_width=1), P, LOG_PI)
    expected = P.double() / 2
    expected[0] = P[0] - 0.5  # positive w.p. p0, the negative otherwise
    expected[1] = (P[1] - P[0]) / 2  # the negative exactly when y = item 0
    approx(update, expected)


def test_beam_pauc_closed_form():
    # BeamPAUC m = 2: beam of 3; negatives = the top two items other than y.
    update = expected_score_update(BeamPAUC(num_negatives=2), P, LOG_PI)
    a_pos, a_neg, group = math.sqrt(2), -1 / math.sqrt(2), 3
    expected = []
    for item in range(6):
        value = P[item].item() * a_pos
        for y in range(6):
            negatives = [j for j in range(6) if j != y][:2]
            if item in negatives:
                value += P[y].item() * a_neg
        expected.append(value / group)
    approx(update, expected)


def test_expected_update_is_the_loss_gradient_for_a_certain_positive():
    scores = LOG_PI.clone().requires_grad_(True)
    objective = TAWinWPAUC(target_k=2, window_width=2)
    target = torch.tensor([3])
    group = objective.group(ScoreTable(scores.detach()[None]), target)
    advantages = NO_EPS.advantages(group)
    logp = scores[group.items].unsqueeze(-1)  # one-token codes
    loss, _ = PolicyLoss(beta=0.0)(
        logp, None, None, group, advantages, group.member_mask[..., None]
    )
    (gradient,) = torch.autograd.grad(loss, scores)
    one_hot = torch.zeros(6)
    one_hot[3] = 1.0
    update = expected_score_update(objective, one_hot, LOG_PI)
    torch.testing.assert_close(update.float(), -gradient, rtol=1e-5, atol=1e-7)


def test_tabular_update_is_the_first_order_change_of_log_softmax():
    logits = torch.tensor([0.3, -0.2, 1.0, 0.0, -1.0], dtype=torch.float64)
    log_probs = logits.log_softmax(-1)
    score_update = torch.tensor([0.2, -0.1, 0.05, 0.3, -0.4], dtype=torch.float64)
    # the logit step of a tabular softmax under ascent on the log-probs, by autograd
    theta = logits.clone().requires_grad_(True)
    (logit_step,) = torch.autograd.grad((theta.log_softmax(-1) * score_update).sum(), theta)
    step = 1e-6
    finite_difference = ((logits + step * logit_step).log_softmax(-1) - log_probs) / step
    torch.testing.assert_close(
        tabular_log_prob_update(score_update, log_probs), finite_difference, rtol=1e-4, atol=1e-8
    )


def test_order_report_counts_closed_gaps():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    keeps = order_report(torch.tensor([0.3, 0.2, 0.1, 0.0]), p, top=4)
    assert keeps["adjacent_violations"] == 0 and keeps["spearman"] == pytest.approx(1.0)
    churns = order_report(torch.tensor([-0.3, 0.2, 0.1, 0.0]), p, top=4)
    assert churns["adjacent_violations"] == pytest.approx(1 / 3)
    assert churns["spearman"] == pytest.approx(spearmanr([-0.3, 0.2, 0.1, 0.0], p).statistic)
    report = order_report(torch.tensor([0.1, 0.1, -0.2, -0.2]), p, top=2)
    assert report["top_vs_rest"] == pytest.approx(0.3)


def test_window_at_rank_one_leaves_the_bayes_ranking_and_the_beam_gate_keeps_it():
    p = torch.tensor([[0.2, 0.15, 0.12, 0.1] + [0.43 / 12] * 12])
    start = p.log()
    churned = simulate_tabular_policy(TAWinWPAUC(target_k=1, window_width=1), p, start, 10, 1.0)
    assert churned[0]["hr@1"] == pytest.approx(0.2)
    # the top item is pushed down until another takes its place, which is then pushed down
    assert sum(record["hr@1"] for record in churned[1:]) / 10 < 0.18
    gated = simulate_tabular_policy(
        TAWinWPAUC(target_k=1, window_width=1, gate="beam"), p, start, 10, 1.0
    )
    assert all(record["hr@1"] == pytest.approx(0.2) for record in gated)
    assert gated[-1]["entropy"] < gated[0]["entropy"]  # it sharpens in p's order


def test_distribution_diagnostics_match_scipy():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 12, generator=generator)
    p = torch.softmax(2 * torch.randn(3, 12, generator=generator), -1)
    p[0, 5] = 0.0
    p[0] /= p[0].sum()
    result = distribution_diagnostics(scores, p, top=6)
    pi = torch.softmax(scores.double(), -1)
    for row in range(3):
        assert result["entropy"][row].item() == pytest.approx(entropy(pi[row]), rel=1e-5)
        assert result["top1_prob"][row].item() == pytest.approx(pi[row].max().item(), rel=1e-5)
        assert result["kl_to_oracle"][row].item() == pytest.approx(
            entropy(p[row].double(), pi[row]), rel=1e-5
        )
        head = p[row].argsort(descending=True)[:6]
        rho = spearmanr(scores[row, head], p[row, head]).statistic
        assert result["oracle_rank_corr"][row].item() == pytest.approx(rho, abs=1e-6)
    assert set(distribution_diagnostics(scores)) == {"entropy", "top1_prob"}
