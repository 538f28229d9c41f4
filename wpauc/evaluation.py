"""The evaluation protocols: where each context's positive ranks among the catalog.

Every reported metric is a function of the positive's counts `gt` (negatives scored above
it) and `ge` (at or above it). Under the `exact` protocol they are exact over the whole
catalog, by threshold-pruned trie expansion (only the prefixes that out-score the positive
run); under the `beam` protocol (MiniOneRec's and ReRe's) every item outside the top beams
ranks below them all.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from wpauc.decoding import ItemTrie, constrained_beam_search, exact_positive_ranks
from wpauc.metrics import positive_ranks

PROTOCOLS = ("exact", "beam")

#: Score given to items outside the returned beams under the beam protocol: finite (metrics
#: reject non-finite scores) and below every log-probability a model can produce.
OUTSIDE_BEAM_SCORE = -1.0e9


def positive_counts(
    policy: nn.Module,
    batch: dict[str, Tensor],
    trie: ItemTrie,
    protocol: Literal["exact", "beam"],
    num_beams: int,
    renormalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """`(gt, ge)` `[B]` of each context's positive under `protocol`.

    Args:
        policy: the causal LM.
        batch: a batch of the data module (`input_ids`, `attention_mask`, `target`).
        trie: the catalog's trie.
        protocol: "exact" or "beam".
        num_beams: the beam width of the beam protocol.
        renormalize: score by log-probs renormalised over the trie's allowed continuations.
    """
    if protocol == "exact":
        counts = exact_positive_ranks(
            policy,
            batch["input_ids"],
            batch["attention_mask"],
            trie,
            batch["target"],
            renormalize=renormalize,
        )
        return counts.gt, counts.ge
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
    return ranks.gt, ranks.ge
