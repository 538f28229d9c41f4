"""Exact rank of each context's positive in the whole catalog, at the cost of the prefixes that
score at least as high as the positive (or, with a rank cap, of about a beam search).

Every ranking metric wpauc reports is a function of two counts per context,
``gt = #{items j != positive: s_j > s+}`` and ``ge = #{j != positive: s_j >= s+}``. An item's
score is the sum of its code's log-probabilities, each <= 0 (also when renormalised over the
allowed continuations), so the partial score of a prefix bounds the score of every item under
it. :func:`exact_positive_ranks` therefore scores the positive first (teacher forcing), then
walks the trie depth by depth and runs the model only on the prefixes whose partial score is
still at least the positive's; every other subtree lies strictly below the positive and is
never looked at. All searches fill one table of prefix scores per context
(:class:`~wpauc.decoding.pruned_walk.PrefixTable`), each prefix run at most once, so the cost
is never more than :func:`~wpauc.decoding.score_items`' whatever the model's sharpness,
precision or vocabulary, and the comparisons need no margin for float noise.

HR@K and NDCG@K need the rank only below K: with ``rank_cap`` a beam search on the same table
first looks for ``rank_cap`` items that out-score the positive; where it finds them the
positive is beyond the cap and the context costs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wpauc.decoding.pruned_walk import PrefixTable
from wpauc.decoding.shared_prefix import check_fits_model, check_prompts, encode_prompts, eval_mode
from wpauc.decoding.trie import ItemTrie


@dataclass(frozen=True)
class PositiveRankCounts:
    """Where each context's positive ranks in the whole catalog (all ``[B]``)."""

    gt: Tensor
    """long: items (positive excluded) scored strictly above the positive; a lower bound
    where ``censored`` or ``beyond_cap``."""
    ge: Tensor
    """long: items (positive excluded) scored at or above the positive (``gt`` + ties); a lower
    bound where ``censored`` or ``beyond_cap``."""
    beyond_cap: Tensor
    """bool: at least ``rank_cap`` items score strictly above the positive. That is a fact, not
    an estimate: there ``gt`` and ``ge`` are lower bounds, both >= ``rank_cap``, which is all
    HR@K and NDCG@K for K <= ``rank_cap`` need (they are 0), but not AUC or WPAUC. Elsewhere the
    counts are exact (unless ``censored``), so where not censored ``beyond_cap`` is exactly
    ``true gt >= rank_cap``. All False without a cap."""
    unresolved: Tensor
    """long: items under prefixes left unexpanded because of ``max_expansions``; each of them
    may or may not out-score the positive, so the true counts lie in
    ``[gt, gt + unresolved]`` and ``[ge, ge + unresolved]``. 0 where the counts are exact."""
    expansions: Tensor
    """long: prefixes run through the model for the context (its cost, in tokens): its
    positive's, the rank cap's beam search's and the walk's, each prefix once; never more than
    the trie's inner nodes (what ``score_items`` runs per context)."""
    positive_scores: Tensor
    """float32: the positive's score, accumulated exactly as every counted item's score."""

    @property
    def censored(self) -> Tensor:
        """``[B]`` bool: the context hit ``max_expansions`` and its counts are bounds."""
        return self.unresolved > 0


def exact_positive_ranks(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    target: Tensor,
    renormalize: bool = False,
    max_expansions: int | None = None,
    chunk_size: int | None = None,
    rank_cap: int | None = None,
) -> PositiveRankCounts:
    """Exact ``gt`` / ``ge`` counts of each context's positive against the whole catalog.

    The same counts as :func:`wpauc.metrics.positive_ranks` of
    :func:`~wpauc.decoding.score_items`' scores (up to float noise: an item whose score lies
    within the noise between two forwards of the positive's may count on the other side),
    without scoring most items:

    1. the positive's code is teacher-forced on the prompt cache (one forward), which runs the
       positive's prefixes and gives its score ``s+``;
    2. with ``rank_cap`` C, a C-beam search: depth by depth, the C best prefixes that out-score
       the positive run. Where C finished items other than the positive out-score it, it is
       beyond the cap and the context is done (``gt = ge`` >= C, lower bounds);
    3. depth by depth, every prefix whose partial score is at least ``s+`` and that has not run
       yet runs as one token on its prompt's cache, attending to the prompt, to its ancestors'
       keys/values (kept from earlier depths) and to itself, and its logits score all its
       children. The prefixes of one context share rows (and one copy of the prompt's
       keys/values) of a forward, tree attention keeping them apart; a forward takes at most
       ``chunk_size`` prefixes, from any contexts. With a cap, a context stops as soon as C
       items out-score its positive;
    4. the items reached are compared with ``s+``. An item scoring at least ``s+`` has every
       prefix at least ``s+``, so step 3 reached it: the counts are exact.

    Every prefix's children are scored by exactly one forward and every item's score is summed
    in one order (parent partial + edge log-probability, float32), so all comparisons are
    between numbers of one table: no margin, no second pass, in any precision. Ties are
    decided as ``score_items`` decides them: siblings share one logits row, so scores that are
    equal for ``score_items`` (equal logits, equal branching) are equal here. With
    ``renormalize``, a prefix with a single item under it is that item's score (every later
    step has one allowed token, log-probability exactly 0) and does not run.

    Cost: each prefix runs at most once per context, so a context never runs more prefixes
    than the trie's inner nodes, which is what ``score_items`` runs for it; a good model runs
    few (the prefixes above its positive, or with a cap about the C-beam search's). Memory:
    the keys/values of every prefix run that has a child to run are kept until the end.

    Args:
        model: a Hugging Face causal LM whose vocabulary holds the code tokens.
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        trie: the catalog's codes.
        target: ``[B]`` catalog index of each context's positive.
        renormalize: normalise each step over the allowed continuations instead of the
            vocabulary (as ``score_items(renormalize=True)``).
        max_expansions: stop running a context's other prefixes once it would run more than
            this many; its counts are then bounds (``censored``, ``unresolved``). The
            positive's own prefixes always run, so a context may run up to ``max_expansions``
            + its code length. ``None``: no cap, always exact.
        chunk_size: prefixes per forward; default: 8192, fewer where their logits would exceed
            2**26 elements, in rows within 2**27 elements of keys/values.
        rank_cap: resolve the counts only where fewer than ``rank_cap`` items out-score the
            positive, and flag the other contexts ``beyond_cap`` (see
            :class:`PositiveRankCounts`): exact HR@K and NDCG@K for K <= ``rank_cap`` at about
            beam-search cost. ``None``: full counts (what AUC and WPAUC need).

    Returns:
        :class:`PositiveRankCounts`.

    Raises:
        ValueError: bad prompts, targets, caps or chunk sizes; a code the model cannot read;
            a positive whose score is not finite.
    """
    lengths = check_prompts(input_ids, attention_mask)
    check_fits_model(model, lengths, trie.max_code_length, trie.max_token_id)
    _check_target(target, input_ids.shape[0], trie.num_items)
    for name, value in (
        ("max_expansions", max_expansions),
        ("chunk_size", chunk_size),
        ("rank_cap", rank_cap),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name}={value} must be positive (or None)")
    trie = trie.to(input_ids.device)
    target = target.to(input_ids.device)
    if rank_cap is not None and rank_cap >= trie.num_items:
        rank_cap = None  # every context's gt < N <= C: the cap changes nothing
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        table = PrefixTable(model, prompts, trie, renormalize, chunk_size)
        table.run_code_paths(target)
        positive = table.item_scores(target)
        _check_finite(positive, target)
        search = _Search(table, target, positive, rank_cap, max_expansions)
        if rank_cap is not None:
            search.beam()
        search.walk()
    gt, ge = table.counts(target, positive)
    beyond_cap = gt >= rank_cap if rank_cap is not None else torch.zeros_like(gt, dtype=torch.bool)
    return PositiveRankCounts(
        gt=gt,
        ge=ge,
        beyond_cap=beyond_cap,
        unresolved=search.unresolved,
        expansions=table.expansions,
        positive_scores=positive,
    )


class _Search:
    """Steps 2 and 3 of :func:`exact_positive_ranks` on one table: which prefixes run."""

    def __init__(
        self,
        table: PrefixTable,
        target: Tensor,
        positive: Tensor,
        rank_cap: int | None,
        max_expansions: int | None,
    ) -> None:
        self.table, self.target, self.positive = table, target, positive
        self.rank_cap, self.max_expansions = rank_cap, max_expansions
        self.censored = torch.zeros_like(target, dtype=torch.bool)
        self.unresolved = torch.zeros_like(target)
        """``[B]`` items under prefixes left unrun because of ``max_expansions``."""

    def beam(self) -> None:
        """Step 2: at each depth the ``rank_cap`` best prefixes above the positive run."""
        table = self.table
        for depth in range(1, table.trie.max_code_length):
            level = table.trie.level(depth)
            scores = table.score[:, level].masked_fill(~table.runnable[level], -torch.inf)
            best, offset = scores.topk(min(self.rank_cap, scores.shape[1]), dim=1)
            chosen = torch.zeros_like(table.ran[:, level])
            chosen.scatter_(1, offset, best > self.positive[:, None])
            self._run(chosen & ~table.ran[:, level], depth, count_unresolved=False)

    def walk(self) -> None:
        """Step 3: at each depth every prefix at least as good as the positive runs."""
        table = self.table
        for depth in range(1, table.trie.max_code_length):
            level = table.trie.level(depth)
            wanted = table.runnable[level] & ~table.ran[:, level]
            wanted &= table.score[:, level] >= self.positive[:, None]
            if self.rank_cap is not None:
                wanted &= ~self._beyond_cap()[:, None]
            self._run(wanted, depth, count_unresolved=True)

    def _beyond_cap(self) -> Tensor:
        """``[B]`` bool: ``rank_cap`` items reached so far out-score the positive."""
        return self.table.counts(self.target, self.positive)[0] >= self.rank_cap

    def _run(self, wanted: Tensor, depth: int, count_unresolved: bool) -> None:
        """Runs the prefixes of ``depth`` that ``wanted`` ``[B, level size]`` marks, but those
        of contexts that would run more than ``max_expansions`` (censored from then on)."""
        table = self.table
        if self.max_expansions is not None:
            counts = wanted.sum(dim=1)
            self.censored |= (table.expansions + counts > self.max_expansions) & (counts > 0)
            if count_unresolved:
                dropped = wanted & self.censored[:, None]
                below = table.items_below[table.trie.level(depth)]
                self.unresolved += (dropped.long() * below).sum(dim=1)
            wanted = wanted & ~self.censored[:, None]
        context, offset = wanted.nonzero().unbind(dim=1)
        table.run(context, offset + table.trie.level(depth).start, depth)


def _check_finite(positive: Tensor, target: Tensor) -> None:
    bad = (~positive.isfinite()).nonzero().flatten()
    if bad.numel():
        row = int(bad[0])
        raise ValueError(
            f"exact_positive_ranks: the positive of row {row} (item {int(target[row])}) has "
            f"score {float(positive[row])}; ranks would be meaningless"
        )


def _check_target(target: Tensor, batch_size: int, num_items: int) -> None:
    if target.shape != (batch_size,) or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(
            f"target must be an integer tensor of shape [B]=[{batch_size}], got a "
            f"{target.dtype} tensor of shape {list(target.shape)}"
        )
    outside = ((target < 0) | (target >= num_items)).nonzero().flatten()
    if outside.numel():
        row = int(outside[0])
        raise ValueError(f"target[{row}]={int(target[row])} is not a catalog index (N={num_items})")
