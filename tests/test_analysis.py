"""wpauc.analysis against closed forms on toy distributions, autograd and scipy."""

import math

import pytest
import torch
from scipy.stats import entropy, spearmanr

from wpauc.analysis import (
    distribution_diagnostics,
    expected_score_update,
    gated_window_update,
    lower_edge,
    order_report,
    simulate_tabular_policy,
    tabular_log_prob_update,
)
from wpauc.decoding import ScoreTable
from wpauc.objectives import BeamPAUC, PolicyLoss, Rollout, RolloutContext, TAWinWPAUC

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
    group = objective.group(RolloutContext(ScoreTable(scores.detach()[None]), target))
    advantages = NO_EPS.advantages(group)
    logp = scores[group.items].unsqueeze(-1)  # one-token codes
    loss, _ = PolicyLoss(beta=0.0)(logp, Rollout(group, advantages, group.member_mask[..., None]))
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


# Distinct true probabilities, and a policy that orders them imperfectly (items 2 <-> 3,
# 5 <-> 6 swapped), so the closed forms are checked off the truth too.
P8 = torch.tensor([0.26, 0.20, 0.16, 0.13, 0.10, 0.08, 0.05, 0.02], dtype=torch.float64)
FLAWED = torch.tensor([-1.0, -1.2, -1.9, -1.7, -2.2, -2.9, -2.6, -3.5])


def gated(target_k, window_width, tail_negatives=0, tail_weight=1.0):
    return TAWinWPAUC(
        target_k=target_k,
        window_width=window_width,
        gate="beam",
        tail_negatives=tail_negatives,
        tail_weight=tail_weight,
    )


def expected_loss_gradient(objective, true_probs, scores):
    """-d/ds of E_{y~p}[loss(y)] by autograd through PolicyLoss (one-token codes)."""
    scores = scores.clone().requires_grad_(True)
    total = torch.zeros(())
    for positive in torch.nonzero(true_probs > 0).flatten().tolist():
        group = objective.group(
            RolloutContext(ScoreTable(scores.detach()[None]), torch.tensor([positive]))
        )
        advantages = PolicyLoss().advantages(group)
        logp = scores[group.items].unsqueeze(-1)
        rollout = Rollout(group, advantages, group.member_mask[..., None])
        loss, _ = PolicyLoss(beta=0.0)(logp, rollout)
        total = total + true_probs[positive].float() * loss
    (gradient,) = torch.autograd.grad(total, scores)
    return -gradient.double()


# (target_k, window_width): K = 1 is the group = the beam (gated beam-PAUC); K > 1 is the
# beam wider than the group. Tail: none, every tail item drawn (exact), half weight.
GATED_CASES = [(1, 2, 0, 1.0), (1, 2, 5, 1.0), (2, 2, 0, 1.0), (3, 3, 0, 1.0), (2, 2, 4, 0.5)]


@pytest.mark.parametrize(("target_k", "window_width", "tail", "weight"), GATED_CASES)
@pytest.mark.parametrize("scores", [P8.log().float(), FLAWED], ids=["truth", "flawed"])
def test_gated_window_closed_form_is_the_enumerated_update_and_the_loss_gradient(
    target_k, window_width, tail, weight, scores
):
    objective = gated(target_k, window_width, tail, weight)
    closed_form = gated_window_update(P8, scores, target_k, window_width, tail, weight)
    enumerated = expected_score_update(objective, P8.float(), scores)
    approx(enumerated, closed_form)
    approx(expected_loss_gradient(objective, P8, scores), closed_form)
    assert abs(closed_form.sum().item()) < 1e-12  # every group's advantages sum to zero


def test_gated_beam_pauc_is_the_gated_window_at_k_one():
    beam_pauc = BeamPAUC(num_negatives=3, positive_only_if_generated=True)
    approx(
        expected_score_update(beam_pauc, P8.float(), FLAWED), gated_window_update(P8, FLAWED, 1, 3)
    )


def test_a_drawn_tail_has_the_expected_update_of_the_whole_tail():
    # 2 of the 4 tail items per draw: the average of many draws is the closed form with t = 2
    draws = 3000
    drawn = expected_score_update(gated(2, 2, 2, 0.5), P8.float(), FLAWED, num_draws=draws)
    closed_form = gated_window_update(P8, FLAWED, 2, 2, tail_negatives=2, tail_weight=0.5)
    # A tail item's push is -lambda c P_B = E[sum_y p_y a B_y], B_y ~ Bernoulli(1/2) per
    # in-beam positive y: relative standard error sqrt(sum p_y^2 / P_B^2 / draws).
    beam = FLAWED.argsort(descending=True)[:4]
    relative_error = (P8[beam].square().sum() / P8[beam].sum().square() / draws).sqrt()
    tail_push = closed_form[FLAWED.argsort(descending=True)[4:]].abs().max()
    torch.testing.assert_close(drawn, closed_form, rtol=0, atol=5 * relative_error * tail_push)


@pytest.mark.parametrize(("target_k", "window_width"), [(1, 2), (2, 2)])
def test_the_gate_breaks_the_order_at_the_beam_lower_edge(target_k, window_width):
    truth = P8.log().float()
    beam = target_k + window_width
    update = gated_window_update(P8, truth, target_k, window_width)
    edge = lower_edge(P8[None], truth[None], target_k, window_width)
    beam_mass = P8[:beam].sum()
    assert edge["beam_mass"].item() == pytest.approx(beam_mass.item())
    assert edge["threshold"].item() == pytest.approx(beam_mass.item() / (window_width + 1))
    assert edge["last_prob"].item() == pytest.approx(P8[beam - 1].item())
    # nothing outside the beam moves; beam items below the window's first negative whose
    # p is under P_B / G fall below them
    assert (update[beam:] == 0).all()
    falls = torch.arange(len(P8)) < beam
    falls &= torch.arange(len(P8)) > target_k - 1
    falls &= P8 < edge["threshold"][0]
    assert falls.any() and edge["breaks"].item() == 1.0
    assert ((update < 0) == falls).all()
    # the top K keep their order: HR@K is kept at the truth
    assert (update[:target_k].diff() <= 0).all() and update[target_k - 1] >= 0


def test_min_tail_weight_is_where_the_last_beam_item_stops_falling():
    truth = P8.log().float()
    needed = lower_edge(P8[None], truth[None], 2, 2)["min_tail_weight"].item()
    assert 0 < needed < 1
    for weight, keeps in [(needed * 1.01, True), (needed * 0.99, False)]:
        update = gated_window_update(P8, truth, 2, 2, tail_negatives=4, tail_weight=weight)
        assert (update[3] > update[4]).item() == keeps  # the beam's last vs the tail's first


@pytest.mark.parametrize(("target_k", "window_width"), [(1, 2), (2, 2)])
def test_an_ungated_window_with_the_whole_tail_keeps_the_order_at_the_truth(target_k, window_width):
    # tail weight 1: in expectation the window runs from K - 1 to the catalog's end
    tail = len(P8) - target_k - window_width
    objective = TAWinWPAUC(target_k=target_k, window_width=window_width, tail_negatives=tail)
    update = expected_score_update(objective, P8.float(), P8.log().float())
    assert (update.diff() < 0).all()  # P8 is sorted: strictly decreasing, no gap closes


def test_tabular_dynamics_from_the_truth_break_the_lower_edge_and_the_tail_keeps_the_order():
    p = P8[None].float()
    start = P8.log()[None]
    for target_k, window_width in [(1, 2), (2, 2)]:
        beam = target_k + window_width
        gated_run = simulate_tabular_policy(
            gated(target_k, window_width), p, start, 20, 2.0, top_k=(target_k, beam)
        )
        assert all(
            r[f"hr@{target_k}"] == pytest.approx(gated_run[0][f"hr@{target_k}"]) for r in gated_run
        )
        assert gated_run[-1][f"hr@{beam}"] < gated_run[0][f"hr@{beam}"] - 0.01
        tail = len(P8) - beam
        tailed = simulate_tabular_policy(
            gated(target_k, window_width, tail), p, start, 20, 2.0, top_k=tuple(range(1, 8))
        )
        assert all(
            r[key] == pytest.approx(tailed[0][key])
            for r in tailed
            for key in r
            if key.startswith("hr")
        )
        assert tailed[-1]["kl_to_oracle"] > 0.01  # sharpened, not a fixed point


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
