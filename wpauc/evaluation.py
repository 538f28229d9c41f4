"""The evaluation protocols: where each context's positive ranks among the catalog.

Every reported metric is a function of the positive's counts `gt` (negatives scored above
it) and `ge` (at or above it). Under the `exact` protocol they are exact over the whole
catalog, by threshold-pruned trie expansion (only the prefixes that out-score the positive
run); under the `beam` protocol (MiniOneRec's and ReRe's) every item outside the top beams
ranks below them all. With a rank cap C the exact protocol resolves the counts only below
rank C, which HR@K and NDCG@K for K <= C need, at the cost of the prefixes above the C-th item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from wpauc.decoding import ItemTrie, constrained_beam_search, exact_positive_ranks
from wpauc.metrics import positive_ranks

PROTOCOLS = ("exact", "beam")

#: Score given to items outside the returned beams under the beam protocol: finite (metrics
#: reject non-finite scores) and below every log-probability a model can produce.
OUTSIDE_BEAM_SCORE = -1.0e9


def check_evaluation_settings(
    protocol: str, num_beams: int, top_k: Sequence[int], rank_cap: int | None
) -> None:
    """Raise a ValueError naming the ``model.eval_*`` key of a setting the protocols cannot
    honour: an unknown protocol, a K past the beams, a rank cap below a K or with the beams."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"model.eval_protocol must be 'exact' or 'beam', got {protocol!r}")
    largest_k = max(top_k, default=1)
    if protocol == "beam" and largest_k > num_beams:
        raise ValueError(
            f"model.eval_top_k holds K={largest_k} > model.eval_num_beams={num_beams}: the beam"
            " protocol cannot rank past its beams"
        )
    if rank_cap is None:
        return
    if protocol == "beam":
        raise ValueError(
            "model.eval_rank_cap applies to the exact protocol; the beam protocol is already"
            " cut at model.eval_num_beams"
        )
    if isinstance(rank_cap, bool) or not isinstance(rank_cap, int) or rank_cap < largest_k:
        raise ValueError(
            f"model.eval_rank_cap={rank_cap!r} must be an integer >= the largest K of"
            f" model.eval_top_k ({largest_k}): HR@K and NDCG@K are exact only for K up to the cap"
        )


def metrics_rank_cap(
    protocol: Literal["exact", "beam"], num_beams: int, rank_cap: int | None
) -> int | None:
    """The rank past which the protocol's counts are cut, so that only HR@K and NDCG@K can be
    reported (`RankingMetrics(rank_cap=...)`): the beams, or the exact protocol's `rank_cap`."""
    return num_beams if protocol == "beam" else rank_cap


def positive_counts(
    policy: nn.Module,
    batch: dict[str, Tensor],
    trie: ItemTrie,
    protocol: Literal["exact", "beam"],
    num_beams: int,
    renormalize: bool = False,
    rank_cap: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """`(gt, ge, beyond_cap)` `[B]` of each context's positive under `protocol`.

    `beyond_cap` (bool) marks the contexts of the exact protocol with `rank_cap` whose positive
    at least `rank_cap` items out-score; their `gt` and `ge` are both set to `rank_cap` (the
    rank is only known to be at least that; HR@K and NDCG@K for K <= `rank_cap` are 0 from
    them, AUC and WPAUC cannot be computed). It is all False otherwise.

    Args:
        policy: the causal LM.
        batch: a batch of the data module (`input_ids`, `attention_mask`, `target`).
        trie: the catalog's trie.
        protocol: "exact" or "beam".
        num_beams: the beam width of the beam protocol.
        renormalize: score by log-probs renormalised over the trie's allowed continuations.
        rank_cap: the exact protocol's rank cap (see `exact_positive_ranks`); `None`: full
            counts. The beam protocol takes none (its beams are its cap).
    """
    if protocol == "exact":
        counts = exact_positive_ranks(
            policy,
            batch["input_ids"],
            batch["attention_mask"],
            trie,
            batch["target"],
            renormalize=renormalize,
            rank_cap=rank_cap,
        )
        gt, ge, beyond_cap = counts.gt, counts.ge, counts.beyond_cap
        if rank_cap is not None:
            # beyond the cap the walk's lower bounds depend on what it happened to run: report
            # the cap itself, the same for every such context
            gt, ge = gt.masked_fill(beyond_cap, rank_cap), ge.masked_fill(beyond_cap, rank_cap)
        return gt, ge, beyond_cap
    if rank_cap is not None:
        raise ValueError("the beam protocol takes no rank_cap: its beams are its cap")
    items, scores = constrained_beam_search(
        policy,
        batch["input_ids"],
        batch["attention_mask"],
        trie,
        num_beams,
        renormalize=renormalize,
    )
    full = torch.full((items.shape[0], trie.num_items), OUTSIDE_BEAM_SCORE, device=scores.device)
    ranks = positive_ranks(full.scatter_(1, items, scores.float()), batch["target"])
    return ranks.gt, ranks.ge, torch.zeros_like(ranks.gt, dtype=torch.bool)
