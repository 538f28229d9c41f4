"""The exact expected update of an objective, and whether it keeps the true order.

Setting: a context with true next-item distribution p over N items and a policy pi with
item scores s = log pi. An RL step draws the positive y ~ p, the objective builds the group
from pi's ranking (beam, window, samples) and the loss pushes each member's score along its
advantage. At ratio 1 the ascent direction on the scores is, per context,

    u_i = E_{y ~ p} [ sum_k A_k(y) 1[item_k(y) = i] / |G(y)| ]

(`expected_score_update`, exact: every y in p's support is enumerated; sampled negatives
are averaged over draws). For a tabular softmax policy (one free logit per item, the most
flexible model) the logits move by `u - pi * sum(u)` and the log-probs by that minus its
pi-mean (`tabular_log_prob_update`). An objective is order-consistent at pi when that
update never closes the gap between two items in the order of p: then repeated steps can
sharpen the ranking but not reorder it (`order_report`). `simulate_tabular_policy` runs
the steps and tracks the true HR@K of pi's ranking.

For the beam-gated window (`TAWinWPAUC(gate="beam")`, and `BeamPAUC` gated, its K = 1 case)
the expected update has a closed form (`gated_window_update`, derived in docs/design.md
section 11) whose lower-edge quantities `lower_edge` reports: which beam items fall below
the items outside the beam, and how much tail weight (`tail_negatives`) prevents it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wpauc.analysis.distribution import row_spearman
from wpauc.decoding import ScoreTable
from wpauc.objectives import Objective, PolicyLoss, RolloutContext


def expected_score_update(
    objective: Objective,
    true_probs: Tensor,
    scores: Tensor,
    loss: PolicyLoss | None = None,
    num_draws: int = 1,
    seed: int = 0,
) -> Tensor:
    """`[N]` expected ascent direction on the item scores of one context (see module doc).

    Args:
        objective: the objective whose groups are built.
        true_probs: `[N]` the context's true next-item distribution p.
        scores: `[N]` the policy's item scores (log pi, or any scores ranking the catalog).
        loss: gives the advantages (its `scale`); default `PolicyLoss()`.
        num_draws: groups drawn per positive for objectives with random negatives (1 for
            deterministic, beam-based objectives).
        seed: seed of those draws.
    """
    loss = loss if loss is not None else PolicyLoss()
    num_items = scores.shape[-1]
    positives = torch.nonzero(true_probs > 0).flatten()
    weights = true_probs[positives].double() / num_draws
    update = torch.zeros(num_items, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(num_draws):
        table = ScoreTable(scores.unsqueeze(0).expand(len(positives), -1))
        group = objective.group(RolloutContext(table, positives, generator))
        advantages = loss.advantages(group).double() * group.member_mask
        per_member = advantages / group.member_mask.sum(-1, keepdim=True).clamp_min(1)
        update.index_add_(0, group.items.flatten(), (per_member * weights[:, None]).flatten())
    return update


def tabular_log_prob_update(score_update: Tensor, log_probs: Tensor) -> Tensor:
    """`[N]` first-order change of log pi when a softmax policy with one logit per item takes
    the step `score_update` on its log-probs (chain rule through the softmax)."""
    probs = log_probs.double().exp()
    logit_step = score_update.double() - probs * score_update.double().sum()
    return logit_step - (probs * logit_step).sum()


def order_report(log_prob_update: Tensor, true_probs: Tensor, top: int = 50) -> dict[str, float]:
    """Does an update keep the order of p on p's top `top` items?

    Returns:
        `spearman`: rank correlation of the update with p over those items (1: the update
        grows with p, it sharpens in p's order); `adjacent_violations`: fraction of
        consecutive pairs in p's order (p_a > p_b) whose gap the update closes
        (`update_a < update_b`): each such pair is reordered if steps are repeated;
        `top_vs_rest`: mean update on those items minus the mean update on the rest of the
        catalog, weighted by p (> 0: mass moves to the items that matter).
    """
    order = torch.argsort(true_probs, descending=True)
    head = order[:top]
    head_update = log_prob_update[head].double()
    closes = head_update[:-1] < head_update[1:]
    tail = order[top:]
    tail_probs = true_probs[tail].double()
    tail_mean = (
        (log_prob_update[tail].double() * tail_probs).sum() / tail_probs.sum()
        if tail_probs.sum() > 0
        else torch.tensor(0.0, dtype=torch.float64)
    )
    head_probs = true_probs[head].double()
    head_mean = (head_update * head_probs).sum() / head_probs.sum()
    return {
        "spearman": float(row_spearman(head_update[None], head_probs[None])[0]),
        "adjacent_violations": float(closes.double().mean()),
        "top_vs_rest": float(head_mean - tail_mean),
    }


def simulate_tabular_policy(
    objective: Objective,
    true_probs: Tensor,
    initial_log_probs: Tensor,
    steps: int,
    learning_rate: float,
    top_k: tuple[int, ...] = (1, 3, 10, 20),
    loss: PolicyLoss | None = None,
    num_draws: int = 1,
) -> list[dict[str, float]]:
    """Run `steps` expected updates on a tabular softmax policy for contexts with known p.

    Args:
        objective: the objective.
        true_probs: `[C, N]` true next-item distributions of C contexts.
        initial_log_probs: `[C, N]` the policy's starting log-probs (e.g. the SFT model's
            normalised item scores, or log p itself for the fixed-point check).
        steps: number of steps.
        learning_rate: step size on the logits.
        top_k: the K of the tracked true HR@K.
        loss: gives the advantages; default `PolicyLoss()`.
        num_draws: groups per positive for objectives with random negatives.

    Returns:
        One record per step (step 0 is the start): the mean over contexts of the true HR@K
        of pi's ranking (`hr@K` = p-mass of pi's top K), the entropy of pi and KL(p || pi).
    """
    logits = initial_log_probs.double().clone()
    history = [_tabular_state(logits, true_probs, top_k, step=0)]
    for step in range(1, steps + 1):
        for context in range(logits.shape[0]):
            log_probs = logits[context].log_softmax(-1)
            update = expected_score_update(
                objective, true_probs[context], log_probs.float(), loss, num_draws, seed=step
            )
            probs = log_probs.exp()
            logits[context] += learning_rate * (update - probs * update.sum())
        history.append(_tabular_state(logits, true_probs, top_k, step))
    return history


def _tabular_state(logits: Tensor, true_probs: Tensor, top_k, step: int) -> dict[str, float]:
    log_probs = logits.log_softmax(-1)
    probs = log_probs.exp()
    p = true_probs.double()
    order = torch.argsort(log_probs, dim=-1, descending=True)
    record = {"step": float(step)}
    for k in top_k:
        record[f"hr@{k}"] = float(p.gather(-1, order[:, :k]).sum(-1).mean())
    record["entropy"] = float(-(probs * log_probs).sum(-1).mean())
    support = p > 0
    kl = torch.where(support, p * (p.clamp_min(1e-300).log() - log_probs), torch.zeros_like(p))
    record["kl_to_oracle"] = float(kl.sum(-1).mean())
    return record


def gated_window_update(
    true_probs: Tensor,
    scores: Tensor,
    target_k: int,
    window_width: int,
    tail_negatives: int = 0,
    tail_weight: float = 1.0,
) -> Tensor:
    """`[N]` closed-form expected update of the beam-gated window, binary rewards, no eps.

    The objective is `TAWinWPAUC(target_k=K, window_width=w, gate="beam", tail_negatives=t,
    tail_weight=lambda)`: window negative-ranks `[lo, hi) = [K - 1, K - 1 + w)`, beam
    `W = hi + 1`, G = w + 1 (K = 1 is gated `BeamPAUC(num_negatives=w)`: the group is the
    beam). With `r_j` the item at pi-rank j, `m = w + lambda M` (M = N - W tail negatives;
    lambda = 0 without a tail) and `c = 1 / (sqrt(m) (G + t))`:

        u(r_j) = c m p_j                        j < lo      (only ever the positive)
        u(r_lo) = c (m p_lo - sum_{lo<k<=hi} p_k)           (a negative when y is below it)
        u(r_j) = c ((m + 1) p_j - P_B)          lo < j <= hi (a negative whenever y != r_j)
        u(r_j) = -lambda c P_B                  j > hi      (out of the beam; 0 untailed)

    where P_B is the p-mass of the beam. Matches `expected_score_update` up to GRPO's eps.

    Args:
        true_probs: `[N]` p.
        scores: `[N]` the policy's item scores (only their ranking matters, no ties).
        target_k: K.
        window_width: w.
        tail_negatives: t, the number of drawn tail negatives (0: no tail).
        tail_weight: lambda, used when `tail_negatives > 0`.
    """
    lo, hi = target_k - 1, target_k - 1 + window_width
    num_items = scores.shape[-1]
    if target_k < 1 or window_width < 1 or hi + 1 > num_items:
        raise ValueError(
            f"gated_window_update: need target_k >= 1, window_width >= 1 and a beam of "
            f"{hi + 1} <= {num_items} items, got target_k={target_k}, window_width={window_width}"
        )
    tail_size = num_items - hi - 1
    lam = tail_weight if tail_negatives > 0 else 0.0
    effective_negatives = window_width + lam * tail_size
    scale = 1.0 / (effective_negatives**0.5 * (window_width + 1 + tail_negatives))
    order = torch.argsort(scores, descending=True)
    p = true_probs.double()[order]
    beam_mass = p[: hi + 1].sum()
    ranked = torch.empty(num_items, dtype=torch.float64)
    ranked[:lo] = effective_negatives * p[:lo]
    ranked[lo] = effective_negatives * p[lo] - p[lo + 1 : hi + 1].sum()
    ranked[lo + 1 : hi + 1] = (effective_negatives + 1) * p[lo + 1 : hi + 1] - beam_mass
    ranked[hi + 1 :] = -lam * beam_mass
    update = torch.empty_like(ranked)
    update[order] = scale * ranked
    return update


def lower_edge(
    true_probs: Tensor, scores: Tensor, target_k: int, window_width: int
) -> dict[str, Tensor]:
    """Per context `[C]`: does the beam-gated window push its beam's last item below the
    items outside the beam (see `gated_window_update`)?

    Args:
        true_probs: `[C, N]` p.
        scores: `[C, N]` the policy's item scores (their ranking sets the beam).
        target_k: K.
        window_width: w (beam W = K + w, group G = w + 1).

    Returns:
        `beam_mass` P_B; `threshold` P_B / G: a beam item below the window's first negative
        with p under it is pushed below every item outside the beam (for K > 1 the beam is
        wider than the group, so the threshold exceeds the beam's mean p and the last item
        always falls); `last_prob`, p of the beam's last item; `breaks`, 1.0 where
        `last_prob < threshold`; `min_tail_weight`, the smallest `tail_weight` lambda that
        keeps the last item above the tail, `max(0, (P_B - G p_last) / (P_B + M p_last))`
        with M = N - W items outside the beam.
    """
    width = target_k + window_width
    group_size = window_width + 1
    tail_size = scores.shape[-1] - width
    beam = torch.topk(scores, width, dim=-1).indices
    beam_probs = true_probs.double().gather(-1, beam)
    beam_mass = beam_probs.sum(-1)
    last_prob = beam_probs[:, -1]
    threshold = beam_mass / group_size
    needed = (beam_mass - group_size * last_prob) / (beam_mass + tail_size * last_prob)
    return {
        "beam_mass": beam_mass,
        "threshold": threshold,
        "last_prob": last_prob,
        "breaks": (last_prob < threshold).double(),
        "min_tail_weight": needed.clamp_min(0.0),
    }
