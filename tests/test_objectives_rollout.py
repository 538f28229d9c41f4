"""Objective groups against brute force, with the policy replaced by a score table.

`RecordingTable` holds the exact item scores `[B, N]`; its beam is their top-W, sorted,
which is what an exact constrained beam search returns. The group each objective builds
is then compared with negatives ranked by brute force.
"""

import json
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

from wpauc.decoding import ScoreTable
from wpauc.objectives import (
    GRPOAUC,
    BeamPAUC,
    Group,
    PolicyLoss,
    RankAwareReward,
    RolloutContext,
    TAWinWPAUC,
    grpo_advantages,
    rank_aware_penalties,
    soft_window_weights,
)


class RecordingTable(ScoreTable):
    """A score table that remembers the beam widths it was asked for."""

    def __init__(self, scores):
        super().__init__(scores)
        self.beam_widths = []

    def beam(self, width):
        self.beam_widths.append(width)
        return super().beam(width)


def make_trie(num_items, code_length=3):
    lengths = 1 + torch.arange(num_items) % code_length
    codes = torch.arange(num_items * code_length).view(num_items, code_length)
    return SimpleNamespace(num_items=num_items, item_codes=codes, item_code_lengths=lengths)


def run(objective, scores, target, generator=None):
    """The objective's group on `scores`, with its default-loss advantages."""
    scorer = RecordingTable(scores)
    group = objective.group(RolloutContext(scorer, target, generator))
    advantages = PolicyLoss().advantages(group)
    rollout = SimpleNamespace(**vars(group), advantages=advantages)
    return rollout, scorer


def ranked_negatives(scores_row, positive):
    """Brute force: the other items, best first (scores are distinct in these tests)."""
    order = sorted(range(len(scores_row)), key=lambda item: -float(scores_row[item]))
    return [item for item in order if item != positive]


def distinct_scores(batch, num_items, seed):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.stack([torch.randperm(num_items, generator=generator).float() for _ in range(batch)])
        * -0.5
    )


def scores_with_positive_at(num_items, positive, beam_position):
    """One context's scores where `positive` sits at 0-based overall rank `beam_position`."""
    others = [item for item in range(num_items) if item != positive]
    order = others[:beam_position] + [positive] + others[beam_position:]
    scores = torch.empty(num_items)
    scores[torch.tensor(order)] = -torch.arange(num_items, dtype=torch.float32)
    return scores


def binary_group_checks(rollout, target):
    assert (rollout.items[:, 0] == target).all()
    assert (rollout.rewards[:, 0] == 1).all() and (rollout.rewards[:, 1:] == 0).all()
    assert rollout.member_mask.all()
    torch.testing.assert_close(rollout.advantages, grpo_advantages(rollout.rewards))


def test_beam_pauc_group_is_the_top_m_negatives():
    num_items, m = 12, 4
    scores = torch.stack(
        [scores_with_positive_at(num_items, 5, position) for position in (0, 2, 4, 5, 9)]
    )
    target = torch.full((5,), 5)
    rollout, scorer = run(BeamPAUC(num_negatives=m), scores, target)
    assert scorer.beam_widths == [m + 1]
    binary_group_checks(rollout, target)
    for row in range(5):
        assert rollout.items[row, 1:].tolist() == ranked_negatives(scores[row], 5)[:m]
    assert rollout.stats["positive_rank"].tolist() == [0, 2, 4, 5, 5]  # 5 = not in the beam
    assert rollout.stats["positive_in_beam"].item() == pytest.approx(3 / 5)


@pytest.mark.parametrize(
    "window",
    [
        {"alpha": 0.0, "d": 0.3},
        {"alpha": 0.1, "d": 0.2},
        {"alpha": 0.25, "d": 0.15},
        {"alpha": 0.7, "d": 0.3},
        {"target_k": 1, "window_width": 3},
        {"target_k": 4, "window_width": 2},
        {"target_k": 5, "window_width": 6},
    ],
)
def test_tawin_group_holds_exactly_the_window_negatives(window):
    num_items = 11  # n = 10 negatives
    positions = list(range(num_items))  # the positive at every overall rank, incl. the last
    positive = 3
    scores = torch.stack([scores_with_positive_at(num_items, positive, p) for p in positions])
    scores = torch.cat([scores, distinct_scores(6, num_items, seed=7)])
    target = torch.tensor([positive] * num_items + [0, 1, 2, 8, 9, 10])
    objective = TAWinWPAUC(**window)
    rollout, scorer = run(objective, scores, target)

    n = num_items - 1
    if "alpha" in window:
        alpha, d = Fraction(str(window["alpha"])), Fraction(str(window["d"]))
        window_ranks = [r for r in range(n) if alpha <= Fraction(r, n) < alpha + d]
    else:
        first = window["target_k"] - 1
        window_ranks = list(range(first, first + window["window_width"]))
    assert scorer.beam_widths == [window_ranks[-1] + 2]  # ceil((alpha + d) n) + 1
    binary_group_checks(rollout, target)
    for row in range(scores.shape[0]):
        negatives = ranked_negatives(scores[row], int(target[row]))
        assert rollout.items[row, 1:].tolist() == [negatives[r] for r in window_ranks]


def test_tawin_threshold_adjustment_when_the_positive_is_in_the_beam():
    # Beam order by score: items 0, 1, positive 7, 2, 3, 4, 5, ...; window negative-ranks
    # [3, 5) must be items 3 and 4 (beam positions 4 and 5), not items 2 and 3.
    scores = scores_with_positive_at(10, 7, 2).unsqueeze(0)
    rollout, scorer = run(TAWinWPAUC(target_k=4, window_width=2), scores, torch.tensor([7]))
    assert scorer.beam_widths == [6]
    assert rollout.items.tolist() == [[7, 3, 4]]
    # Positive below the window in the beam: nothing shifts.
    scores = scores_with_positive_at(10, 7, 5).unsqueeze(0)
    rollout, _ = run(TAWinWPAUC(target_k=4, window_width=2), scores, torch.tensor([7]))
    assert rollout.items.tolist() == [[7, 3, 4]]
    # Positive out of the beam: the top hi + 1 = 6 beams are all negatives.
    scores = scores_with_positive_at(10, 7, 8).unsqueeze(0)
    rollout, _ = run(TAWinWPAUC(target_k=4, window_width=2), scores, torch.tensor([7]))
    assert rollout.items.tolist() == [[7, 3, 4]]
    assert rollout.stats["positive_rank"].tolist() == [6]


def test_tawin_saturate_zeroes_contexts_whose_positive_beats_the_window():
    # target_k = 3, width 2: window negative-ranks [2, 4). Saturated iff the positive
    # out-scores the negative of rank 2, i.e. iff it is a hit at K = 3.
    num_items, positive = 9, 4
    positions = [0, 1, 2, 3, 6]
    scores = torch.stack([scores_with_positive_at(num_items, positive, p) for p in positions])
    target = torch.full((len(positions),), positive)
    rollout, _ = run(TAWinWPAUC(target_k=3, window_width=2, saturate=True), scores, target)
    hit_at_3 = torch.tensor([p < 3 for p in positions])
    assert (rollout.advantages[hit_at_3] == 0).all()
    torch.testing.assert_close(
        rollout.advantages[~hit_at_3], grpo_advantages(rollout.rewards[~hit_at_3])
    )
    assert rollout.stats["saturated"].item() == pytest.approx(3 / 5)
    # A tie with the window's top negative does not saturate.
    tied = scores_with_positive_at(num_items, positive, 2)
    top_window_negative = ranked_negatives(tied, positive)[2]
    tied[positive] = tied[top_window_negative]
    rollout, _ = run(
        TAWinWPAUC(target_k=3, window_width=2, saturate=True), tied.unsqueeze(0), target[:1]
    )
    assert (rollout.advantages != 0).any()


def test_tawin_soft_window_weights_and_hard_limit():
    num_items, positive = 12, 0
    scores = distinct_scores(3, num_items, seed=11)
    target = torch.full((3,), positive)
    hard, _ = run(TAWinWPAUC(target_k=3, window_width=4), scores, target)
    soft, scorer = run(
        TAWinWPAUC(target_k=3, window_width=4, soft_temperature=1e-3), scores, target
    )
    assert scorer.beam_widths == [3 - 1 + 4 + 2]  # one more negative to place the lower edge
    # tau -> 0: the window members get the hard advantages, everything else 0.
    for row in range(3):
        negatives = ranked_negatives(scores[row], positive)
        assert soft.items[row, 1:].tolist() == negatives[: soft.items.shape[1] - 1]
        expected = torch.zeros(soft.items.shape[1])
        expected[0] = hard.advantages[row, 0]
        expected[1 + 2 : 1 + 6] = hard.advantages[row, 1:]
        torch.testing.assert_close(soft.advantages[row], expected, atol=1e-4, rtol=1e-4)


def test_soft_window_weights_closed_form():
    scores = torch.tensor([[0.0, -1.0, -2.0, -4.0, -5.0, -7.0]])
    tau = 0.7
    weights = soft_window_weights(scores, 2, 4, tau)
    top, bottom = -1.5, -4.5
    expected = torch.sigmoid((top - scores) / tau) * torch.sigmoid((scores - bottom) / tau)
    torch.testing.assert_close(weights, expected)
    open_edges = soft_window_weights(scores, 0, 6, tau)
    torch.testing.assert_close(open_edges, torch.ones_like(scores))


def test_grpo_auc_policy_sampler_knows_the_exact_positive_rank():
    scores = distinct_scores(4, 10, seed=3)
    target = torch.tensor([0, 5, 9, 2])
    rollout, _ = run(GRPOAUC(num_negatives=3, sampler="policy"), scores, target)
    expected = [(scores[row] > scores[row, target[row]]).sum().item() for row in range(4)]
    assert rollout.stats["positive_rank"].tolist() == expected
    binary_group_checks(rollout, target)


def test_rank_aware_reward_values_and_modes():
    num_items, beams, positive = 10, 4, 6
    penalties = rank_aware_penalties(beams).tolist()
    scores = torch.stack([scores_with_positive_at(num_items, positive, p) for p in (1, 7)])
    target = torch.full((2,), positive)

    rollout, _ = run(RankAwareReward(num_beams=beams), scores, target)
    in_beam, missed = rollout.rewards.tolist()
    assert in_beam == pytest.approx([penalties[0], 1.0, penalties[2], penalties[3]])
    # The beam missed the target: it replaces the last beam.
    assert missed == pytest.approx([penalties[0], penalties[1], penalties[2], 1.0])
    assert rollout.items[1].tolist() == ranked_negatives(scores[1], positive)[:3] + [positive]
    assert rollout.stats["positive_rank"].tolist() == [1, beams]
    torch.testing.assert_close(rollout.advantages, grpo_advantages(rollout.rewards))

    generated, _ = run(
        RankAwareReward(num_beams=beams, positive_only_if_generated=True), scores, target
    )
    assert generated.rewards[0].tolist() == pytest.approx(in_beam)
    assert generated.items[1].tolist() == ranked_negatives(scores[1], positive)[:4]
    assert (generated.rewards[1] == 0).all() and (generated.advantages[1] == 0).all()


def test_rollout_completions_follow_the_trie():
    trie = make_trie(6, code_length=3)
    items = torch.tensor([[0, 1, 2], [5, 4, 3]])
    member_mask = torch.tensor([[True, True, False], [True, True, True]])
    group = Group(items, torch.zeros(2, 3), member_mask, torch.zeros_like(member_mask))
    completions, mask = group.completions(trie)
    assert completions.tolist() == trie.item_codes[items].tolist()
    assert mask.sum(-1).tolist() == [[1, 2, 0], [3, 2, 1]]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"alpha": 1.5, "d": 0.1}, "alpha"),
        ({"alpha": -0.1, "d": 0.1}, "alpha"),
        ({"alpha": 0.1, "d": 0.0}, "d"),
        ({"alpha": 0.1, "d": 1.5}, "d"),
        ({"alpha": 0.6, "d": 0.5}, "alpha + d"),
        ({"alpha": 0.1}, "alpha/d"),
        ({}, "alpha/d/target_k/window_width"),
        (
            {"alpha": 0.1, "d": 0.1, "target_k": 3, "window_width": 2},
            "alpha/d/target_k/window_width",
        ),
        ({"target_k": 3}, "target_k/window_width"),
        ({"target_k": 0, "window_width": 2}, "target_k"),
        ({"target_k": 2, "window_width": 0}, "window_width"),
        ({"target_k": 20, "window_width": 5, "max_beam_width": 20}, "max_beam_width"),
        ({"target_k": 2, "window_width": 2, "soft_temperature": 0.0}, "soft_temperature"),
    ],
)
def test_tawin_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"TAWinWPAUC: {key.replace('+', '[+]')} "):
        TAWinWPAUC(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"beta": -1.0}, "beta"),
        ({"num_iterations": 0}, "num_iterations"),
        ({"epsilon_high": -0.1}, "epsilon_high"),
        ({"aggregation": "sum"}, "aggregation"),
    ],
)
def test_loss_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"model.loss.{key} "):
        PolicyLoss(**kwargs)


@pytest.mark.parametrize(
    ("objective", "key"),
    [
        (lambda: TAWinWPAUC(target_k=12, window_width=1), "target_k"),
        (lambda: TAWinWPAUC(target_k=8, window_width=4), "window_width"),
        (lambda: TAWinWPAUC(alpha=0.5, d=0.5, max_beam_width=6), "max_beam_width"),
        (lambda: TAWinWPAUC(alpha=0.12, d=0.01), "d"),  # [ceil(1.08), ceil(1.17)) is empty
        (lambda: BeamPAUC(num_negatives=10), "num_negatives"),
        (lambda: GRPOAUC(num_negatives=10), "num_negatives"),
        (lambda: RankAwareReward(num_beams=11), "num_beams"),
    ],
)
def test_catalog_dependent_errors_name_the_key_at_rollout(objective, key):
    scores = distinct_scores(2, 10, seed=0)  # N = 10, n = 9
    with pytest.raises(ValueError, match=f": {key} "):
        run(objective(), scores, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: GRPOAUC(num_negatives=0), "num_negatives"),
        (lambda: GRPOAUC(sampler="beam"), "sampler"),
        (lambda: GRPOAUC(temperature=0.0), "temperature"),
        (lambda: BeamPAUC(num_negatives=0), "num_negatives"),
        (lambda: RankAwareReward(num_beams=1), "num_beams"),
    ],
)
def test_other_config_errors_name_the_key(build, key):
    with pytest.raises(ValueError, match=f": {key} "):
        build()


def test_objectives_instantiate_from_class_path_and_reject_loss_settings():
    from jsonargparse import ArgumentParser

    from wpauc.objectives import Objective

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--objective", type=Objective)

    def instantiate(init_args):
        class_path = {"class_path": "wpauc.objectives.TAWinWPAUC", "init_args": init_args}
        config = parser.parse_args(["--objective", json.dumps(class_path)])
        return parser.instantiate(config).objective

    objective = instantiate({"target_k": 5, "window_width": 3, "saturate": True})
    assert isinstance(objective, TAWinWPAUC)
    assert (objective.window.target_k, objective.window.width, objective.saturate) == (5, 3, True)
    with pytest.raises(ValueError, match="TAWinWPAUC: alpha "):
        instantiate({"alpha": 2.0, "d": 0.1})
    # Loss settings belong to model.loss, not to the objective.
    with pytest.raises(Exception, match="beta"):
        instantiate({"target_k": 5, "window_width": 3, "beta": 0.1})


def test_logistic_pairwise_weights_give_the_bounded_surrogate_closed_form():
    num_items, positive = 12, 0
    scores = distinct_scores(3, num_items, seed=5)
    target = torch.full((3,), positive)
    tau = 0.7
    for objective in (
        BeamPAUC(num_negatives=4, pairwise="logistic", pairwise_temperature=tau),
        TAWinWPAUC(target_k=2, window_width=3, pairwise="logistic", pairwise_temperature=tau),
        GRPOAUC(num_negatives=4, pairwise="logistic", pairwise_temperature=tau),
    ):
        rollout, _ = run(objective, scores, target, torch.Generator().manual_seed(0))
        member_scores = scores.gather(1, rollout.items)
        weights = torch.sigmoid((member_scores[:, 1:] - member_scores[:, :1]) / tau)
        m_eff = weights.sum(-1, keepdim=True)
        torch.testing.assert_close(rollout.advantages[:, :1], m_eff.sqrt(), rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(
            rollout.advantages[:, 1:], -weights / m_eff.sqrt(), rtol=1e-3, atol=1e-4
        )


def test_gates_silence_contexts_outside_the_beam_or_the_band():
    num_items, positive = 20, 7
    positions = [0, 2, 4, 6, 9, 15]  # the positive's negative-rank in each context
    scores = torch.stack([scores_with_positive_at(num_items, positive, p) for p in positions])
    target = torch.full((len(positions),), positive)

    def live(objective):
        rollout, _ = run(objective, scores, target)
        return (rollout.advantages != 0).any(-1).tolist()

    # TAWin K=3, width 3: window negative-ranks [2, 5), beam width 6 (ranks 0..5 visible).
    assert live(TAWinWPAUC(target_k=3, window_width=3)) == [True] * 6
    assert live(TAWinWPAUC(target_k=3, window_width=3, gate="beam")) == [p < 6 for p in positions]
    assert live(TAWinWPAUC(target_k=3, window_width=3, gate="band")) == [
        2 <= p < 5 for p in positions
    ]
    assert live(TAWinWPAUC(target_k=3, window_width=3, gate="band", gate_band=2)) == [
        0 <= p < 7 for p in positions
    ]
    assert live(BeamPAUC(num_negatives=5, positive_only_if_generated=True)) == [
        p < 6 for p in positions
    ]


@pytest.mark.parametrize(
    "objective",
    [
        lambda: GRPOAUC(num_negatives=4, pairwise="logistic"),
        lambda: BeamPAUC(num_negatives=4, pairwise="logistic"),
        lambda: TAWinWPAUC(target_k=2, window_width=3, pairwise="logistic"),
    ],
)
def test_logistic_pairs_with_renormalised_scores_fail_when_the_module_is_built(objective):
    """Logistic pair weights need `ItemScorer.score`, which renormalised scoring refuses: the
    module refuses the combination when it is constructed, not at the first RL step."""
    from wpauc.module import RecommenderModule

    objective().check_scoring(renormalize=False)
    with pytest.raises(ValueError, match=r"model.objective: \w+: pairwise .*model.renormalize"):
        RecommenderModule(objective=objective(), renormalize=True)


def test_linear_pairs_and_the_rank_aware_reward_take_renormalised_scores():
    linear = (GRPOAUC(num_negatives=4), TAWinWPAUC(target_k=2, window_width=3))
    for objective in (*linear, RankAwareReward(num_beams=4)):
        objective.check_scoring(renormalize=True)
