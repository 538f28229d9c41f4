"""TAWin: threshold-adjusted windowed reweighting, a windowed partial AUC objective."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from wpauc.objectives.base import (
    Group,
    Objective,
    RolloutContext,
    gate_contexts,
    positive_first_group,
)
from wpauc.objectives.functional import rank_gate, soft_window_weights, tail_negatives
from wpauc.window import Window


class TAWinWPAUC(Objective):
    """Threshold-Adjusted Windowed reweighting: windowed partial AUC, FPR in [alpha, alpha+d].

    Per context: constrained beam search of width `hi + 1` (`hi + 2` with a soft window,
    one more negative to place the lower edge), the positive dropped from the beam list
    (negatives below it move up one rank: the threshold adjustment); the group is the
    positive plus the negatives of negative-rank in `[lo, hi)` (see `wpauc.window`);
    advantages as GRPO on that group.

    The window is set either by `(alpha, d)` or by `(target_k, window_width)`, the latter
    being negative-ranks `[target_k - 1, target_k - 1 + window_width)`: the positive is a
    hit at K exactly when it out-ranks the negative of rank K - 1, so the window starts
    with the first negative it must beat to enter the Top-K; with `saturate` a context
    stops contributing exactly when it is a hit at K.

    Args:
        alpha: window start as a false-positive rate, in [0, 1]; give with `d`.
        d: window width as a false-positive rate, in (0, 1], alpha + d <= 1.
        target_k: the Top-K to aim at (>= 1); give with `window_width` instead of `alpha`
            and `d`.
        window_width: number of negatives in the window (>= 1), with `target_k`.
        soft_temperature: tau; if set, the window edges are soft: every beam negative is a
            group member with weight `sigmoid((t_top - s) / tau) * sigmoid((s - t_bottom) /
            tau)`, where t_top (t_bottom) is the midpoint of the scores at negative-ranks
            lo - 1 and lo (hi - 1 and hi), +inf (-inf) when the window starts at rank 0
            (ends at the catalog's last negative). Scores are summed log-probs, so tau is in
            log-prob units; tau -> 0 gives the hard window. For binary rewards this gives
            `A+ = sqrt(m_eff)`, `A_j = -w_j / sqrt(m_eff)` with `m_eff = sum_j w_j`.
        saturate: a context whose positive out-scores every window negative (its WPAUC is
            already 1 when alpha n is an integer, as with `target_k`) gets advantage 0.
        max_beam_width: largest beam width allowed (a compute cap); an error names it when
            the window needs more. None: no cap.
        gate: which contexts contribute: "none" (all), "beam" (only those whose positive
            the beam generated, MiniOneRec's mode: negative-rank < beam width) or "band"
            (only those whose positive's negative-rank is within `gate_band` ranks of the
            window, `[lo - gate_band, hi + gate_band)`; the beam grows to see that far).
            The others get advantage 0.
        gate_band: the band's reach around the window, in ranks (>= 0), for gate "band".
        pairwise: "linear" weighs every negative alike (GRPO's linear pairwise
            surrogate); "logistic" weighs negative j by `sigmoid((s_j - s+) / tau)`, the
            derivative of the bounded logistic pairwise loss, so pairs the positive already
            wins by a margin stop pushing (see `logistic_pair_weights`).
        pairwise_temperature: tau of the logistic weights, in summed log-prob units.
        tail_negatives: t > 0 extends the window to the catalog's end without a wider
            beam: t negatives drawn uniformly from those of negative-rank >= hi join the
            group, each weighted `tail_weight * M / t` (M = N - 1 - hi of them), so in
            expectation every one counts as a window negative of weight `tail_weight`. The
            window then has no lower edge, the one place where gated and ungated windows
            break the true order (docs/design.md section 11). 0: off. Hard windows only.
        tail_weight: lambda > 0, the expected weight of a tail negative relative to a
            window negative; 1 keeps the true order at the truth for any distribution.
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
        gate: Literal["none", "beam", "band"] = "none",
        gate_band: int = 0,
        pairwise: Literal["linear", "logistic"] = "linear",
        pairwise_temperature: float = 1.0,
        tail_negatives: int = 0,
        tail_weight: float = 1.0,
    ) -> None:
        by_fraction = alpha is not None or d is not None
        by_rank = target_k is not None or window_width is not None
        if by_fraction == by_rank:
            raise self._config_error(
                "alpha/d/target_k/window_width",
                "set either (alpha, d) or (target_k, window_width), exactly one pair; got "
                f"alpha={alpha}, d={d}, target_k={target_k}, window_width={window_width}",
            )
        if by_fraction and (alpha is None or d is None):
            raise self._config_error("alpha/d", f"give both, got alpha={alpha}, d={d}")
        if by_rank and (target_k is None or window_width is None):
            raise self._config_error(
                "target_k/window_width",
                f"give both, got target_k={target_k}, window_width={window_width}",
            )
        try:
            self.window = (
                Window.fpr(alpha, d) if by_fraction else Window.top_k(target_k, window_width)
            )
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None
        if soft_temperature is not None and not soft_temperature > 0.0:
            raise self._config_error("soft_temperature", f"must be > 0, got {soft_temperature}")
        if max_beam_width is not None and max_beam_width < 2:
            raise self._config_error("max_beam_width", f"must be >= 2, got {max_beam_width}")
        if gate not in ("none", "beam", "band"):
            raise self._config_error("gate", f"must be 'none', 'beam' or 'band', got {gate!r}")
        if gate_band < 0:
            raise self._config_error("gate_band", f"must be >= 0, got {gate_band}")
        if tail_negatives < 0:
            raise self._config_error("tail_negatives", f"must be >= 0, got {tail_negatives}")
        if tail_negatives > 0 and soft_temperature is not None:
            raise self._config_error(
                "tail_negatives", "needs a hard window (soft_temperature: null)"
            )
        if not tail_weight > 0.0:
            raise self._config_error("tail_weight", f"must be > 0, got {tail_weight}")
        self._set_pairwise(pairwise, pairwise_temperature)
        self.tail_negatives = tail_negatives
        self.tail_weight = tail_weight
        self.soft_temperature = soft_temperature
        self.saturate = saturate
        self.max_beam_width = max_beam_width
        self.gate = gate
        self.gate_band = gate_band
        if self.window.max_rank is not None:
            # A rank window knows its beam width before seeing the catalog.
            self._check_beam_width(self._beam_width(self.window.max_rank, None))

    def window_ranks(self, num_negatives: int) -> tuple[int, int]:
        """Window negative-ranks `[lo, hi)` for a catalog with n = `num_negatives`."""
        try:
            return self.window.ranks(num_negatives)
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None

    def logged_windows(self) -> list[Window]:
        return [self.window]

    def _beam_width(self, hi: int, num_items: int | None) -> int:
        width = hi + (2 if self.soft_temperature is not None else 1)
        if self.gate == "band":
            width = max(width, hi + self.gate_band + 1)  # to see the band's lowest rank
        return width if num_items is None else min(width, num_items)

    def _check_beam_width(self, width: int) -> None:
        if self.max_beam_width is not None and width > self.max_beam_width:
            raise self._config_error(
                "max_beam_width",
                f"= {self.max_beam_width} is too small: the window's upper rank needs beam "
                f"width {width}",
            )

    def check_catalog(self, num_items: int) -> None:
        lo, hi = self.window_ranks(num_items - 1)
        self._check_beam_width(self._beam_width(hi, num_items))
        below_window = num_items - 1 - hi
        if self.tail_negatives > below_window:
            raise self._config_error(
                "tail_negatives",
                f"= {self.tail_negatives} exceeds the {below_window} negatives below the "
                f"window [{lo}, {hi}) of a {num_items}-item catalog",
            )

    def _build_group(self, context: RolloutContext) -> Group:
        scorer, target = context.scorer, context.target
        num_items = scorer.num_items
        lo, hi = self.window_ranks(num_items - 1)
        ranked = self._ranked_negatives(context, self._beam_width(hi, num_items))
        stats = ranked.stats
        member_weights: Tensor | None = None
        if self.soft_temperature is None:
            members = ranked.items[:, lo:hi]
            if self.tail_negatives > 0:
                tail, weight = tail_negatives(
                    ranked.items[:, :hi], target, num_items, self.tail_negatives, context.generator
                )
                window_weights = torch.ones(members.shape[0], 1 + members.shape[1])
                tail_weights = torch.full(tail.shape, self.tail_weight * weight)
                member_weights = torch.cat([window_weights, tail_weights], -1).to(tail.device)
                members = torch.cat([members, tail], -1)
        else:
            members = ranked.items
            negative_weights = soft_window_weights(ranked.scores, lo, hi, self.soft_temperature)
            member_weights = torch.cat(
                [torch.ones_like(negative_weights[:, :1]), negative_weights], -1
            )
            stats["window_weight_sum"] = negative_weights.sum(-1).mean()
        if self.saturate:
            # Strictly above the window's top negative: a tie does not saturate.
            saturated = ranked.positive_score > ranked.scores[:, lo]
            keep = (~saturated).float().unsqueeze(-1).expand(-1, 1 + members.shape[1])
            member_weights = keep if member_weights is None else member_weights * keep
            stats["saturated"] = saturated.float().mean()
        stats["window_lo"] = torch.tensor(float(lo), device=target.device)
        stats["window_hi"] = torch.tensor(float(hi), device=target.device)
        group = positive_first_group(target, members, stats, member_weights)
        group = self._weigh_pairs(group, scorer)
        rank = stats["positive_rank"]
        if self.gate == "beam":
            group = gate_contexts(group, rank < ranked.items.shape[1] + 1)
        elif self.gate == "band":
            band = rank_gate(rank, max(lo - self.gate_band, 0), hi + self.gate_band)
            group = gate_contexts(group, band)
        return group
