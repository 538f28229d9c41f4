"""Trie-constrained beam search over the catalog, batched over prompts, on a shared prompt cache."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wpauc.decoding.shared_prefix import (
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
    tensor operations only. A beam whose code is complete (a leaf) is finished: it keeps its score
    and competes with the running beams until the end (extending a prefix can only lower its
    score). For fixed-length codes and raw scores this is Hugging Face beam search
    (``generate(num_beams=num_beams, length_penalty=0.0, prefix_allowed_tokens_fn=...)``).
    Attention per step covers ``T + step * num_beams`` keys per beam, so very wide beams over long
    codes cost quadratically more attention.

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
        log-probabilities of the code tokens), sorted by score, best first.
    """
    if not 1 <= num_beams <= trie.num_items:
        raise ValueError(
            f"num_beams={num_beams} must be between 1 and the number of items ({trie.num_items})"
        )
    lengths = check_prompts(input_ids, attention_mask)
    check_fits_model(model, lengths, trie.max_code_length, trie.max_token_id)
    trie = trie.to(input_ids.device)
    batch_size, prompt_width = input_ids.shape
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        logits = prompts.last_logits
        nodes = torch.zeros(batch_size, 1, dtype=torch.long, device=input_ids.device)
        scores = torch.zeros(batch_size, 1, device=input_ids.device)
        # cache positions of each beam's generated tokens, oldest first
        beam_slots = torch.zeros(batch_size, 1, 0, dtype=torch.long, device=input_ids.device)
        new_slots = torch.arange(num_beams, device=input_ids.device)
        for step in range(trie.max_code_length):
            nodes, scores, parents = _select_beams(
                trie, logits, nodes, scores, num_beams, renormalize
            )
            finished = trie.is_leaf(nodes) | scores.isneginf()
            if step + 1 == trie.max_code_length or bool(finished.all()):
                break
            cached = prompt_width + step * num_beams
            inherited = beam_slots.flatten(0, 1)[parents].view(batch_size, num_beams, step)
            beam_slots = torch.cat(
                [inherited, (cached + new_slots)[None, :, None].expand(batch_size, -1, -1)], dim=2
            )
            visible = torch.zeros(
                batch_size, num_beams, cached + num_beams, dtype=torch.bool, device=input_ids.device
            )
            visible[:, :, :prompt_width] = prompt_visibility(prompts, num_beams)
            visible.scatter_(2, beam_slots, True)
            # finished beams run a dummy token too (the batch stays rectangular); it is never used
            tokens = trie.node_token[nodes].clamp(min=0)
            positions = (prompts.lengths[:, None] + step).expand(batch_size, num_beams)
            logits = tree_forward(model, prompts.cache, tokens, positions, visible).flatten(0, 1)
    return trie.node_item[nodes], scores


def _select_beams(
    trie: ItemTrie, logits: Tensor, nodes: Tensor, scores: Tensor, num_beams: int, renormalize: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """One beam-search step: the ``num_beams`` best candidates of each prompt.

    Candidates are the children of every running beam (scored with ``logits`` ``[B * K, V]``) and
    every finished beam itself. Where a prompt has fewer candidates than beams, the rest are
    padding beams at the root with score -inf (they can never beat a real candidate).

    Returns:
        ``(nodes [B, num_beams], scores [B, num_beams], parents [B * num_beams])``, parents being
        each new beam's row among the ``B * K`` old beams.
    """
    batch_size, old_beams = nodes.shape
    flat_nodes, flat_scores = nodes.flatten(), scores.flatten()
    finished = trie.is_leaf(flat_nodes)
    # a finished beam's only candidate is itself: the range [node, node + 1)
    starts = torch.where(finished, flat_nodes, trie.child_offsets[flat_nodes])
    ends = torch.where(finished, flat_nodes + 1, trie.child_offsets[flat_nodes + 1])
    beam, candidate = concat_ranges(starts, ends)
    step_log_probs = edge_log_probs(
        logits, beam, trie.node_token[candidate].clamp(min=0), renormalize
    )
    candidate_scores = flat_scores[beam] + torch.where(finished[beam], 0.0, step_log_probs)

    # lay each prompt's candidates out in one row, padded with -inf, and take its top num_beams
    prompt = beam // old_beams
    counts = torch.bincount(prompt, minlength=batch_size)
    column = torch.arange(beam.numel(), device=beam.device) - (counts.cumsum(0) - counts)[prompt]
    width = max(int(counts.max()), num_beams)
    padded_scores = torch.full((batch_size, width), -torch.inf, device=beam.device)
    padded_scores[prompt, column] = candidate_scores
    padding = beam.numel()  # index of the padding candidate appended below
    padded_index = torch.full((batch_size, width), padding, dtype=torch.long, device=beam.device)
    padded_index[prompt, column] = torch.arange(beam.numel(), device=beam.device)
    top_scores, top_columns = padded_scores.topk(num_beams, dim=1)
    chosen = padded_index.gather(1, top_columns)

    root = torch.zeros(1, dtype=torch.long, device=beam.device)
    new_nodes = torch.cat([candidate, root])[chosen]
    first_beam_of_prompt = torch.arange(batch_size, device=beam.device)[:, None] * old_beams
    parents = torch.where(chosen == padding, first_beam_of_prompt, torch.cat([beam, root])[chosen])
    return new_nodes, top_scores, parents.flatten()
