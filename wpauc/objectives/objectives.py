"""RL objectives, one class per objective, chosen by `class_path` in YAML.

Every objective does two things per RL step:

1. `rollout(...)` (no gradients): for each context, build a group of catalog items (the
   positive and some negatives), give each a reward and turn the rewards into GRPO
   advantages. Which negatives enter the group decides which AUC is optimised
   (DESIGN.md section 2): uniform -> full AUC, policy samples -> AUC weighted by pi,
   top-m beam -> one-way partial AUC, beam ranks in a window -> windowed partial AUC.
2. `loss(...)`: the PPO-clipped, KL-regularised GRPO loss of the group members' per-token
   log-probs (`policy_loss`), which the caller computes for `Rollout.completions(trie)`.

Scores come from `wpauc.decoding` (constrained beam search, exact item scores), looked up
when called so tests can substitute them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from wpauc import decoding
from wpauc.decoding import ItemTrie
from wpauc.objectives.functional import (
    check_window,
    grpo_advantages,
    policy_loss,
    rank_aware_penalties,
    window_bounds,
)
from wpauc.objectives.sampling import beam_negatives, positive_beam_position, sample_negatives


@dataclass
class Rollout:
    """The groups of one batch of contexts, with what the loss and the logs need."""

    items: Tensor
    """`[B, G]` long: catalog index of every group member. Column 0 is the positive for
    GRPOAUC, BeamPAUC and TAWinWPAUC; RankAwareReward keeps beam order. Padding members
    (member_mask False) still hold a valid index so gathers never fail."""
    advantages: Tensor
    """`[B, G]` float: GRPO advantage of every member (0 for padding members)."""
    member_mask: Tensor
    """`[B, G]` bool: False for padding members."""
    rewards: Tensor
    """`[B, G]` float: reward of every member (1 for the positive, 0 or a penalty for
    negatives)."""
    stats: dict[str, Tensor] = field(default_factory=dict)
    """Detached values to log: scalars, plus `positive_rank` `[B]` (long) where the
    objective knows it: the number of negatives ranked above the positive, censored at the
    beam width W (the value W means "not in the beam", i.e. rank >= W)."""

    def completions(self, trie: ItemTrie) -> tuple[Tensor, Tensor]:
        """`(completions [B, G, L], completion_mask [B, G, L])`: the members' code tokens.

        L is the trie's longest code. Positions past a code's end (and all positions of
        padding members) are False in the mask; their token ids are whatever the trie pads
        with, so they must only be read under the mask.
        """
        codes = trie.item_codes.to(self.items.device)
        lengths = trie.item_code_lengths.to(self.items.device)
        completions = codes[self.items]
        positions = torch.arange(codes.shape[-1], device=self.items.device)
        completion_mask = positions < lengths[self.items].unsqueeze(-1)
        return completions, completion_mask & self.member_mask.unsqueeze(-1)


@dataclass
class _Group:
    """What an objective's group builder hands to the shared advantage computation."""

    items: Tensor
    rewards: Tensor
    member_mask: Tensor
    stats: dict[str, Tensor]
    weights: Tensor | None = None


def _positive_first_group(
    target: Tensor, negatives: Tensor, stats: dict[str, Tensor], weights: Tensor | None = None
) -> _Group:
    """Group = [positive, negatives...] with binary rewards (1 for the positive)."""
    items = torch.cat([target.unsqueeze(-1), negatives], dim=-1)
    rewards = torch.zeros(items.shape, dtype=torch.float32, device=items.device)
    rewards[:, 0] = 1.0
    member_mask = torch.ones(items.shape, dtype=torch.bool, device=items.device)
    return _Group(items, rewards, member_mask, stats, weights)


def _group_stats(rewards: Tensor, advantages: Tensor, member_mask: Tensor) -> dict[str, Tensor]:
    valid = member_mask.float()
    count = valid.sum().clamp_min(1.0)
    adv_mean = (advantages * valid).sum() / count
    return {
        "reward_mean": (rewards * valid).sum() / count,
        "adv_mean": adv_mean,
        "adv_std": (((advantages - adv_mean) * valid).square().sum() / count).sqrt(),
        "group_size": valid.sum(-1).mean(),
    }


class Objective(ABC):
    """Base class: loss settings, the rollout skeleton and the loss.

    Subclasses implement `_build_group`, which picks the members and their rewards.
    """

    def __init__(
        self,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        beta: float = 0.04,
        num_iterations: int = 1,
        renormalize: bool = False,
        scale_advantages: bool = True,
    ) -> None:
        """
        Args:
            epsilon: PPO clip range; the probability ratio is clipped to
                `[1 - epsilon, 1 + epsilon_high]`.
            epsilon_high: upper clip range (DAPO "clip-higher"); None uses `epsilon`.
            beta: weight of the k3 KL penalty to the frozen reference model (0 turns it off).
            num_iterations: policy updates per rollout (GRPO's mu); above 1 the same groups
                are reused and the ratio to the rollout policy's log-probs is clipped.
            renormalize: rank and sample items by scores renormalised over the trie's
                allowed continuations at each step instead of raw log-probs. Affects the
                rollout only; the loss always uses the raw per-token log-probs.
            scale_advantages: divide advantages by the group std (GRPO); False only centres.
        """
        if not 0.0 < epsilon < 1.0:
            raise self._config_error("epsilon", f"must be in (0, 1), got {epsilon}")
        if epsilon_high is not None and epsilon_high <= 0.0:
            raise self._config_error("epsilon_high", f"must be > 0, got {epsilon_high}")
        if beta < 0.0:
            raise self._config_error("beta", f"must be >= 0, got {beta}")
        if num_iterations < 1:
            raise self._config_error("num_iterations", f"must be >= 1, got {num_iterations}")
        self.epsilon = epsilon
        self.epsilon_high = epsilon_high
        self.beta = beta
        self.num_iterations = num_iterations
        self.renormalize = renormalize
        self.scale_advantages = scale_advantages

    def _config_error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{type(self).__name__}: {key} {message}")

    @torch.no_grad()
    def rollout(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Build each context's group under the current policy (no gradients).

        Args:
            policy: the causal LM (in whatever train/eval mode the caller chose).
            input_ids: `[B, P]` prompt tokens (left-padded, as `wpauc.decoding` expects).
            attention_mask: `[B, P]`.
            target: `[B]` catalog index of each context's positive.
            trie: the catalog's `ItemTrie`.
            generator: random generator for the samplers; None uses torch's global one.
        """
        target = target.to(device=input_ids.device, dtype=torch.long)
        if target.shape != (input_ids.shape[0],):
            raise ValueError(
                f"{type(self).__name__}.rollout: target must be [B] = [{input_ids.shape[0]}], "
                f"got {tuple(target.shape)}"
            )
        num_items = int(trie.num_items)
        if num_items < 2:
            raise ValueError(f"{type(self).__name__}.rollout: the catalog needs >= 2 items")
        if bool(((target < 0) | (target >= num_items)).any()):
            raise ValueError(
                f"{type(self).__name__}.rollout: target holds indices outside [0, {num_items})"
            )
        self.check_catalog(num_items)
        group = self._build_group(policy, input_ids, attention_mask, target, trie, generator)
        advantages = grpo_advantages(
            group.rewards,
            scale=self.scale_advantages,
            mask=group.member_mask,
            weights=group.weights,
        )
        stats = {**group.stats, **_group_stats(group.rewards, advantages, group.member_mask)}
        return Rollout(group.items, advantages, group.member_mask, group.rewards, stats)

    def check_catalog(self, num_items: int) -> None:
        """Raise ValueError naming the key when the settings cannot work on a catalog of
        `num_items` items. Runs at every rollout and, through the LightningModule, as soon as
        the catalog is loaded, so a bad setting fails before any training."""

    @abstractmethod
    def _build_group(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        generator: torch.Generator | None,
    ) -> _Group:
        """Pick each context's members and their rewards (and weights, if any)."""

    def loss(
        self,
        logp: Tensor,
        old_logp: Tensor | None,
        ref_logp: Tensor | None,
        rollout: Rollout,
        token_mask: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`policy_loss` of the members' per-token log-probs with this objective's settings.

        Args:
            logp: `[B, G, L]` current policy log-probs of `rollout.completions(trie)`.
            old_logp: `[B, G, L]` log-probs at rollout time; None when `num_iterations = 1`.
            ref_logp: `[B, G, L]` reference log-probs; None when `beta = 0`.
            rollout: the groups.
            token_mask: `[B, G, L]` the completion mask.
        """
        return policy_loss(
            logp,
            old_logp,
            ref_logp,
            rollout.advantages,
            token_mask,
            rollout.member_mask,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high,
            beta=self.beta,
        )

    def _beam_negatives(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        width: int,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Beam search of `width` with the positive dropped (see `beam_negatives`).

        Returns `(negatives [B, W-1], negative_scores [B, W-1], positive_score [B], stats)`,
        `positive_score` being the positive's beam score or -inf when it is not in the beam.
        """
        items, scores = decoding.constrained_beam_search(
            policy, input_ids, attention_mask, trie, width, renormalize=self.renormalize
        )
        if items.shape != (input_ids.shape[0], width):
            raise RuntimeError(
                f"{type(self).__name__}: beam search returned items of shape "
                f"{tuple(items.shape)}, expected {(input_ids.shape[0], width)}"
            )
        negatives, negative_scores, positive_position = beam_negatives(items, scores, target)
        in_beam = positive_position < width
        beam_position = positive_position.clamp_max(width - 1).unsqueeze(-1)
        positive_score = torch.where(
            in_beam, scores.gather(-1, beam_position).squeeze(-1), -torch.inf
        )
        stats = {"positive_in_beam": in_beam.float().mean(), "positive_rank": positive_position}
        return negatives, negative_scores, positive_score, stats


class GRPOAUC(Objective):
    """GRPO with sampled negatives: full AUC (uniform) or AUC weighted by the policy.

    Group = the positive + m negatives drawn from the catalog without the positive.
    """

    def __init__(
        self,
        num_negatives: int = 16,
        sampler: Literal["uniform", "policy"] = "uniform",
        temperature: float = 1.0,
        replacement: bool = False,
        **kwargs,
    ) -> None:
        """
        Args:
            num_negatives: m, negatives per group (G = m + 1).
            sampler: "uniform" draws negatives uniformly from the catalog (full AUC);
                "policy" draws them from the policy's item distribution
                `softmax(score_items / temperature)` over the catalog (AUC weighted by pi).
            temperature: SEQUENCE-level temperature of the policy sampler: it divides the
                whole item score `s(i|x)`, so items are drawn with probability
                proportional to `pi(i|x)^(1/T)`. This is not token-level sampling
                temperature, which would renormalise at every step.
            replacement: draw negatives i.i.d. (duplicates possible); with replacement the
                policy sampler's expected surrogate weights each negative exactly by its
                probability. Default: m distinct negatives.
            **kwargs: the loss settings of `Objective`.
        """
        super().__init__(**kwargs)
        if num_negatives < 1:
            raise self._config_error("num_negatives", f"must be >= 1, got {num_negatives}")
        if sampler not in ("uniform", "policy"):
            raise self._config_error("sampler", f"must be 'uniform' or 'policy', got {sampler!r}")
        if not temperature > 0.0:
            raise self._config_error("temperature", f"must be > 0, got {temperature}")
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.temperature = temperature
        self.replacement = replacement

    def check_catalog(self, num_items: int) -> None:
        if not self.replacement and self.num_negatives > num_items - 1:
            raise self._config_error(
                "num_negatives",
                f"= {self.num_negatives} exceeds the {num_items - 1} negatives of the catalog",
            )

    def _build_group(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        generator: torch.Generator | None,
    ) -> _Group:
        num_items = int(trie.num_items)
        stats: dict[str, Tensor] = {}
        if self.sampler == "uniform":
            logits = torch.zeros(target.shape[0], num_items, device=target.device)
        else:
            scores = decoding.score_items(
                policy, input_ids, attention_mask, trie, renormalize=self.renormalize
            )
            positive_score = scores.gather(-1, target.unsqueeze(-1))
            # Ties count against the positive, as in HR@K: rank = #negatives with s >= s+.
            stats["positive_rank"] = (scores >= positive_score).sum(-1) - 1
            logits = scores / self.temperature
        negatives = sample_negatives(
            logits, target, self.num_negatives, generator=generator, replacement=self.replacement
        )
        return _positive_first_group(target, negatives, stats)


class BeamPAUC(Objective):
    """Top-m beam-search negatives: one-way partial AUC, FPR <= m / n.

    Beam width m + 1; the positive is dropped from the beam list if there, and the top m
    of the rest are the negatives.
    """

    def __init__(self, num_negatives: int = 16, **kwargs) -> None:
        """
        Args:
            num_negatives: m, negatives per group (G = m + 1); beam width m + 1.
            **kwargs: the loss settings of `Objective`.
        """
        super().__init__(**kwargs)
        if num_negatives < 1:
            raise self._config_error("num_negatives", f"must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def check_catalog(self, num_items: int) -> None:
        width = self.num_negatives + 1
        if width > num_items:
            raise self._config_error(
                "num_negatives",
                f"= {self.num_negatives} needs beam width {width} > the catalog's {num_items} items",
            )

    def _build_group(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        generator: torch.Generator | None,
    ) -> _Group:
        negatives, _, _, stats = self._beam_negatives(
            policy, input_ids, attention_mask, target, trie, self.num_negatives + 1
        )
        return _positive_first_group(target, negatives, stats)


class TAWinWPAUC(Objective):
    """Threshold-Adjusted Windowed reweighting: windowed partial AUC, FPR in [alpha, alpha+d].

    Per context: constrained beam search of width `hi + 1` (`hi + 2` with a soft window,
    one more negative to place the lower edge), the positive dropped from the beam list
    (negatives below it move up one rank: the threshold adjustment); the group is the
    positive plus the negatives of negative-rank in `[lo, hi)`, `lo = ceil(alpha n)`,
    `hi = ceil((alpha + d) n)`, n = N - 1; advantages as GRPO on that group.

    The window is set either by `(alpha, d)` or by `(target_k, window_width)`. The latter
    maps to negative-ranks `[target_k - 1, target_k - 1 + window_width)`, i.e.
    `alpha = (target_k - 1) / n`, `d = window_width / n`. Why `target_k - 1`: the
    positive is a hit at K (`ge < K`) exactly when it out-ranks the negative of
    negative-rank K - 1, so the window starts with the first negative it must beat to
    enter the Top-K; negatives above it (ranks < K - 1) may stay above without costing
    HR@K, and with `saturate` a context stops contributing exactly when it is a hit at K.
    """

    def __init__(
        self,
        alpha: float | None = None,
        d: float | None = None,
        target_k: int | None = None,
        window_width: int | None = None,
        soft_temperature: float | None = None,
        saturate: bool = False,
        max_beam_width: int | None = None,
        **kwargs,
    ) -> None:
        """
        Args:
            alpha: window start as a false-positive rate, in [0, 1]; give with `d`.
            d: window width as a false-positive rate, in (0, 1], alpha + d <= 1.
            target_k: the Top-K to aim at (>= 1); give with `window_width` instead of
                `alpha` and `d`. Window negative-ranks `[target_k - 1, target_k - 1 +
                window_width)`.
            window_width: number of negatives in the window (>= 1), with `target_k`.
            soft_temperature: tau; if set, the window edges are soft: every beam negative
                is a group member with weight `sigmoid((t_top - s) / tau) * sigmoid((s -
                t_bottom) / tau)`, where t_top (t_bottom) is the midpoint of the scores at
                negative-ranks lo - 1 and lo (hi - 1 and hi), +inf (-inf) when the window
                starts at rank 0 (ends at the catalog's last negative). Scores are summed
                log-probs, so tau is in log-prob units; tau -> 0 gives the hard window. The
                weights enter the group's weighted mean and std and multiply the
                advantages; for binary rewards this gives `A+ = sqrt(m_eff)`, `A_j = -w_j /
                sqrt(m_eff)` with `m_eff = sum_j w_j`, i.e. the surrogate
                `sum_j w_j (s+ - s_j) / sqrt(m_eff)` (the hard formulas at weights 0/1).
            saturate: a context whose positive out-scores every window negative (its
                WPAUC is already 1 when alpha n is an integer, as with `target_k`) gets
                advantage 0 for all members.
            max_beam_width: largest beam width allowed (a compute cap); an error names it
                when the window needs more. None: no cap.
            **kwargs: the loss settings of `Objective`.
        """
        super().__init__(**kwargs)
        by_fraction = alpha is not None or d is not None
        by_rank = target_k is not None or window_width is not None
        if by_fraction == by_rank:
            raise self._config_error(
                "alpha/d/target_k/window_width",
                "set either (alpha, d) or (target_k, window_width), exactly one pair; got "
                f"alpha={alpha}, d={d}, target_k={target_k}, window_width={window_width}",
            )
        if by_fraction:
            if alpha is None or d is None:
                raise self._config_error("alpha/d", f"give both, got alpha={alpha}, d={d}")
            check_window(alpha, d, owner=type(self).__name__)
        else:
            if target_k is None or window_width is None:
                raise self._config_error(
                    "target_k/window_width",
                    f"give both, got target_k={target_k}, window_width={window_width}",
                )
            if target_k < 1:
                raise self._config_error("target_k", f"must be >= 1, got {target_k}")
            if window_width < 1:
                raise self._config_error("window_width", f"must be >= 1, got {window_width}")
        if soft_temperature is not None and not soft_temperature > 0.0:
            raise self._config_error("soft_temperature", f"must be > 0, got {soft_temperature}")
        if max_beam_width is not None and max_beam_width < 2:
            raise self._config_error("max_beam_width", f"must be >= 2, got {max_beam_width}")
        self.alpha = alpha
        self.d = d
        self.target_k = target_k
        self.window_width = window_width
        self.soft_temperature = soft_temperature
        self.saturate = saturate
        self.max_beam_width = max_beam_width
        if target_k is not None and window_width is not None:
            # The rank form knows its beam width before seeing the catalog.
            self._check_beam_width(self._beam_width(target_k - 1 + window_width, None))

    def window_ranks(self, num_negatives: int) -> tuple[int, int]:
        """Window negative-ranks `[lo, hi)` for a catalog with n = `num_negatives`."""
        if self.target_k is not None and self.window_width is not None:
            lo, hi = self.target_k - 1, self.target_k - 1 + self.window_width
            if self.target_k > num_negatives:
                raise self._config_error(
                    "target_k",
                    f"= {self.target_k} exceeds the catalog's {num_negatives} negatives",
                )
            if hi > num_negatives:
                raise self._config_error(
                    "window_width",
                    f"= {self.window_width}: window ranks [{lo}, {hi}) run past the catalog's "
                    f"{num_negatives} negatives",
                )
            return lo, hi
        assert self.alpha is not None and self.d is not None
        lo, hi = window_bounds(num_negatives, self.alpha, self.d)
        if hi <= lo:
            raise self._config_error(
                "d",
                f"= {self.d}: the window [ceil(alpha n), ceil((alpha + d) n)) = [{lo}, {hi}) "
                f"holds no negative for n = {num_negatives}",
            )
        return lo, hi

    def window_fractions(self, num_negatives: int) -> tuple[float, float]:
        """`(alpha, d)` of the window for n = `num_negatives` (e.g. for the WPAUC metric)."""
        if self.alpha is not None and self.d is not None:
            return self.alpha, self.d
        lo, hi = self.window_ranks(num_negatives)
        return lo / num_negatives, (hi - lo) / num_negatives

    def _beam_width(self, hi: int, num_items: int | None) -> int:
        width = hi + (2 if self.soft_temperature is not None else 1)
        return width if num_items is None else min(width, num_items)

    def _check_beam_width(self, width: int) -> None:
        if self.max_beam_width is not None and width > self.max_beam_width:
            raise self._config_error(
                "max_beam_width",
                f"= {self.max_beam_width} is too small: the window's upper rank needs beam "
                f"width {width}",
            )

    def check_catalog(self, num_items: int) -> None:
        _, hi = self.window_ranks(num_items - 1)
        self._check_beam_width(self._beam_width(hi, num_items))

    def _build_group(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        generator: torch.Generator | None,
    ) -> _Group:
        num_items = int(trie.num_items)
        lo, hi = self.window_ranks(num_items - 1)
        width = self._beam_width(hi, num_items)
        negatives, negative_scores, positive_score, stats = self._beam_negatives(
            policy, input_ids, attention_mask, target, trie, width
        )
        member_weights: Tensor | None = None
        if self.soft_temperature is None:
            members = negatives[:, lo:hi]
        else:
            members = negatives
            negative_weights = soft_window_weights(negative_scores, lo, hi, self.soft_temperature)
            member_weights = _with_positive_weight(negative_weights)
            stats["window_weight_sum"] = negative_weights.sum(-1).mean()
        if self.saturate:
            # Strictly above the window's top negative: a tie does not saturate.
            saturated = positive_score > negative_scores[:, lo]
            keep = (~saturated).float().unsqueeze(-1).expand(-1, 1 + members.shape[1])
            member_weights = keep if member_weights is None else member_weights * keep
            stats["saturated"] = saturated.float().mean()
        stats["window_lo"] = torch.tensor(float(lo), device=target.device)
        stats["window_hi"] = torch.tensor(float(hi), device=target.device)
        return _positive_first_group(target, members, stats, member_weights)


def _with_positive_weight(negative_weights: Tensor) -> Tensor:
    """Prepend weight 1 for the positive (column 0 of the group)."""
    ones = torch.ones_like(negative_weights[:, :1])
    return torch.cat([ones, negative_weights], dim=-1)


def soft_window_weights(negative_scores: Tensor, lo: int, hi: int, temperature: float) -> Tensor:
    """Soft membership of each negative in the window of negative-ranks `[lo, hi)`.

    Args:
        negative_scores: `[B, R]` scores of the negatives in rank order (best first).
        lo: first window rank.
        hi: one past the last window rank.
        temperature: tau of the sigmoid edges, in score units.

    Returns:
        `[B, R]` weights `sigmoid((t_top - s) / tau) * sigmoid((s - t_bottom) / tau)` with
        the edges at the score midpoints between ranks lo - 1 | lo and hi - 1 | hi (open
        edges when lo = 0 or hi = R).
    """
    num_ranked = negative_scores.shape[-1]
    if not 0 <= lo < hi <= num_ranked:
        raise ValueError(
            f"soft_window_weights: need 0 <= lo < hi <= {num_ranked}, got [{lo}, {hi})"
        )
    scores = negative_scores.float()
    weights = torch.ones_like(scores)
    if lo > 0:
        top_edge = 0.5 * (scores[:, lo - 1] + scores[:, lo])
        weights = weights * torch.sigmoid((top_edge.unsqueeze(-1) - scores) / temperature)
    if hi < num_ranked:
        bottom_edge = 0.5 * (scores[:, hi - 1] + scores[:, hi])
        weights = weights * torch.sigmoid((scores - bottom_edge.unsqueeze(-1)) / temperature)
    return weights


class RankAwareReward(Objective):
    """MiniOneRec's rank-aware reward on beam-search groups (for parity experiments).

    Beam search with `num_beams`; the target gets reward 1 and a non-target at beam
    position i gets `-(1/log2(i + 2)) / sum_j 1/log2(j + 2)` (sum over all `num_beams`
    positions), as MiniOneRec's rule reward + NDCG reward sum. Normal mode puts the
    positive in every group: when the beam misses it, it replaces the LAST beam
    (MiniOneRec's `add_gt` replaces the last generation even when the target is already
    there; we never duplicate it). "Positive only if generated": the group is exactly the
    beam list, and a group without the target gets reward 0 everywhere (MiniOneRec zeroes
    the NDCG penalties of hit-less groups), hence advantage 0. Advantages use the
    population std; MiniOneRec (via TRL) uses the unbiased one, a constant rescaling.
    """

    def __init__(
        self, num_beams: int = 16, positive_only_if_generated: bool = False, **kwargs
    ) -> None:
        """
        Args:
            num_beams: beam width = group size G.
            positive_only_if_generated: the group is the beam list as generated; groups
                that miss the target contribute nothing. False: the target always joins.
            **kwargs: the loss settings of `Objective`.
        """
        super().__init__(**kwargs)
        if num_beams < 2:
            raise self._config_error("num_beams", f"must be >= 2, got {num_beams}")
        self.num_beams = num_beams
        self.positive_only_if_generated = positive_only_if_generated

    def check_catalog(self, num_items: int) -> None:
        if self.num_beams > num_items:
            raise self._config_error(
                "num_beams", f"= {self.num_beams} exceeds the catalog's {num_items} items"
            )

    def _build_group(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        trie: ItemTrie,
        generator: torch.Generator | None,
    ) -> _Group:
        items, _ = decoding.constrained_beam_search(
            policy, input_ids, attention_mask, trie, self.num_beams, renormalize=self.renormalize
        )
        positive_position = positive_beam_position(items, target)
        hit = positive_position < self.num_beams
        stats = {"positive_in_beam": hit.float().mean(), "positive_rank": positive_position}
        if not self.positive_only_if_generated:
            items = items.clone()
            items[~hit, -1] = target[~hit]
        is_positive = items == target.unsqueeze(-1)
        penalties = rank_aware_penalties(self.num_beams).to(items.device).expand(items.shape)
        rewards = torch.where(is_positive, 1.0, penalties)
        rewards = rewards * is_positive.any(-1, keepdim=True).float()
        member_mask = torch.ones(items.shape, dtype=torch.bool, device=items.device)
        return _Group(items, rewards, member_mask, stats)
