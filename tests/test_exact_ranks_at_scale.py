"""The pruned ranking at a real model's cache shape: Qwen2.5-1.5B's 28 layers, 2 KV heads of
head size 128 and 151,936-token vocabulary (width 64, random weights), on a 400-item SID
catalog. Whatever the model's sharpness (a near-flat random model, where almost every prefix
out-scores the positive, and a peaked one), precision (float32, bf16 autocast) or rank cap,
the counts are those of the full score table and the cost in tokens run through the model is
never more than :func:`~wpauc.decoding.score_items`' on the same contexts, in forwards at most
the code length more (the positive's teacher forcing and the rank cap's beam search)."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from wpauc.decoding import ItemTrie, exact_positive_ranks, score_items
from wpauc.metrics import positive_ranks

VOCAB_SIZE = 151_936
CODE_VALUES = 16
"""Values per SID level; level l, value v is token ``VOCAB_SIZE - 3 * CODE_VALUES + l * 16 + v``
(the code tokens sit at the end of the vocabulary, as added tokens do)."""
PROMPT_LENGTHS = [40, 33, 40, 21]


def real_shape_model(step: float) -> Qwen2ForCausalLM:
    """Random Qwen2 with Qwen2.5-1.5B's cache shape and vocabulary (near-flat item scores),
    with a logit bias of ``-step * value`` on each SID level's tokens: with a large step each
    level's next token is far likelier than the next one, as after training."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        num_hidden_layers=28,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=128,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    biased = torch.nn.Linear(config.hidden_size, VOCAB_SIZE, bias=True)
    with torch.no_grad():
        biased.weight.copy_(model.lm_head.weight)
        biased.bias.zero_()
        biased.bias[-3 * CODE_VALUES :] = -step * torch.arange(CODE_VALUES).float().repeat(3)
    model.lm_head = biased
    return model


def sid_catalog(num_items: int = 400) -> ItemTrie:
    generator = torch.Generator().manual_seed(3)
    first = VOCAB_SIZE - 3 * CODE_VALUES
    codes = torch.randint(0, CODE_VALUES, (4 * num_items, 3), generator=generator).unique(dim=0)
    codes = codes[torch.randperm(len(codes), generator=generator)[:num_items]]
    return ItemTrie.from_codes((codes + first + CODE_VALUES * torch.arange(3)).tolist())


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    width = max(PROMPT_LENGTHS)
    input_ids = torch.randint(
        0, VOCAB_SIZE - 3 * CODE_VALUES, (len(PROMPT_LENGTHS), width), generator=generator
    )
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(PROMPT_LENGTHS):
        attention_mask[row, width - length :] = 1
    return input_ids * attention_mask, attention_mask


class ForwardCounter:
    """Counts the model's forwards and the tokens they run (the prompts' encoding included)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forwards = self.tokens = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs) -> None:
        self.forwards += 1
        self.tokens += kwargs["input_ids"].numel()


def assert_counts_match(counts, scores, target, tolerance: float, resolved) -> torch.Tensor:
    """Equal to the full table's counts wherever no other item scores within ``tolerance`` of
    the positive (two forwards of one item may differ by float noise), bracketed elsewhere, on
    the ``resolved`` contexts; where the positive is beyond the cap, the table agrees that
    ``rank_cap`` items may out-score it. Returns the contexts compared exactly."""
    positive = scores.gather(1, target[:, None])
    others = torch.ones_like(scores, dtype=torch.bool).scatter_(1, target[:, None], False)
    near = ((scores - positive).abs() <= tolerance) & others
    surely_above = ((scores > positive + tolerance) & others).sum(dim=1)
    maybe_above = ((scores >= positive - tolerance) & others).sum(dim=1)
    assert (surely_above[resolved] <= counts.gt[resolved]).all()
    assert (counts.ge[resolved] <= maybe_above[resolved]).all()
    assert (maybe_above[~resolved] >= counts.gt[~resolved]).all()
    expected = positive_ranks(scores, target)
    clear = ~near.any(dim=1) & resolved
    assert torch.equal(counts.gt[clear], expected.gt[clear])
    assert torch.equal(counts.ge[clear], expected.ge[clear])
    return clear


@pytest.mark.parametrize("precision", ["float32", "bf16-autocast"])
@pytest.mark.parametrize("sharpness", ["flat", "peaked"])
def test_real_cache_shape_costs_no_more_than_scoring_every_item(sharpness, precision):
    model = real_shape_model(step=0.0 if sharpness == "flat" else 4.0)
    trie = sid_catalog()
    input_ids, attention_mask = prompts()
    inner_nodes = int((trie.node_item < 0).sum()) - 1  # the root runs with the prompt
    counter = ForwardCounter(model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "float32")
    with autocast:
        scores = score_items(model, input_ids, attention_mask, trie)
        reference_forwards, reference_tokens = counter.forwards, counter.tokens
        order = scores.argsort(dim=1, descending=True)
        # the positive ranked 1st, 3rd, in the middle and last: cheap to most expensive
        target = order[torch.arange(4), torch.tensor([0, 2, trie.num_items // 2, -1])]
        tolerance = 1e-4 if precision == "float32" else 0.25
        runs = {}
        for rank_cap in (None, 20):
            counter.forwards = counter.tokens = 0
            counts = exact_positive_ranks(
                model, input_ids, attention_mask, trie, target, rank_cap=rank_cap
            )
            assert (counts.expansions <= inner_nodes).all()
            # rows are rectangular: a few empty slots run too (here 8 of 1032 tokens at most)
            assert counter.tokens <= 1.01 * reference_tokens
            # a walk runs at least one forward per depth, plus the positive's and the beam's
            assert counter.forwards <= reference_forwards + trie.max_code_length
            resolved = ~counts.beyond_cap
            clear = assert_counts_match(counts, scores, target, tolerance, resolved)
            # near-flat bf16 scores lie within bf16's noise of each other: bracketed only
            assert clear.sum() >= (0 if (sharpness, precision) == ("flat", "bf16-autocast") else 2)
            runs[rank_cap] = counts
    # a positive beyond the cap costs about a 20-beam search (with its own code's prefixes)
    beyond = runs[20].beyond_cap
    assert (runs[20].expansions[beyond] <= 21 * (trie.max_code_length - 1)).all()
    if sharpness == "peaked":
        # a sharp model's top positive runs a small part of the trie
        assert int(runs[None].expansions[0]) < inner_nodes // 4
