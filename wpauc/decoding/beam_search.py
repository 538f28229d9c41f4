"""Trie-constrained beam search over the catalog, batched over prompts, on a shared prompt cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

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
from wpauc.decoding.trie import ItemTrie, concat_ranges


def constrained_beam_search(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    num_beams: int,
    renormalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """The ``num_beams`` best items per prompt found by beam search restricted to the trie.

    Each prompt is encoded once. Every step then runs the ``num_beams`` new tokens of a prompt as
    one row on its cache, each token attending to the prompt, its own beam's earlier tokens and
    itself (tree attention: the cache only grows by ``num_beams`` tokens a step and is never
    reordered or copied per beam), and picks the next beams among all allowed continuations with
    tensor operations only.

    The search is Hugging Face's (``generate(num_beams=num_beams, length_penalty=0.0,
    prefix_allowed_tokens_fn=...)`` with its default ``early_stopping=False``), a code's end
    (a trie leaf) playing the part of the eos token, so it gives the same items and scores
    also for variable-length codes that end with eos (titles): at each step the
    ``2 * num_beams`` best continuations are taken; a finished code among the first
    ``num_beams`` of them joins the finished hypotheses (the ``num_beams`` best are kept) and
    the ``num_beams`` best unfinished ones go on running, so a finished code never takes a
    running beam's place. The search stops when no running beam can beat the worst of
    ``num_beams`` finished codes (scores only go down), or at the longest code. For
    fixed-length codes this is plain beam search over the last step's candidates. Attention
    per step covers ``T + step * num_beams`` keys per beam, so very wide beams over long codes
    cost quadratically more attention.

    Args:
        model: a Hugging Face causal LM whose vocabulary holds the code tokens.
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        trie: the catalog's codes.
        num_beams: beam width, at most the number of items.
        renormalize: score each step by a softmax over the allowed continuations only, instead
            of the log-softmax over the whole vocabulary.

    Returns:
        ``(items, scores)``, both ``[B, num_beams]``: catalog indices and their scores (summed
        log-probabilities of the code tokens), sorted by score, best first. A slot no code
        reached (only with probability-0 continuations) holds item -1 and score -inf.
    """
    if not 1 <= num_beams <= trie.num_items:
        raise ValueError(
            f"num_beams={num_beams} must be between 1 and the number of items ({trie.num_items})"
        )
    lengths = check_prompts(input_ids, attention_mask)
    check_fits_model(model, lengths, trie.max_code_length, trie.max_token_id)
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        return beam_search_on_prompts(
            model, prompts, trie.to(input_ids.device), num_beams, renormalize
        )


def beam_search_on_prompts(
    model: nn.Module, prompts: EncodedPrompts, trie: ItemTrie, num_beams: int, renormalize: bool
) -> tuple[Tensor, Tensor]:
    """:func:`constrained_beam_search` on prompts already encoded (by a caller that checked
    them, put the trie on their device and runs without gradients); the search runs on its own
    cache, so ``prompts`` can serve other searches afterwards."""
    batch_size, prompt_width = prompts.attention_mask.shape
    device = prompts.attention_mask.device
    cache = cache_from(model, prompts.keys, prompts.values)
    logits = prompts.last_logits
    beams = _Beams(
        nodes=torch.zeros(batch_size, 1, dtype=torch.long, device=device),
        scores=torch.zeros(batch_size, 1, device=device),
        finished_items=torch.full((batch_size, num_beams), -1, device=device),
        finished_scores=torch.full((batch_size, num_beams), -torch.inf, device=device),
        done=torch.zeros(batch_size, dtype=torch.bool, device=device),
    )
    # cache positions of each running beam's generated tokens, oldest first
    beam_slots = torch.zeros(batch_size, 1, 0, dtype=torch.long, device=device)
    new_slots = torch.arange(num_beams, device=device)
    for step in range(trie.max_code_length):
        beams, parents = _beam_step(trie, logits, beams, num_beams, renormalize)
        if step + 1 == trie.max_code_length or bool(beams.done.all()):
            break
        cached = prompt_width + step * num_beams
        inherited = beam_slots.flatten(0, 1)[parents].view(batch_size, num_beams, step)
        beam_slots = torch.cat(
            [inherited, (cached + new_slots)[None, :, None].expand(batch_size, -1, -1)], dim=2
        )
        visible = torch.zeros(
            batch_size, num_beams, cached + num_beams, dtype=torch.bool, device=device
        )
        visible[:, :, :prompt_width] = prompt_visibility(prompts, num_beams)
        visible.scatter_(2, beam_slots, True)
        # dead beams run a dummy token too (the batch stays rectangular); it is never used
        tokens = trie.node_token[beams.nodes].clamp(min=0)
        positions = (prompts.lengths[:, None] + step).expand(batch_size, num_beams)
        logits = tree_forward(model, cache, tokens, positions, visible).flatten(0, 1)
    return beams.finished_items, beams.finished_scores


@dataclass(frozen=True)
class _Beams:
    """The state of a batched beam search."""

    nodes: Tensor
    """``[B, K]`` trie node of each running beam (the root for a dead one)."""
    scores: Tensor
    """``[B, K]`` running beams' scores, -inf for a dead beam."""
    finished_items: Tensor
    """``[B, num_beams]`` best finished codes so far (catalog indices, -1 for none), best first."""
    finished_scores: Tensor
    """``[B, num_beams]`` their scores (-inf for none)."""
    done: Tensor
    """``[B]`` no running beam can change the prompt's finished codes any more."""


def _beam_step(
    trie: ItemTrie, logits: Tensor, beams: _Beams, num_beams: int, renormalize: bool
) -> tuple[_Beams, Tensor]:
    """One beam-search step, Hugging Face's way (see :func:`constrained_beam_search`).

    ``logits`` ``[B * K, V]`` follow the running beams. Returns the new state and, for each new
    running beam, its parent's row among the ``B * K`` old beams ``[B * num_beams]``.
    """
    batch_size, old_beams = beams.nodes.shape
    flat_nodes, flat_scores = beams.nodes.flatten(), beams.scores.flatten()
    alive = flat_scores.isfinite()
    starts = trie.child_offsets[flat_nodes]
    ends = torch.where(alive, trie.child_offsets[flat_nodes + 1], starts)
    beam, candidate = concat_ranges(starts, ends)
    candidate_scores = flat_scores[beam] + edge_log_probs(
        logits, beam, trie.node_token[candidate], renormalize
    )

    # lay each prompt's candidates out in one row, padded with -inf, and take its top 2 * beams
    prompt = beam // old_beams
    counts = torch.bincount(prompt, minlength=batch_size)
    column = torch.arange(beam.numel(), device=beam.device) - (counts.cumsum(0) - counts)[prompt]
    width = max(int(counts.max()), 2 * num_beams)
    padded_scores = torch.full((batch_size, width), -torch.inf, device=beam.device)
    padded_scores[prompt, column] = candidate_scores
    padding = beam.numel()  # index of the padding candidate (the root) appended below
    padded_index = torch.full((batch_size, width), padding, dtype=torch.long, device=beam.device)
    padded_index[prompt, column] = torch.arange(beam.numel(), device=beam.device)
    top_scores, top_columns = padded_scores.topk(2 * num_beams, dim=1)
    top = padded_index.gather(1, top_columns)
    root = torch.zeros(1, dtype=torch.long, device=beam.device)
    top_nodes = torch.cat([candidate, root])[top]
    leaf = trie.is_leaf(top_nodes)

    # finished codes among the first num_beams candidates join the finished hypotheses
    first = torch.arange(2 * num_beams, device=beam.device) < num_beams
    joins = leaf & first & top_scores.isfinite() & ~beams.done[:, None]
    merged_scores = torch.cat(
        [beams.finished_scores, torch.where(joins, top_scores, -torch.inf)], dim=1
    )
    merged_items = torch.cat([beams.finished_items, trie.node_item[top_nodes]], dim=1)
    finished_scores, order = merged_scores.topk(num_beams, dim=1)
    finished_items = torch.where(finished_scores.isfinite(), merged_items.gather(1, order), -1)

    # the best num_beams unfinished candidates run on
    running_scores, running = torch.where(leaf, -torch.inf, top_scores).topk(num_beams, dim=1)
    chosen = top.gather(1, running)
    dead = running_scores.isneginf()
    nodes = torch.where(dead, 0, top_nodes.gather(1, running))
    first_beam_of_prompt = torch.arange(batch_size, device=beam.device)[:, None] * old_beams
    parents = torch.where(dead, first_beam_of_prompt, torch.cat([beam, root])[chosen])
    # scores only go down: once every finished slot beats the best running beam, stop
    done = beams.done | running_scores[:, 0].isneginf()
    done |= finished_scores[:, -1].isfinite() & (running_scores[:, 0] <= finished_scores[:, -1])
    state = _Beams(nodes, running_scores, finished_items, finished_scores, done)
    return state, parents.flatten()
