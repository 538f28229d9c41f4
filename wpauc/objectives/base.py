"""The objective interface: an objective builds each context's group, nothing more.

Per RL step an objective reads a `RolloutContext` (the policy's ranking of the catalog as
an `ItemScorer`, each context's positive, the random generator), asks the scorer for what
it needs and returns a `Group`: the members, their rewards, optional member weights and
statistics to log. Which members enter the group decides which AUC is optimised
(docs/design.md): uniform negatives -> full AUC, policy samples -> AUC weighted by pi,
top-m beam -> one-way partial AUC, beam ranks in a window -> windowed partial AUC. How the
group's log-probs are optimised (advantages, clipping, KL) is `wpauc.objectives.PolicyLoss`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from wpauc.decoding import ItemScorer, ItemTrie
from wpauc.objectives.functional import beam_negatives, logistic_pair_weights
from wpauc.window import Window


@dataclass(frozen=True)
class RolloutContext:
    """What an objective sees of one batch of contexts at an RL step.

    An objective that needs more (the user's history, item metadata) gets a new field here,
    with a default, filled where the rollout is built; the objectives that do not read it
    stay as they are.
    """

    scorer: ItemScorer
    """The policy's ranking of the catalog for this batch of contexts."""
    target: Tensor
    """`[B]` catalog index of each context's positive."""
    generator: torch.Generator | None = None
    """Random generator of the samplers; None uses torch's global one."""


@dataclass
class Group:
    """Each context's group: who is in it, with what reward and weight."""

    items: Tensor
    """`[B, G]` long: catalog index of every member. Padding members (`member_mask` False)
    still hold a valid index so gathers never fail."""
    rewards: Tensor
    """`[B, G]` float: reward of every member."""
    member_mask: Tensor
    """`[B, G]` bool: False for padding members."""
    positive_mask: Tensor
    """`[B, G]` bool: True where the member is the context's positive (at most one)."""
    weights: Tensor | None = None
    """`[B, G]` non-negative member weights (soft window, saturation); None: all 1."""
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


def weigh_pairs_logistically(group: Group, scorer: ItemScorer, temperature: float) -> Group:
    """Multiply a positive-first group's negative weights by `logistic_pair_weights`.

    The positive (column 0) keeps its weight; the members' scores come from `scorer`.
    """
    scores = scorer.score(group.items)
    pair_weights = logistic_pair_weights(scores[:, 0], scores[:, 1:], temperature)
    weights = torch.cat([torch.ones_like(pair_weights[:, :1]), pair_weights], dim=-1)
    group.weights = weights if group.weights is None else group.weights * weights
    group.stats["pair_weight_mean"] = pair_weights.mean()
    return group


def gate_contexts(group: Group, keep: Tensor) -> Group:
    """Zero the weights of every member of the contexts where `keep` `[B]` is False, so
    they get advantage 0; logs the fraction kept as `gated_in`."""
    keep_weights = keep.float().unsqueeze(-1).expand_as(group.rewards)
    group.weights = keep_weights if group.weights is None else group.weights * keep_weights
    group.stats["gated_in"] = keep.float().mean()
    return group


def positive_first_group(
    target: Tensor, negatives: Tensor, stats: dict[str, Tensor], weights: Tensor | None = None
) -> Group:
    """Group = [positive, negatives...] with binary rewards (1 for the positive)."""
    items = torch.cat([target.unsqueeze(-1), negatives], dim=-1)
    rewards = torch.zeros(items.shape, dtype=torch.float32, device=items.device)
    rewards[:, 0] = 1.0
    member_mask = torch.ones(items.shape, dtype=torch.bool, device=items.device)
    positive_mask = torch.zeros_like(member_mask)
    positive_mask[:, 0] = True
    return Group(items, rewards, member_mask, positive_mask, weights, stats)


@dataclass
class RankedNegatives:
    """A beam with the positive dropped (the threshold adjustment, see `beam_negatives`)."""

    items: Tensor
    """`[B, W-1]` negatives by negative-rank, best first."""
    scores: Tensor
    """`[B, W-1]` their scores."""
    positive_score: Tensor
    """`[B]` the positive's beam score, -inf when it is not in the beam."""
    stats: dict[str, Tensor]
    """`positive_in_beam` (scalar) and `positive_rank` `[B]` (W when not in the beam)."""


class Objective(ABC):
    """Base class of the RL objectives: `group(context)` builds each context's group.

    Subclasses implement `_build_group`; they validate their settings in `__init__` and, for
    settings that depend on the catalog size or on how the policy scores items, in
    `check_catalog` and `check_scoring`.
    """

    pairwise: str = "linear"
    """How a group's pairs are weighed: set by `_set_pairwise` in the objectives that offer
    logistic pair weights; the others weigh every pair alike."""

    def group(self, context: RolloutContext) -> Group:
        """Build each context's group under the policy behind `context.scorer` (no
        gradients)."""
        num_items = int(context.scorer.num_items)
        target = context.target
        if target.dim() != 1:
            raise ValueError(
                f"{type(self).__name__}.group: target must be [B], got {tuple(target.shape)}"
            )
        if num_items < 2:
            raise ValueError(f"{type(self).__name__}.group: the catalog needs >= 2 items")
        target = target.long()
        if bool(((target < 0) | (target >= num_items)).any()):
            raise ValueError(
                f"{type(self).__name__}.group: target holds indices outside [0, {num_items})"
            )
        self.check_catalog(num_items)
        with torch.no_grad():
            return self._build_group(replace(context, target=target))

    def check_catalog(self, num_items: int) -> None:  # noqa: B027 - an optional hook
        """Raise ValueError naming the key when the settings cannot work on a catalog of
        `num_items` items. Runs at every rollout and, through the LightningModule, as soon as
        the catalog is loaded, so a bad setting fails before any training."""

    def check_scoring(self, renormalize: bool) -> None:
        """Raise ValueError naming the key when the settings need scores that the policy's
        scoring (`model.renormalize`) does not give. The LightningModule calls it when it is
        constructed, so a bad combination fails before any data is loaded."""
        if renormalize and self.pairwise == "logistic":
            raise self._config_error(
                "pairwise",
                "= 'logistic' weighs pairs by the scores of the chosen members "
                "(ItemScorer.score), which renormalised scoring does not give: set "
                "model.renormalize false or pairwise 'linear'",
            )

    def logged_windows(self) -> list[Window]:
        """The windows whose WPAUC should be logged beside the configured ones (TAWin's own)."""
        return []

    @abstractmethod
    def _build_group(self, context: RolloutContext) -> Group:
        """Pick each context's members and their rewards (and weights, if any); the
        context's target is checked and long."""

    def _config_error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{type(self).__name__}: {key} {message}")

    def _set_pairwise(self, pairwise: str, temperature: float) -> None:
        """Check and keep the `pairwise` / `pairwise_temperature` settings of the objectives
        that offer logistic pair weights (see `_weigh_pairs`)."""
        if pairwise not in ("linear", "logistic"):
            raise self._config_error(
                "pairwise", f"must be 'linear' or 'logistic', got {pairwise!r}"
            )
        if not temperature > 0.0:
            raise self._config_error("pairwise_temperature", f"must be > 0, got {temperature}")
        self.pairwise = pairwise
        self.pairwise_temperature = temperature

    def _weigh_pairs(self, group: Group, scorer: ItemScorer) -> Group:
        """The group with logistic pair weights when `pairwise` is "logistic", else as is."""
        if self.pairwise != "logistic":
            return group
        return weigh_pairs_logistically(group, scorer, self.pairwise_temperature)

    def _ranked_negatives(self, context: RolloutContext, width: int) -> RankedNegatives:
        """Beam search of `width` with the positive dropped (see `beam_negatives`)."""
        target = context.target
        items, scores = context.scorer.beam(width)
        if items.shape != (target.shape[0], width):
            raise RuntimeError(
                f"{type(self).__name__}: beam search returned items of shape "
                f"{tuple(items.shape)}, expected {(target.shape[0], width)}"
            )
        negatives, negative_scores, positive_position = beam_negatives(items, scores, target)
        in_beam = positive_position < width
        beam_position = positive_position.clamp_max(width - 1).unsqueeze(-1)
        positive_score = torch.where(
            in_beam, scores.gather(-1, beam_position).squeeze(-1), -torch.inf
        )
        stats = {"positive_in_beam": in_beam.float().mean(), "positive_rank": positive_position}
        return RankedNegatives(negatives, negative_scores, positive_score, stats)


def group_statistics(group: Group, advantages: Tensor) -> dict[str, Tensor]:
    """Diagnostics of a batch of groups and their advantages `[B, G]` (detached scalars).

    `zero_advantage_groups`: fraction of contexts whose every advantage is 0 (they teach
    nothing: all rewards equal, saturated or gated off); `positive_abs_advantage` and
    `negative_abs_advantage`: mean |A| on the positives present and on the other members;
    `group_size`: mean number of members with a non-zero weight.
    """
    with torch.no_grad():
        members = group.member_mask
        if group.weights is not None:
            members = members & (group.weights > 0)
        magnitude = advantages.abs().float()
        positives = group.positive_mask & members
        negatives = members & ~group.positive_mask
        zero = ((magnitude * members).sum(-1) == 0).float().mean()

        def mean_over(mask: Tensor) -> Tensor:
            return (magnitude * mask).sum() / mask.sum().clamp_min(1)

        return {
            "zero_advantage_groups": zero,
            "positive_abs_advantage": mean_over(positives),
            "negative_abs_advantage": mean_over(negatives),
            "group_size": members.sum(-1).float().mean(),
        }
