"""The evaluation protocols: where each context's positive ranks among the catalog, and what
is recommended to it.

A protocol is one object, ``model.evaluation`` (chosen by ``class_path``, like the
objectives), and validation, test, ``predict`` and `wpauc.export.Recommender` all go through
it:

- :class:`Exact` (the default): the counts are exact over the whole catalog, by
  threshold-pruned trie expansion (only the prefixes that out-score the positive run). With a
  ``rank_cap`` C they are resolved only below rank C, which HR@K and NDCG@K for K <= C need,
  at the cost of the prefixes above the C-th item.
- :class:`Beam` (MiniOneRec's and ReRe's): only the top ``num_beams`` beams of constrained
  beam search are ranked; every item outside them ranks below them all.

Every reported metric is a function of the positive's counts ``gt`` (negatives scored above
it) and ``ge`` (at or above it). A protocol says which metrics its counts give
(:meth:`EvaluationProtocol.check`, :attr:`~EvaluationProtocol.rank_cap`), computes the counts
(:meth:`~EvaluationProtocol.counts`) and the items to recommend
(:meth:`~EvaluationProtocol.recommend`). A new protocol is a subclass of
:class:`EvaluationProtocol`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from wpauc.decoding import ItemTrie, constrained_beam_search, exact_positive_ranks
from wpauc.metrics import MetricSpec, positive_ranks

#: Score given to items outside the returned beams under the beam protocol: finite (metrics
#: reject non-finite scores) and below every log-probability a model can produce.
OUTSIDE_BEAM_SCORE = -1.0e9


class EvaluationCounts(NamedTuple):
    """Each context's positive counts under a protocol (all ``[B]``)."""

    gt: Tensor
    """long: items (positive excluded) scored strictly above the positive."""
    ge: Tensor
    """long: items (positive excluded) scored at or above it (``gt`` + ties)."""
    beyond_cap: Tensor
    """bool: the contexts whose positive at least ``rank_cap`` items out-score; their ``gt``
    and ``ge`` are both ``rank_cap`` (the rank is only known to be at least that). All False
    for full counts."""


class EvaluationProtocol(ABC):
    """Base class of the evaluation protocols. Subclasses are frozen dataclasses whose fields
    are the protocol's settings, checked when it is built (errors name the field)."""

    @property
    @abstractmethod
    def rank_cap(self) -> int | None:
        """The rank past which the counts are cut (`RankingMetrics(rank_cap=...)`): only
        metrics of the top K with K up to it can be reported. None: full counts, every
        metric."""

    @abstractmethod
    def check(self, cutoffs: Sequence[int]) -> None:
        """Raise ValueError, naming the setting, when the protocol cannot give a metric of the
        top K for a K of ``cutoffs`` (the reported HR@K and NDCG@K)."""

    def reported_metrics(self, specs: Sequence[MetricSpec]) -> list[MetricSpec]:
        """The metrics of ``specs`` that the protocol's counts give, in order: every one for
        full counts; with a ``rank_cap`` only the metrics of the top K (AUC and WPAUC need
        every count). ValueError (see :meth:`check`) on a K past the cap."""
        self.check([spec.cutoff for spec in specs if spec.cutoff is not None])
        if self.rank_cap is None:
            return list(specs)
        return [spec for spec in specs if spec.cutoff is not None]

    @abstractmethod
    def counts(
        self,
        policy: nn.Module,
        batch: dict[str, Tensor],
        trie: ItemTrie,
        renormalize: bool = False,
    ) -> EvaluationCounts:
        """Each context's positive counts.

        Args:
            policy: the causal LM.
            batch: a batch of the data module (``input_ids``, ``attention_mask``, ``target``).
            trie: the catalog's trie.
            renormalize: score by log-probs renormalised over the trie's allowed continuations.
        """

    @abstractmethod
    def recommend(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        trie: ItemTrie,
        renormalize: bool = False,
        k: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(items, scores)`` ``[B, k]`` to recommend to each context, best first: catalog
        indices and their scores (``predict``, `wpauc.export.Recommender.recommend`).

        Args:
            policy: the causal LM.
            input_ids, attention_mask: the left-padded prompts ``[B, T]``.
            trie: the catalog's trie.
            renormalize: as in :meth:`counts`.
            k: how many items; None: the protocol's own number (``num_beams``).
        """

    def _error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{type(self).__name__}: {key} {message}")


def _check_positive_int(protocol: EvaluationProtocol, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise protocol._error(key, f"must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Exact(EvaluationProtocol):
    """Each positive's exact rank in the whole catalog (`wpauc.decoding.exact_positive_ranks`):
    every metric (HR@K, NDCG@K, AUC, WPAUC), or with a ``rank_cap`` HR@K and NDCG@K only.

    Args:
        rank_cap: resolve each positive's rank only below this cap (an integer >= every K of
            the reported metrics of the top K): HR@K and NDCG@K stay exact, at about the cost
            of a ``rank_cap``-beam search (benchmarks/README.md); AUC and WPAUC need every
            count and are then not reported, as under the beam protocol. ``None``: full exact
            counts, every metric.
        num_beams: the beam width of the recommendations (``predict``: the top ``num_beams``
            items of constrained beam search); the counts use no beams.
    """

    rank_cap: int | None = None
    num_beams: int = 20

    def __post_init__(self) -> None:
        if self.rank_cap is not None:
            _check_positive_int(self, "rank_cap", self.rank_cap)
        _check_positive_int(self, "num_beams", self.num_beams)

    def check(self, cutoffs: Sequence[int]) -> None:
        largest_k = max(cutoffs, default=1)
        if self.rank_cap is not None and self.rank_cap < largest_k:
            raise self._error(
                "rank_cap",
                f"= {self.rank_cap} must be >= the largest K of the metrics ({largest_k}):"
                " HR@K and NDCG@K are exact only for K up to the cap",
            )

    def counts(
        self,
        policy: nn.Module,
        batch: dict[str, Tensor],
        trie: ItemTrie,
        renormalize: bool = False,
    ) -> EvaluationCounts:
        counts = exact_positive_ranks(
            policy,
            batch["input_ids"],
            batch["attention_mask"],
            trie,
            batch["target"],
            renormalize=renormalize,
            rank_cap=self.rank_cap,
        )
        gt, ge, beyond_cap = counts.gt, counts.ge, counts.beyond_cap
        if self.rank_cap is not None:
            # beyond the cap the walk's lower bounds depend on what it happened to run: report
            # the cap itself, the same for every such context
            gt = gt.masked_fill(beyond_cap, self.rank_cap)
            ge = ge.masked_fill(beyond_cap, self.rank_cap)
        return EvaluationCounts(gt, ge, beyond_cap)

    def recommend(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        trie: ItemTrie,
        renormalize: bool = False,
        k: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` (default ``num_beams``) beams of a constrained beam search of width
        ``k``, best first (a beam search can miss an item of the exact top k)."""
        width = self.num_beams if k is None else k
        return constrained_beam_search(
            policy, input_ids, attention_mask, trie, width, renormalize=renormalize
        )


@dataclass(frozen=True)
class Beam(EvaluationProtocol):
    """MiniOneRec's and ReRe's protocol: only the top ``num_beams`` beams of constrained beam
    search are ranked, every other item below them all, so HR@K and NDCG@K (K <= num_beams)
    are reported and AUC and WPAUC, which need the full ranking, are not.

    Args:
        num_beams: the beam width: the items ranked, and recommended (``predict``).
    """

    num_beams: int = 20

    def __post_init__(self) -> None:
        _check_positive_int(self, "num_beams", self.num_beams)

    @property
    def rank_cap(self) -> int:
        """The beams: every item outside them is ranked below them all."""
        return self.num_beams

    def check(self, cutoffs: Sequence[int]) -> None:
        largest_k = max(cutoffs, default=1)
        if largest_k > self.num_beams:
            raise self._error(
                "num_beams",
                f"= {self.num_beams} is below the largest K of the metrics ({largest_k}): the"
                " beam protocol cannot rank past its beams",
            )

    def _beams(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        trie: ItemTrie,
        renormalize: bool,
    ) -> tuple[Tensor, Tensor]:
        return constrained_beam_search(
            policy, input_ids, attention_mask, trie, self.num_beams, renormalize=renormalize
        )

    def counts(
        self,
        policy: nn.Module,
        batch: dict[str, Tensor],
        trie: ItemTrie,
        renormalize: bool = False,
    ) -> EvaluationCounts:
        items, scores = self._beams(
            policy, batch["input_ids"], batch["attention_mask"], trie, renormalize
        )
        full = torch.full(
            (items.shape[0], trie.num_items), OUTSIDE_BEAM_SCORE, device=scores.device
        )
        ranks = positive_ranks(full.scatter_(1, items, scores.float()), batch["target"])
        return EvaluationCounts(ranks.gt, ranks.ge, torch.zeros_like(ranks.gt, dtype=torch.bool))

    def recommend(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        trie: ItemTrie,
        renormalize: bool = False,
        k: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The first ``k`` (default all ``num_beams``) of the ``num_beams`` beams, best first:
        the items the protocol ranks at the top."""
        if k is not None and not 1 <= k <= self.num_beams:
            raise self._error("num_beams", f"= {self.num_beams}: cannot recommend k={k} items")
        items, scores = self._beams(policy, input_ids, attention_mask, trie, renormalize)
        return (items, scores) if k is None else (items[:, :k], scores[:, :k])


__all__ = ["Beam", "EvaluationCounts", "EvaluationProtocol", "Exact", "OUTSIDE_BEAM_SCORE"]
