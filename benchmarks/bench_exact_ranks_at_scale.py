"""Cost of the exact ranking at a real model's cache shape: ``exact_positive_ranks`` (full
counts and capped at ``--rank-cap``) against ``score_items`` on the same contexts.

By default the model has Qwen2.5-1.5B's cache shape and vocabulary (28 layers, 2 KV heads of
size 128, 151,936 tokens) at a small width and random weights: near-flat item scores, where
almost every prefix out-scores the positive, the pruned walk's worst case. The catalog is
Office_Products' 3444 distinct SIDs (or random ones without the data), the positives random
items. For each method it counts the model's forwards and the tokens they run (prompts
included, hooks on the model) and times it, and compares the counts (full counts with
``score_items``', capped ones below the cap; near-flat scores put other items within float
noise of the positive, where two forwards of one item may count differently).

    python benchmarks/bench_exact_ranks_at_scale.py --threads 2
    python benchmarks/bench_exact_ranks_at_scale.py --threads 2 --bf16   # bf16 autocast

Prints the table and writes benchmarks/results/<name>.json (default: exact_ranks_at_scale).
"""

from __future__ import annotations

import argparse
import time

import torch
from _decoding_setup import (
    add_common_arguments,
    bench_model,
    environment,
    left_padded_prompts,
    model_description,
    sid_catalog,
    write_results,
)

from wpauc.decoding import ItemTrie, exact_positive_ranks, score_items
from wpauc.metrics import positive_ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.set_defaults(
        hidden_size=256,
        num_layers=28,
        num_heads=2,
        num_kv_heads=2,
        head_dim=128,
        intermediate_size=256,
        vocab_size=151_936,
    )
    parser.add_argument("--catalog", default="auto", help="office, random or auto")
    parser.add_argument("--num-items", type=int, default=3444, help="random catalog size")
    parser.add_argument("--contexts", type=int, default=4, help="prompts (one batch)")
    parser.add_argument("--prompt-length", type=int, default=300, help="tokens per prompt")
    parser.add_argument("--rank-cap", type=int, default=20, help="the capped run's rank cap")
    parser.add_argument("--bf16", action="store_true", help="run under bf16 autocast")
    parser.add_argument("--name", default="exact_ranks_at_scale", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = bench_model(args)
    model.config.max_position_embeddings = args.prompt_length + 8
    codes, catalog = sid_catalog(args.catalog, args.num_items, args.seed)
    trie = ItemTrie.from_codes(codes).to(args.device)
    input_ids, attention_mask = left_padded_prompts(
        args.contexts, args.prompt_length, args.prompt_length, args.seed, args.device
    )
    target = torch.randint(0, trie.num_items, (args.contexts,), device=args.device)
    counted = {"forwards": 0, "tokens": 0}

    def count(module, positional, keyword) -> None:
        counted["forwards"] += 1
        counted["tokens"] += keyword["input_ids"].numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    runs = {
        "score_items": lambda: positive_ranks(
            score_items(model, input_ids, attention_mask, trie), target
        ),
        "exact_positive_ranks": lambda: exact_positive_ranks(
            model, input_ids, attention_mask, trie, target
        ),
        f"exact_positive_ranks(rank_cap={args.rank_cap})": lambda: exact_positive_ranks(
            model, input_ids, attention_mask, trie, target, rank_cap=args.rank_cap
        ),
    }
    figures, counts = {}, {}
    inner_nodes = int((trie.node_item < 0).sum()) - 1
    print(f"{catalog}: {trie.num_items} items, {inner_nodes} inner nodes below the root")
    with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
        for name, run in runs.items():
            counted.update(forwards=0, tokens=0)
            started = time.perf_counter()
            counts[name] = run()
            seconds = time.perf_counter() - started
            figures[name] = {"seconds": seconds, **counted}
            print(
                f"{name:36s} {seconds:8.2f} s {counted['forwards']:6d} forwards "
                f"{counted['tokens']:9d} tokens",
                flush=True,
            )
    reference = counts["score_items"]
    full = counts["exact_positive_ranks"]
    capped = counts[f"exact_positive_ranks(rank_cap={args.rank_cap})"]
    below = ~capped.beyond_cap
    scores_differ = (full.gt != reference.gt) | (full.ge != reference.ge)
    agreement = {
        # two forwards of one item differ by float noise: near-ties may count differently
        "full_contexts_equal": int((~scores_differ).sum()),
        "full_max_count_difference": int(
            torch.maximum((full.gt - reference.gt).abs(), (full.ge - reference.ge).abs()).max()
        ),
        "capped_equal_below_cap": bool(torch.equal(capped.gt[below], reference.gt[below])),
        "beyond_cap": int(capped.beyond_cap.sum()),
    }
    base = figures["score_items"]
    for figure in figures.values():
        figure["tokens_vs_score_items"] = figure["tokens"] / base["tokens"]
        figure["seconds_vs_score_items"] = figure["seconds"] / base["seconds"]
    print("| method | seconds | x score_items | forwards | tokens | x score_items |")
    print("|---|---|---|---|---|---|")
    for name, figure in figures.items():
        print(
            f"| {name} | {figure['seconds']:.2f} | {figure['seconds_vs_score_items']:.2f} | "
            f"{figure['forwards']} | {figure['tokens']} | {figure['tokens_vs_score_items']:.3f} |"
        )
    print(agreement)
    results = {
        "environment": environment(args),
        "model": model_description(model),
        "catalog": catalog,
        "inner_nodes": inner_nodes,
        "contexts": args.contexts,
        "prompt_length": args.prompt_length,
        "bf16_autocast": args.bf16,
        "figures": figures,
        "agreement": agreement,
    }
    print(f"wrote {write_results(args.name, results)}")


if __name__ == "__main__":
    main()
