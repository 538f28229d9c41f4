"""Exact rank of each context's positive in the whole catalog, at the cost of the prefixes that
score at least as high as the positive (or, with a rank cap, as the cap's item).

Every ranking metric wpauc reports is a function of two counts per context,
``gt = #{items j != positive: s_j > s+}`` and ``ge = #{j != positive: s_j >= s+}``. An item's
score is the sum of its code's log-probabilities, each <= 0 (also when renormalised over the
allowed continuations), so the partial score of a prefix bounds the score of every item under
it. :func:`exact_positive_ranks` therefore scores the positive first (teacher forcing), then
walks the trie depth by depth and runs the model only on the prefixes whose partial score is
still at least the positive's; every other subtree lies strictly below the positive and is
never looked at. Cost: one model token per prefix that out-scores the positive (few for a
good model), never more than :func:`~wpauc.decoding.score_items`.

HR@K and NDCG@K need the rank only below K: with ``rank_cap`` a beam search first finds
``rank_cap`` items with their scores; a positive that they all out-score is beyond the cap
and costs nothing more, and the walk also stops at the score of the ``rank_cap``-th of them.
The walk itself is in :mod:`wpauc.decoding.pruned_walk`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wpauc.decoding.beam_search import beam_search_on_prompts
from wpauc.decoding.pruned_walk import PrunedWalk, WalkCounts, code_paths
from wpauc.decoding.shared_prefix import (
    EncodedPrompts,
    cache_from,
    check_fits_model,
    check_prompts,
    edge_log_probs,
    encode_prompts,
    eval_mode,
    prompt_visibility,
    tree_forward,
)
from wpauc.decoding.trie import ItemTrie

_MARGIN_EPSILONS = 8
"""The pruning threshold sits ``8 * eps * (1 + |s|)`` below the score ``s`` it comes from (the
teacher-forced positive's, or the beam search's for a rank cap; ``eps`` of the model's compute
dtype), so that the float noise between two forwards of the same item cannot prune a prefix
that item ties with."""
_MAX_ATTEMPTS = 3
"""Passes over a context before giving up (a second pass is only needed when the model's
noise exceeds the margin, e.g. in low precision)."""


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
    """long: prefixes run through the model for the context (its cost), over all passes; the
    beam search of ``rank_cap`` is not counted."""
    positive_scores: Tensor
    """float32: the positive's score, accumulated exactly as every counted item's score (where
    ``beyond_cap`` without a walk: from the teacher-forced forward, equal up to float noise)."""

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
    :func:`~wpauc.decoding.score_items`' scores, without scoring most items:

    1. the positive's code is teacher-forced on the prompt cache (one forward), giving ``s+``
       and the threshold ``s+ - margin``; with ``rank_cap`` C, a C-beam constrained search
       finds C items with their exact scores, and unless the positive is among them the C-th
       best of them, ``s_C``, is a score at least C other items reach: the threshold becomes
       ``max(s+, s_C) - margin``. Where ``s_C`` is above ``s+`` by more than the margins of
       both, the positive is beyond the cap and the context is done (``gt = ge = C``, lower
       bounds), without walking the trie;
    2. depth by depth, each kept prefix runs as one token on its prompt's cache, attending to
       the prompt, to its ancestors' keys/values (kept from earlier depths) and to itself,
       and its logits score all its children; a child is kept when its partial score is at
       least the threshold (the prefixes of the positive are always kept). The prefixes of one
       context share rows (and the prompt) of a forward, tree attention keeping them apart;
       a forward takes at most ``chunk_size`` prefixes, from any contexts, so memory stays
       bounded whatever the number of kept prefixes;
    3. the finished items that were kept are compared with the positive's score as step 2
       computed it. Every item scoring at least the threshold was kept, so the counts are
       exact when the positive reaches the threshold; when it does not (only with a cap), the
       kept items at or above the threshold, at least C of them, all out-score the positive:
       the context is ``beyond_cap`` and its counts are lower bounds.

    Ties are decided as ``score_items`` decides them: the positive and every counted item are
    summed in the same order (parent partial + edge log-probability, float32, depth by depth)
    from logits of the same kind of forward, and siblings share one logits row, so scores that
    are equal for ``score_items`` (equal logits, equal branching) are equal here and compare
    exactly. The margin only keeps more prefixes (never fewer). Should a context end with
    neither (the positive's score from step 2 below the threshold, and fewer than C items at
    or above it: model noise beyond the margin, between two forwards or between the beam
    search and the walk), it is ranked again with the threshold below the positive and no
    cap, so a pruned prefix is always strictly below the positive. With ``renormalize``, a
    prefix with a single item under it is that item's score (every later step has one allowed
    token, log-probability exactly 0) and is not expanded.

    Cost: the prefixes whose partial score reaches the threshold; with a cap, the C-beam
    search, plus, for the contexts whose positive the search does not put beyond the cap, the
    prefixes above the positive (a positive in the top C: few) (benchmarks/README.md).
    Memory: the keys/values of every expanded prefix that has a
    kept non-leaf child are kept until the end (``B * expansions`` tokens of cache at most).

    Args:
        model: a Hugging Face causal LM whose vocabulary holds the code tokens.
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        trie: the catalog's codes.
        target: ``[B]`` catalog index of each context's positive.
        renormalize: normalise each step over the allowed continuations instead of the
            vocabulary (as ``score_items(renormalize=True)``).
        max_expansions: stop expanding a context's other prefixes once it would run more than
            this many through the model; its counts are then bounds (``censored``,
            ``unresolved``). The positive's own prefixes are always expanded, so a context may
            run up to ``max_expansions`` + its code length. ``None``: no cap, always exact.
        chunk_size: prefixes per forward; default: 8192, fewer where their logits would exceed
            2**24 elements or their gathered keys/values 2**27.
        rank_cap: resolve the counts only where fewer than ``rank_cap`` items out-score the
            positive, and flag the other contexts ``beyond_cap`` (see
            :class:`PositiveRankCounts`): exact HR@K and NDCG@K for K <= ``rank_cap`` at about
            beam-search cost. ``None``: full counts (what AUC and WPAUC need).

    Returns:
        :class:`PositiveRankCounts`.

    Raises:
        ValueError: bad prompts, targets, caps or chunk sizes; a code the model cannot read;
            a positive whose score is not finite.
        RuntimeError: the model's noise kept the positive below its threshold three times.
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
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        walk = PrunedWalk(model, trie, renormalize, max_expansions, chunk_size)
        estimate = _teacher_forced_scores(model, prompts, trie, target, renormalize)
        threshold = estimate - _margin(model, estimate)
        counts = None
        # with C >= N every context's gt < C: the cap changes nothing and needs no search
        if rank_cap is not None and rank_cap < trie.num_items:
            reached = _score_reached_by_cap(model, prompts, trie, target, rank_cap, renormalize)
            threshold = torch.maximum(threshold, reached - _margin(model, reached))
            # C items other than the positive out-score it by more than the noise of two
            # forwards: it is beyond the cap, and the trie need not be walked at all
            beyond = threshold > estimate + _margin(model, estimate)
            if beyond.any():
                counts = _beyond_cap_counts(estimate, rank_cap, beyond)
                counts = _walk_rows(walk, prompts, target, threshold, counts, ~beyond)
        if counts is None:
            counts = walk.run(prompts, target, threshold)
        for _ in range(_MAX_ATTEMPTS - 1):
            redo = _unsettled(counts, threshold, rank_cap)
            if not redo.any():
                break
            threshold[redo] = counts.positive_scores[redo] - _margin(
                model, counts.positive_scores[redo]
            )
            counts = _walk_rows(walk, prompts, target, threshold, counts, redo)
    if _unsettled(counts, threshold, rank_cap).any():
        raise RuntimeError(
            f"exact_positive_ranks: the positive's score moved below its threshold in "
            f"{_MAX_ATTEMPTS} passes; the model's outputs are not reproducible enough "
            "(non-deterministic kernels?) to rank exactly"
        )
    bad = (~counts.positive_scores.isfinite()).nonzero().flatten()
    if bad.numel():
        row = int(bad[0])
        raise ValueError(
            f"exact_positive_ranks: the positive of row {row} (item {int(target[row])}) has "
            f"score {float(counts.positive_scores[row])}; ranks would be meaningless"
        )
    beyond_cap = torch.zeros_like(counts.gt, dtype=torch.bool)
    if rank_cap is not None:
        # where the positive missed the threshold, >= C kept items beat it (else unsettled)
        beyond_cap = counts.gt >= rank_cap
    return PositiveRankCounts(
        gt=counts.gt,
        ge=counts.ge,
        beyond_cap=beyond_cap,
        unresolved=counts.unresolved,
        expansions=counts.expansions,
        positive_scores=counts.positive_scores,
    )


def _score_reached_by_cap(
    model: nn.Module,
    prompts: EncodedPrompts,
    trie: ItemTrie,
    target: Tensor,
    rank_cap: int,
    renormalize: bool,
) -> Tensor:
    """``[B]`` a score that at least ``rank_cap`` items other than the positive reach: the
    worst of a ``rank_cap``-beam search's items (each found with its exact score), or -inf
    where the positive is one of them (then fewer than ``rank_cap`` others were found)."""
    items, scores = beam_search_on_prompts(model, prompts, trie, rank_cap, renormalize)
    found_positive = (items == target[:, None]).any(dim=1)
    return torch.where(found_positive, -torch.inf, scores[:, -1])


def _beyond_cap_counts(estimate: Tensor, rank_cap: int, beyond: Tensor) -> WalkCounts:
    """The counts of contexts that need no walk (``beyond``: C found items beat the positive):
    ``rank_cap`` above and at the threshold, nothing run; zeros elsewhere, for the walk."""
    at_cap = torch.where(beyond, rank_cap, 0)
    nothing = torch.zeros_like(at_cap)
    return WalkCounts(
        gt=at_cap,
        ge=at_cap,
        at_threshold=at_cap,
        unresolved=nothing,
        expansions=nothing,
        positive_scores=estimate,
    )


def _walk_rows(
    walk: PrunedWalk,
    prompts: EncodedPrompts,
    target: Tensor,
    threshold: Tensor,
    counts: WalkCounts,
    rows: Tensor,
) -> WalkCounts:
    """``counts`` with the contexts where ``rows`` ``[B]`` (bool) is set walked (again) at
    their thresholds."""
    index = rows.nonzero().flatten()
    if index.numel() == 0:
        return counts
    run = walk.run(_subset(walk.model, prompts, index), target[index], threshold[index])
    return _merge(counts, index, run)


def _unsettled(counts: WalkCounts, threshold: Tensor, rank_cap: int | None) -> Tensor:
    """``[B]`` bool: the walk neither reached the positive's score (its counts would be exact)
    nor found ``rank_cap`` other items at or above the threshold (the positive beyond it)."""
    missed_positive = counts.positive_scores < threshold
    if rank_cap is None:
        return missed_positive
    return missed_positive & (counts.at_threshold < rank_cap)


def _teacher_forced_scores(
    model: nn.Module, prompts: EncodedPrompts, trie: ItemTrie, target: Tensor, renormalize: bool
) -> Tensor:
    """``[B]`` score of each positive from one forward of its code on the prompt cache."""
    path = code_paths(trie, target)
    length = trie.max_code_length
    logits = prompts.last_logits[:, None]
    if length > 1:
        fed = length - 1  # the last code token predicts nothing
        causal = torch.ones(fed, fed, dtype=torch.bool, device=target.device).tril()
        visible = torch.cat(
            [prompt_visibility(prompts, fed), causal.expand(target.numel(), -1, -1)], dim=2
        )
        positions = prompts.lengths[:, None] + torch.arange(fed, device=target.device)
        code_logits = tree_forward(
            model,
            cache_from(model, prompts.keys, prompts.values),
            trie.item_codes[target, :fed],
            positions,
            visible,
        )
        logits = torch.cat([logits, code_logits], dim=1)
    steps = path[:, 1:] >= 0  # [B, length]: the code goes on after depth d
    parents = path[:, :-1][steps]
    row, child = trie.children(parents)
    log_probs = edge_log_probs(logits[steps], row, trie.node_token[child], renormalize)
    on_code = child == path[:, 1:][steps][row]
    context = steps.nonzero()[:, 0]
    return torch.zeros(target.numel(), device=target.device).index_add(
        0, context[row[on_code]], log_probs[on_code]
    )


def _margin(model: nn.Module, scores: Tensor) -> Tensor:
    """How far below a score estimated by another forward (the positive's, the cap's) the
    pruning threshold sits."""
    dtype = model.get_input_embeddings().weight.dtype
    if torch.is_autocast_enabled(scores.device.type):
        dtype = torch.get_autocast_dtype(scores.device.type)
    eps = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)
    return _MARGIN_EPSILONS * eps * (1 + scores.abs())


def _subset(model: nn.Module, prompts: EncodedPrompts, rows: Tensor) -> EncodedPrompts:
    """The encoded prompts of ``rows`` only."""
    keys = [keys[rows] for keys in prompts.keys]
    values = [values[rows] for values in prompts.values]
    return EncodedPrompts(
        cache=cache_from(model, keys, values),
        keys=keys,
        values=values,
        attention_mask=prompts.attention_mask[rows],
        lengths=prompts.lengths[rows],
        last_logits=prompts.last_logits[rows],
    )


def _merge(counts: WalkCounts, rows: Tensor, redone: WalkCounts) -> WalkCounts:
    """``counts`` with ``rows`` replaced by a new pass's counts (its expansions added)."""

    def replaced(old: Tensor, new: Tensor) -> Tensor:
        return old.index_copy(0, rows, new)

    return WalkCounts(
        gt=replaced(counts.gt, redone.gt),
        ge=replaced(counts.ge, redone.ge),
        at_threshold=replaced(counts.at_threshold, redone.at_threshold),
        unresolved=replaced(counts.unresolved, redone.unresolved),
        expansions=counts.expansions.index_add(0, rows, redone.expansions),
        positive_scores=replaced(counts.positive_scores, redone.positive_scores),
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
