"""Step time of the shared-prompt group forward (``completion_logprobs``) against the naive
per-sequence forward used by GRPO trainers (every prompt + completion as its own sequence, all
of them in one left-padded batch, as TRL does).

One RL step is timed as forward + backward of ``-(advantages * log_probs).sum()`` for the policy;
the reference's forward under ``torch.no_grad()`` is timed too. Both methods must give the same
log-probabilities and the same parameter gradients.

Default set-up: the random Qwen2 of bench_decoding.py (hidden 128, 2 layers, 4 heads, 2 key/value
heads, MLP 512), 8 prompts of 60-80 SID tokens, G = 17 completions per prompt of 3 SID tokens.

    python benchmarks/bench_group_forward.py                     # the figures (2 threads)
    python benchmarks/bench_group_forward.py --prompts 2 --group-size 4 --repeats 1 \
        --name group_forward_smoke                               # a quick check that it runs

Prints the figures and writes benchmarks/results/<name>.json (default name: group_forward).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from _decoding_setup import (
    CODE_LEVELS,
    CODE_VALUES,
    add_common_arguments,
    bench_model,
    environment,
    left_padded_prompts,
    model_description,
    timed,
    write_results,
)
from torch import Tensor
from transformers import Qwen2ForCausalLM

from wpauc.decoding import completion_logprobs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--prompts", type=int, default=8, help="prompts (contexts) per batch")
    parser.add_argument("--group-size", type=int, default=17, help="completions per prompt (G)")
    parser.add_argument("--completion-length", type=int, default=3, help="tokens per completion")
    parser.add_argument(
        "--min-prompt-length", type=int, default=60, help="shortest prompt (tokens)"
    )
    parser.add_argument("--max-prompt-length", type=int, default=80, help="longest prompt (tokens)")
    parser.add_argument(
        "--name", default="group_forward", help="results file benchmarks/results/<name>.json"
    )
    return parser.parse_args()


def per_sequence_logprobs(
    model: Qwen2ForCausalLM, input_ids: Tensor, attention_mask: Tensor, completions: Tensor
) -> Tensor:
    """``[B, G, L]``: every prompt + completion as its own sequence, one left-padded batch."""
    batch_size, group_size, length = completions.shape
    sequences = torch.cat(
        [input_ids.repeat_interleave(group_size, dim=0), completions.flatten(0, 1)], dim=1
    )
    mask = torch.cat(
        [
            attention_mask.repeat_interleave(group_size, dim=0),
            torch.ones_like(completions.flatten(0, 1)),
        ],
        dim=1,
    )
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits[
        :, -length - 1 : -1
    ]
    picked = (
        logits.float()
        .log_softmax(dim=-1)
        .gather(2, completions.flatten(0, 1)[:, :, None])
        .squeeze(-1)
    )
    return picked.view(batch_size, group_size, length)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model = bench_model(args).train()
    input_ids, attention_mask = left_padded_prompts(
        args.prompts, args.min_prompt_length, args.max_prompt_length, args.seed, args.device
    )
    generator = torch.Generator().manual_seed(args.seed + 1)
    shape = (args.prompts, args.group_size, args.completion_length)
    completions = torch.randint(0, CODE_LEVELS * CODE_VALUES, shape, generator=generator).to(
        args.device
    )
    completion_mask = torch.ones(shape, dtype=torch.bool, device=args.device)
    advantages = torch.randn(shape, generator=generator).to(args.device)

    methods = {
        "shared_prompt": lambda: completion_logprobs(
            model, input_ids, attention_mask, completions, completion_mask
        ),
        "per_sequence": lambda: per_sequence_logprobs(
            model, input_ids, attention_mask, completions
        ),
    }

    def step(method: str) -> tuple[Tensor, list[Tensor]]:
        model.zero_grad(set_to_none=True)
        log_probs = methods[method]()
        (-(advantages * log_probs).sum()).backward()
        return log_probs.detach(), [parameter.grad.clone() for parameter in model.parameters()]

    step_s, reference_s, outputs = {}, {}, {}
    for method in methods:
        step_s[method], outputs[method] = timed(partial(step, method), args.repeats, args.device)
        with torch.no_grad():
            reference_s[method], _ = timed(methods[method], args.repeats, args.device)
    (shared_values, shared_grads), (naive_values, naive_grads) = (
        outputs["shared_prompt"],
        outputs["per_sequence"],
    )

    results = {
        "environment": environment(args),
        "model": model_description(model),
        "setup": {
            "prompts": args.prompts,
            "group_size": args.group_size,
            "completion_length": args.completion_length,
            "prompt_lengths": attention_mask.sum(dim=1).tolist(),
            "repeats": args.repeats,
        },
        "policy_step_s": step_s,
        "policy_step_speedup": step_s["per_sequence"] / step_s["shared_prompt"],
        "reference_forward_s": reference_s,
        "reference_forward_speedup": reference_s["per_sequence"] / reference_s["shared_prompt"],
        "max_abs_logprob_difference": float((shared_values - naive_values).abs().max()),
        "max_abs_gradient_difference": max(
            float((a - b).abs().max()) for a, b in zip(shared_grads, naive_grads, strict=True)
        ),
    }
    print(
        f"{args.prompts} prompts x G={args.group_size} completions of "
        f"{args.completion_length} tokens, {torch.get_num_threads()} threads on {args.device}"
    )
    print(
        f"policy step (forward + backward): shared prompt {step_s['shared_prompt'] * 1e3:.1f} ms,"
        f" per sequence {step_s['per_sequence'] * 1e3:.1f} ms"
        f" -> {results['policy_step_speedup']:.1f}x"
    )
    print(
        f"reference forward (no_grad): shared prompt {reference_s['shared_prompt'] * 1e3:.1f} ms,"
        f" per sequence {reference_s['per_sequence'] * 1e3:.1f} ms"
        f" -> {results['reference_forward_speedup']:.1f}x"
    )
    print(
        f"max |log-prob diff| {results['max_abs_logprob_difference']:.2e}, "
        f"max |grad diff| {results['max_abs_gradient_difference']:.2e}"
    )
    print(f"written to {write_results(args.name, results)}")


if __name__ == "__main__":
    main()
