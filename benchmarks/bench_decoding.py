"""Speed of wpauc's trie decoding against the straightforward ways of doing the same thing.

(a) ``constrained_beam_search`` against Hugging Face ``generate(num_beams=..., length_penalty=0.0,
    prefix_allowed_tokens_fn=...)`` on the same model, prompts and catalog: both must return the
    same items in the same order with the same scores.
(b) ``score_items`` (every distinct trie prefix run once per prompt on the shared prompt cache)
    against per-item teacher forcing: every (prompt + item code) as its own sequence, batched
    over items (``--item-chunk`` sequences per forward). Also reported, as a stronger baseline:
    per-item teacher forcing on a shared prompt cache (``completion_logprobs`` with the whole
    catalog as the group), which shares the prompt but not the trie prefixes.

Default set-up: a random Qwen2 (hidden 128, 2 layers, 4 heads, 2 key/value heads, MLP 512,
vocabulary 3 x 256 SID tokens + 32), 8 left-padded prompts of 40-60 SID tokens, 50 beams,
3-token SIDs of Office_Products (3444 distinct SIDs) when MiniOneRec's Office_Products.index.json
is found at $WPAUC_DATA/amazon18-minionerec/index/ (default data/) (docs/data.md says where
to get it), else 3459 random SIDs.

    python benchmarks/bench_decoding.py                      # the figures (2 threads)
    python benchmarks/bench_decoding.py --prompts 2 --beams 5 --catalog random --items 300 \
        --repeats 1 --name decoding_smoke                    # a quick check that it runs

Prints the figures and writes benchmarks/results/<name>.json (default name: decoding).
"""

from __future__ import annotations

import argparse

import torch
from _decoding_setup import (
    add_common_arguments,
    bench_model,
    environment,
    left_padded_prompts,
    model_description,
    sid_catalog,
    timed,
    write_results,
)
from torch import Tensor
from transformers import Qwen2ForCausalLM

from wpauc.decoding import ItemTrie, completion_logprobs, constrained_beam_search, score_items


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per batch")
    parser.add_argument("--beams", type=int, default=50, help="beam width")
    parser.add_argument(
        "--min-prompt-length", type=int, default=40, help="shortest prompt (tokens)"
    )
    parser.add_argument("--max-prompt-length", type=int, default=60, help="longest prompt (tokens)")
    parser.add_argument(
        "--catalog",
        choices=["auto", "office", "random"],
        default="auto",
        help="Office SIDs from $WPAUC_DATA/amazon18-minionerec/index/Office_Products.index.json "
        "(auto: when present; see docs/data.md) or random SIDs",
    )
    parser.add_argument("--items", type=int, default=3459, help="catalog size of a random catalog")
    parser.add_argument(
        "--item-chunk",
        type=int,
        default=512,
        help="items per forward in the teacher-forcing baselines",
    )
    parser.add_argument(
        "--name", default="decoding", help="results file benchmarks/results/<name>.json"
    )
    return parser.parse_args()


def hf_beam_search(
    model: Qwen2ForCausalLM,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    num_beams: int,
) -> tuple[Tensor, Tensor]:
    """Hugging Face constrained beam search, mapped back to catalog indices: ``[B, beams]`` each."""
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        length_penalty=0.0,
        early_stopping=True,
        do_sample=False,
        prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn(input_ids.shape[1]),
        max_new_tokens=trie.max_code_length,
        min_new_tokens=trie.max_code_length,
        output_scores=True,
        return_dict_in_generate=True,
    )
    codes = output.sequences[:, input_ids.shape[1] :]
    nodes = torch.zeros(len(codes), dtype=torch.long, device=codes.device)
    for depth in range(codes.shape[1]):
        nodes = trie.step(nodes, codes[:, depth])
    batch_size = input_ids.shape[0]
    return trie.node_item[nodes].view(batch_size, num_beams), output.sequences_scores.view(
        batch_size, num_beams
    )


def teacher_forcing_scores(
    model: Qwen2ForCausalLM,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    item_chunk: int,
) -> Tensor:
    """``[B, N]``: every (prompt + item code) through the model as a full sequence, ``item_chunk``
    items per forward (fixed-length codes)."""
    scores = torch.empty(input_ids.shape[0], trie.num_items, device=input_ids.device)
    code_length = trie.max_code_length
    for row in range(input_ids.shape[0]):
        prompt = input_ids[row, attention_mask[row].bool()]
        for start in range(0, trie.num_items, item_chunk):
            codes = trie.item_codes[start : start + item_chunk]
            sequences = torch.cat([prompt.expand(len(codes), -1), codes], dim=1)
            logits = model(sequences).logits[:, len(prompt) - 1 : -1].float()
            picked = logits.log_softmax(dim=-1).gather(2, codes[:, :, None]).squeeze(-1)
            scores[row, start : start + len(codes)] = picked[:, :code_length].sum(dim=1)
    return scores


def shared_prompt_teacher_forcing_scores(
    model: Qwen2ForCausalLM,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    item_chunk: int,
) -> Tensor:
    """``[B, N]``: every item code as a completion of the shared prompt cache, ``item_chunk`` items
    per call of ``completion_logprobs``."""
    chunks = []
    for start in range(0, trie.num_items, item_chunk):
        codes = trie.item_codes[start : start + item_chunk].expand(input_ids.shape[0], -1, -1)
        mask = (
            torch.arange(trie.max_code_length, device=codes.device)
            < trie.item_code_lengths[start : start + item_chunk, None]
        )
        log_probs = completion_logprobs(
            model, input_ids, attention_mask, codes, mask.expand_as(codes)
        )
        chunks.append(log_probs.sum(dim=2))
    return torch.cat(chunks, dim=1)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model = bench_model(args)
    codes, catalog = sid_catalog(args.catalog, args.items, args.seed)
    trie = ItemTrie.from_codes(codes).to(args.device)
    input_ids, attention_mask = left_padded_prompts(
        args.prompts, args.min_prompt_length, args.max_prompt_length, args.seed, args.device
    )
    print(
        f"catalog: {catalog}: {trie.num_items} items; {args.prompts} prompts, {args.beams} beams, "
        f"{torch.get_num_threads()} threads on {args.device}"
    )

    with torch.no_grad():
        ours_beam_s, (items, scores) = timed(
            lambda: constrained_beam_search(model, input_ids, attention_mask, trie, args.beams),
            args.repeats,
            args.device,
        )
        hf_beam_s, (hf_items, hf_scores) = timed(
            lambda: hf_beam_search(model, input_ids, attention_mask, trie, args.beams),
            args.baseline_repeats,
            args.device,
        )
        ours_score_s, exact = timed(
            lambda: score_items(model, input_ids, attention_mask, trie), args.repeats, args.device
        )
        forcing_s, forced = timed(
            lambda: teacher_forcing_scores(model, input_ids, attention_mask, trie, args.item_chunk),
            args.baseline_repeats,
            args.device,
            warm_up=False,
        )
        shared_forcing_s, shared_forced = timed(
            lambda: shared_prompt_teacher_forcing_scores(
                model, input_ids, attention_mask, trie, args.item_chunk
            ),
            args.baseline_repeats,
            args.device,
            warm_up=False,
        )

    results = {
        "environment": environment(args),
        "model": model_description(model),
        "setup": {
            "catalog": catalog,
            "num_items": trie.num_items,
            "code_length": trie.max_code_length,
            "prompts": args.prompts,
            "prompt_lengths": attention_mask.sum(dim=1).tolist(),
            "beams": args.beams,
            "item_chunk": args.item_chunk,
            "repeats": args.repeats,
            "baseline_repeats": args.baseline_repeats,
        },
        "beam_search": {
            "wpauc_s": ours_beam_s,
            "hf_generate_s": hf_beam_s,
            "speedup": hf_beam_s / ours_beam_s,
            "same_items_same_order": bool(torch.equal(items, hf_items)),
            "max_abs_score_difference": float((scores - hf_scores).abs().max()),
        },
        "score_items": {
            "wpauc_s": ours_score_s,
            "teacher_forcing_s": forcing_s,
            "speedup": forcing_s / ours_score_s,
            "shared_prompt_teacher_forcing_s": shared_forcing_s,
            "speedup_vs_shared_prompt": shared_forcing_s / ours_score_s,
            "max_abs_score_difference": float((exact - forced).abs().max()),
            "max_abs_score_difference_shared_prompt": float((exact - shared_forced).abs().max()),
        },
    }
    beam, scoring = results["beam_search"], results["score_items"]
    print(
        f"(a) beam search: wpauc {ours_beam_s * 1e3:.1f} ms, HF generate {hf_beam_s * 1e3:.1f} ms "
        f"-> {beam['speedup']:.1f}x; same items in order: {beam['same_items_same_order']}, "
        f"max |score diff| {beam['max_abs_score_difference']:.2e}"
    )
    print(
        f"(b) score_items: wpauc {ours_score_s * 1e3:.1f} ms, per-item teacher forcing "
        f"{forcing_s * 1e3:.1f} ms -> {scoring['speedup']:.1f}x "
        f"(max |diff| {scoring['max_abs_score_difference']:.2e}); shared-prompt teacher forcing "
        f"{shared_forcing_s * 1e3:.1f} ms -> {scoring['speedup_vs_shared_prompt']:.1f}x"
    )
    print(f"written to {write_results(args.name, results)}")


if __name__ == "__main__":
    main()
