"""A tiny random Qwen2 and its codes for the decoding tests: random SID and title tries over
a 48-token vocabulary, and left-padded prompts."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB_SIZE = 48
"""Tokens 0..23: SID levels (8 each); 24..31: title words; 39: title end token; 46/47: eos/pad."""
END_TOKEN, EOS, PAD = 39, 46, 47
MAX_POSITIONS = 40
PROMPT_LENGTHS = [7, 3, 5, 1]


def tiny_model(attn_implementation: str = "sdpa", seed: int = 0) -> Qwen2ForCausalLM:
    """A random two-layer Qwen2 whose eos/pad tokens lie outside every code."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
        attn_implementation=attn_implementation,
    )
    return Qwen2ForCausalLM(config).eval()


def sid_codes(num_items: int, seed: int) -> list[list[int]]:
    """Distinct random 3-token SIDs, each level with its own 8 tokens (MiniOneRec style)."""
    generator = torch.Generator().manual_seed(seed)
    levels = [
        torch.randint(8 * level, 8 * level + 8, (4 * num_items,), generator=generator)
        for level in range(3)
    ]
    codes = torch.stack(levels, dim=1).unique(dim=0)
    return codes[torch.randperm(len(codes), generator=generator)[:num_items]].tolist()


def title_codes(num_items: int, seed: int) -> list[list[int]]:
    """Distinct random titles of 1-4 words and the end token (prefix-free, variable length)."""
    generator = torch.Generator().manual_seed(seed)
    titles: dict[tuple[int, ...], None] = {}
    while len(titles) < num_items:
        length = int(torch.randint(1, 5, (1,), generator=generator))
        titles[
            tuple(torch.randint(24, 30, (length,), generator=generator).tolist()) + (END_TOKEN,)
        ] = None
    return [list(title) for title in titles]


def left_padded_prompts(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of the given lengths, left-padded with PAD."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(0, EOS, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, width - length :] = 1
        input_ids[row, : width - length] = PAD
    return input_ids, attention_mask


def real_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor, row: int) -> torch.Tensor:
    return input_ids[row, attention_mask[row].bool()]
