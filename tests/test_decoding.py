"""Item trie, constrained beam search, exact item scoring and the shared-prompt group forward,
checked against brute force, a naive reference beam search and Hugging Face ``generate``."""

import pytest
import torch

from tests.helpers.decoding import (
    END_TOKEN,
    EOS,
    MAX_POSITIONS,
    PAD,
    PROMPT_LENGTHS,
    VOCAB_SIZE,
    left_padded_prompts,
    real_prompt,
    sid_codes,
    tiny_model,
    title_codes,
)
from wpauc.decoding import ItemTrie, completion_logprobs, constrained_beam_search, score_items


def allowed_after(codes: list[list[int]], prefix: list[int]) -> list[int]:
    """Tokens that continue ``prefix`` in some code (brute force over the codes)."""
    depth = len(prefix)
    return sorted({code[depth] for code in codes if len(code) > depth and code[:depth] == prefix})


def child_tokens(trie: ItemTrie, nodes: torch.Tensor) -> list[list[int]]:
    """Tokens that continue each node's prefix, read from the trie's child ranges."""
    rows, child_nodes = trie.children(nodes)
    tokens = trie.node_token[child_nodes]
    return [tokens[rows == row].tolist() for row in range(nodes.numel())]


@torch.no_grad()
def next_token_log_probs(
    model, prompt: torch.Tensor, prefix: list[int], codes, renormalize: bool
) -> torch.Tensor:
    """Full forward of ``prompt + prefix``: log-probs of the next token over the vocabulary
    (or over the trie's allowed continuations, -inf elsewhere, when renormalising)."""
    sequence = torch.cat([prompt, torch.tensor(prefix, dtype=torch.long)])[None]
    logits = model(sequence).logits[0, -1].float()
    if not renormalize:
        return logits.log_softmax(dim=-1)
    allowed = torch.tensor(allowed_after(codes, prefix))
    log_probs = torch.full_like(logits, -torch.inf)
    log_probs[allowed] = logits[allowed].log_softmax(dim=-1)
    return log_probs


def brute_force_scores(model, input_ids, attention_mask, codes, renormalize: bool) -> torch.Tensor:
    """``[B, N]`` teacher forcing of every item separately: one forward per (prompt, item)."""
    scores = torch.zeros(input_ids.shape[0], len(codes))
    for row in range(input_ids.shape[0]):
        prompt = real_prompt(input_ids, attention_mask, row)
        for item, code in enumerate(codes):
            scores[row, item] = sum(
                next_token_log_probs(model, prompt, code[:depth], codes, renormalize)[code[depth]]
                for depth in range(len(code))
            )
    return scores


def reference_beam_search(
    model, prompt, codes, num_beams: int, renormalize: bool
) -> list[tuple[float, int]]:
    """Hugging Face's beam search in Python loops: each step takes the 2 * num_beams best
    continuations of the running beams; finished codes among the first num_beams of them join
    the finished list (its num_beams best are kept), the num_beams best unfinished ones run on;
    it stops when no running beam beats the worst of num_beams finished codes."""
    index = {tuple(code): item for item, code in enumerate(codes)}
    running: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    finished: list[tuple[float, tuple[int, ...]]] = []
    while running:
        candidates = []
        for score, prefix in running:
            log_probs = next_token_log_probs(model, prompt, list(prefix), codes, renormalize)
            for token in allowed_after(codes, list(prefix)):
                candidates.append((score + float(log_probs[token]), prefix + (token,)))
        best = sorted(candidates, key=lambda candidate: -candidate[0])[: 2 * num_beams]
        finished += [candidate for candidate in best[:num_beams] if candidate[1] in index]
        finished = sorted(finished, key=lambda candidate: -candidate[0])[:num_beams]
        running = [candidate for candidate in best if candidate[1] not in index][:num_beams]
        if len(finished) == num_beams and running and running[0][0] <= finished[-1][0]:
            break
    return [(score, index[prefix]) for score, prefix in finished]


def generate_items(model, input_ids, attention_mask, trie, codes, num_beams, end_token=None):
    """Hugging Face beam search constrained by the trie: ``(items, scores)``
    ``[B, num_beams]``. Fixed-length codes (``end_token`` None) run exactly their length;
    codes ending with ``end_token`` stop at it (the eos of ``generate``)."""
    allowed = trie.prefix_allowed_tokens_fn(input_ids.shape[1])

    def allowed_or_pad(batch_id: int, sequence: torch.Tensor) -> list[int]:
        # a running beam Hugging Face keeps at score -1e9 once every continuation ended
        return allowed(batch_id, sequence) or [PAD]

    length = trie.max_code_length
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        length_penalty=0.0,
        do_sample=False,
        prefix_allowed_tokens_fn=allowed_or_pad,
        max_new_tokens=length,
        min_new_tokens=length if end_token is None else 0,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=PAD,
        eos_token_id=EOS if end_token is None else end_token,
    )
    item_of_code = {tuple(code): item for item, code in enumerate(codes)}
    items = []
    for generated in output.sequences[:, input_ids.shape[1] :].tolist():
        if end_token is not None:
            generated = generated[: generated.index(end_token) + 1]
        items.append(item_of_code[tuple(generated)])
    shape = (input_ids.shape[0], num_beams)
    return torch.tensor(items).view(shape), output.sequences_scores.view(shape)


# ---------------------------------------------------------------------------------------- trie


@pytest.mark.parametrize(
    "codes", [sid_codes(60, seed=0), title_codes(40, seed=0)], ids=["sid", "title"]
)
def test_trie_matches_brute_force_prefix_sets(codes):
    trie = ItemTrie.from_codes(codes)
    assert trie.num_items == len(codes)
    assert trie.max_code_length == max(map(len, codes))
    for item, code in enumerate(codes):
        assert trie.item_codes[item, : len(code)].tolist() == code
        assert trie.item_codes[item, len(code) :].eq(0).all()
        assert int(trie.item_code_lengths[item]) == len(code)
    # walk every code with step(); check each prefix's allowed tokens against brute force
    nodes = torch.zeros(len(codes), dtype=torch.long)
    for depth in range(trie.max_code_length):
        alive = (trie.item_code_lengths > depth).nonzero().flatten()
        allowed = child_tokens(trie, nodes[alive])
        for row, item in enumerate(alive.tolist()):
            assert allowed[row] == allowed_after(codes, codes[item][:depth])
            assert torch.equal(trie.node_depth[nodes[item]], torch.tensor(depth))
        nodes[alive] = trie.step(nodes[alive], trie.item_codes[alive, depth])
        assert (nodes[alive] > 0).all()
    assert torch.equal(nodes, trie.item_leaf)
    assert torch.equal(trie.node_item[trie.item_leaf], torch.arange(len(codes)))
    assert int((trie.node_item >= 0).sum()) == len(codes)
    # every depth is one contiguous block of nodes
    for depth in range(trie.max_code_length + 1):
        block = trie.node_depth[trie.level(depth)]
        assert block.eq(depth).all() and block.numel() > 0


def test_trie_step_rejects_tokens_that_leave_the_codes():
    trie = ItemTrie.from_codes([[5, 1, 2], [5, 1, 3], [4, 9, 39]])
    nodes = torch.tensor([0, 0, 0, 0, -1])
    tokens = torch.tensor([5, 6, 100, -3, 5])  # 100 exceeds every code token; -1 is no node
    assert trie.step(nodes, tokens)[1:].eq(-1).all()
    assert trie.step(nodes, tokens)[0] > 0


def test_trie_scales_to_a_pretrained_vocabulary():
    """4k titles of ~20 tokens over a 150k vocabulary: no dense table, fast to build."""
    generator = torch.Generator().manual_seed(0)
    end_token = 150_999
    lengths = torch.randint(10, 21, (4000,), generator=generator)
    codes = [
        torch.randint(0, 150_000, (int(length),), generator=generator).tolist() + [end_token]
        for length in lengths
    ]
    trie = ItemTrie.from_codes(codes)
    stored = sum(getattr(trie, name).numel() for name in trie.__dataclass_fields__)
    assert stored < 40 * trie.num_nodes  # linear in nodes, nothing of vocabulary size
    assert child_tokens(trie, torch.tensor([0]))[0] == sorted({code[0] for code in codes})
    assert torch.equal(trie.node_item[trie.item_leaf], torch.arange(4000))


def test_trie_to_device_moves_every_tensor():
    trie = ItemTrie.from_codes([[1, 2], [1, 3]])
    assert trie.to("cpu") is trie
    moved = trie.to("meta")
    assert all(getattr(moved, name).device.type == "meta" for name in trie.__dataclass_fields__)


def test_trie_prefix_allowed_tokens_fn_matches_brute_force():
    codes = title_codes(20, seed=3)
    trie = ItemTrie.from_codes(codes)
    allowed_fn = trie.prefix_allowed_tokens_fn(prompt_length=2)
    for code in codes:
        for depth in range(len(code)):
            sequence = torch.tensor([PAD, PAD] + code[:depth])
            assert sorted(allowed_fn(0, sequence)) == allowed_after(codes, code[:depth])


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ([], "empty"),
        ([[1, 2], []], r"item\(s\) \[1\] have an empty code"),
        ([[1, 2], [3], [1, 2]], "items 0 and 2 have the same code"),
        ([[1, 2], [1, 2, 3]], "item 0 .* is a prefix of the code of item 1"),
        ([[1, 2, 3], [4], [1, 2]], "item 2 .* is a prefix of the code of item 0"),
        ([[1, -2]], "item 0 has a negative token id"),
    ],
)
def test_trie_rejects_bad_codes(codes, message):
    with pytest.raises(ValueError, match=message):
        ItemTrie.from_codes(codes)


# --------------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("num_beams", [2, 10, 24])
def test_beam_search_equals_hugging_face_generate(num_beams):
    """Fixed-length SIDs, raw log-probs: same items in the same order and the same scores as HF
    beam search; 10 and 24 beams exceed the 8 first-level prefixes at the first step. (With one
    beam HF switches to greedy search, whose scores are not log-probs: see the reference test.)"""
    model = tiny_model()
    codes = sid_codes(40, seed=1)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    items, scores = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams)
    hf_items, hf_scores = generate_items(model, input_ids, attention_mask, trie, codes, num_beams)
    assert torch.equal(items, hf_items)
    torch.testing.assert_close(scores, hf_scores)


@pytest.mark.parametrize("num_beams", [2, 5, 12])
def test_beam_search_on_titles_equals_hugging_face_generate(num_beams):
    """Variable-length titles ending with the end token, given to ``generate`` as its eos:
    finished titles leave the running beams as in HF, so the items and scores are the same,
    also when short titles finish early (1-4 words, 25 titles; 12 beams is about half the
    catalog, so many titles finish while others run)."""
    model = tiny_model(seed=3)
    codes = title_codes(25, seed=5)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    items, scores = constrained_beam_search(model, input_ids, attention_mask, trie, num_beams)
    hf_items, hf_scores = generate_items(
        model, input_ids, attention_mask, trie, codes, num_beams, end_token=END_TOKEN
    )
    assert torch.equal(items, hf_items)
    torch.testing.assert_close(scores, hf_scores)


@pytest.mark.parametrize("num_beams", [1, 6])
@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
@pytest.mark.parametrize("catalog", ["sid", "title"])
def test_beam_search_equals_reference_beam_search(catalog, renormalize, num_beams):
    model = tiny_model()
    codes = sid_codes(30, seed=2) if catalog == "sid" else title_codes(30, seed=2)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS[:3])
    items, scores = constrained_beam_search(
        model, input_ids, attention_mask, trie, num_beams, renormalize
    )
    for row in range(input_ids.shape[0]):
        prompt = real_prompt(input_ids, attention_mask, row)
        expected = reference_beam_search(model, prompt, codes, num_beams, renormalize)
        assert items[row].tolist() == [item for _, item in expected]
        torch.testing.assert_close(scores[row], torch.tensor([score for score, _ in expected]))
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_full_width_beam_search_ranks_the_whole_catalog(attn_implementation, renormalize):
    """With as many beams as items nothing is pruned: the beam is the exact ranking."""
    model = tiny_model(attn_implementation)
    codes = title_codes(25, seed=4)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    items, scores = constrained_beam_search(
        model, input_ids, attention_mask, trie, len(codes), renormalize
    )
    exact = score_items(model, input_ids, attention_mask, trie, renormalize=renormalize)
    ranked = exact.sort(dim=1, descending=True)
    assert torch.equal(items, ranked.indices)
    torch.testing.assert_close(scores, ranked.values)


def test_beam_search_restores_training_mode_and_needs_no_grad():
    model = tiny_model().train()
    trie = ItemTrie.from_codes(sid_codes(20, seed=5))
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    items, scores = constrained_beam_search(model, input_ids, attention_mask, trie, 5)
    assert model.training and not scores.requires_grad
    assert torch.equal(
        items, constrained_beam_search(model.eval(), input_ids, attention_mask, trie, 5)[0]
    )


# ------------------------------------------------------------------------------- exact scoring


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalized"])
@pytest.mark.parametrize("catalog", ["sid", "title"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_score_items_equals_teacher_forcing(catalog, renormalize, attn_implementation):
    model = tiny_model(attn_implementation)
    codes = sid_codes(30, seed=6) if catalog == "sid" else title_codes(30, seed=6)
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS[:3])
    expected = brute_force_scores(model, input_ids, attention_mask, codes, renormalize)
    for chunk_nodes in (None, 3):  # one chunk per depth, and many chunks per depth
        scores = score_items(
            model, input_ids, attention_mask, trie, renormalize=renormalize, chunk_nodes=chunk_nodes
        )
        torch.testing.assert_close(scores, expected)


def test_single_token_codes_score_and_rank_by_the_prompt_logits():
    """One-token codes: the scores are the prompt's next-token log-probs, the beam their top-k."""
    model = tiny_model()
    codes = [[3], [17], [5], [30]]
    trie = ItemTrie.from_codes(codes)
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    expected = brute_force_scores(model, input_ids, attention_mask, codes, renormalize=False)
    torch.testing.assert_close(score_items(model, input_ids, attention_mask, trie), expected)
    items, scores = constrained_beam_search(model, input_ids, attention_mask, trie, 3)
    top = expected.topk(3, dim=1)
    assert torch.equal(items, top.indices)
    torch.testing.assert_close(scores, top.values)


def test_renormalized_scores_are_a_distribution_over_the_catalog():
    model = tiny_model()
    trie = ItemTrie.from_codes(title_codes(30, seed=7))
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    scores = score_items(model, input_ids, attention_mask, trie, renormalize=True)
    torch.testing.assert_close(scores.exp().sum(dim=1), torch.ones(len(PROMPT_LENGTHS)))


# ------------------------------------------------------------------------------------ bad input


def _call(function, model, input_ids, attention_mask, trie, num_beams=3):
    if function is constrained_beam_search:
        return function(model, input_ids, attention_mask, trie, num_beams)
    return function(model, input_ids, attention_mask, trie)


@pytest.mark.parametrize("function", [constrained_beam_search, score_items])
def test_bad_prompts_and_models_raise(function):
    model = tiny_model()
    trie = ItemTrie.from_codes(sid_codes(10, seed=8))
    input_ids, attention_mask = left_padded_prompts([4, 2])
    empty = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="zero length"):
        _call(function, model, empty, empty, trie)
    all_padding = attention_mask.clone()
    all_padding[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\] are all padding"):
        _call(function, model, input_ids, all_padding, trie)
    with pytest.raises(ValueError, match=r"left-padded.*rows \[1\]"):
        _call(function, model, input_ids, attention_mask.flip(1), trie)
    long_ids, long_mask = left_padded_prompts([MAX_POSITIONS - 2, 3])
    with pytest.raises(ValueError, match=r"prompt row 0 has 38 tokens.*max_position_embeddings=40"):
        _call(function, model, long_ids, long_mask, trie)
    big_token_trie = ItemTrie.from_codes([[1, 2, 3], [1, 2, VOCAB_SIZE + 5]])
    with pytest.raises(ValueError, match=f"token id {VOCAB_SIZE + 5}.*only {VOCAB_SIZE} tokens"):
        _call(function, model, input_ids, attention_mask, big_token_trie, num_beams=2)


def test_score_items_rejects_a_non_positive_chunk():
    input_ids, attention_mask = left_padded_prompts([4, 2])
    trie = ItemTrie.from_codes(sid_codes(10, seed=8))
    with pytest.raises(ValueError, match="chunk_nodes=0 must be positive"):
        score_items(tiny_model(), input_ids, attention_mask, trie, chunk_nodes=0)


@pytest.mark.parametrize("num_beams", [0, 11])
def test_beam_width_outside_the_catalog_raises(num_beams):
    input_ids, attention_mask = left_padded_prompts([4, 2])
    trie = ItemTrie.from_codes(sid_codes(10, seed=8))
    with pytest.raises(ValueError, match=f"num_beams={num_beams} .* number of items \\(10\\)"):
        constrained_beam_search(tiny_model(), input_ids, attention_mask, trie, num_beams)


# ------------------------------------------------------------------- shared-prompt group forward


def random_group(num_prompts: int, group_size: int, length: int, seed: int = 9):
    """Random completions with a few right-padded (shorter) members; padding ids are junk."""
    generator = torch.Generator().manual_seed(seed)
    completions = torch.randint(0, EOS, (num_prompts, group_size, length), generator=generator)
    lengths = torch.randint(1, length + 1, (num_prompts, group_size), generator=generator)
    lengths[:, 0] = length
    completion_mask = torch.arange(length) < lengths[..., None]
    completions[~completion_mask] = 10_000
    return completions, completion_mask


def naive_completion_logprobs(
    model, input_ids, attention_mask, completions, completion_mask
) -> torch.Tensor:
    """One forward of ``prompt + completion`` per group member."""
    result = torch.zeros(completions.shape)
    for row in range(completions.shape[0]):
        prompt = real_prompt(input_ids, attention_mask, row)
        for member in range(completions.shape[1]):
            tokens = completions[row, member, completion_mask[row, member]]
            logits = model(torch.cat([prompt, tokens])[None]).logits[0].float()
            positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens))
            picked = logits[positions].log_softmax(dim=-1).gather(1, tokens[:, None])[:, 0]
            result = result.index_put(
                (torch.tensor(row), torch.tensor(member), torch.arange(len(tokens))), picked
            )
    return result


def parameter_gradients(
    model, log_probs: torch.Tensor, weights: torch.Tensor
) -> list[torch.Tensor]:
    model.zero_grad()
    (log_probs * weights).sum().backward()
    return [parameter.grad.clone() for parameter in model.parameters() if parameter.requires_grad]


@pytest.mark.parametrize(
    ("length", "checkpointing"), [(1, False), (4, False), (4, True)], ids=["L1", "L4", "L4-ckpt"]
)
def test_completion_logprobs_equal_per_sequence_forward_values_and_gradients(length, checkpointing):
    model = tiny_model().train()
    if checkpointing:  # as the pretrained-policy configs may set: no cache can be used
        model.gradient_checkpointing_enable()
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS)
    completions, completion_mask = random_group(len(PROMPT_LENGTHS), 5, length)
    weights = torch.randn(completions.shape, generator=torch.Generator().manual_seed(0))

    shared = completion_logprobs(model, input_ids, attention_mask, completions, completion_mask)
    naive = naive_completion_logprobs(
        model, input_ids, attention_mask, completions, completion_mask
    )
    torch.testing.assert_close(shared, naive)
    assert shared[~completion_mask].eq(0).all()
    assert model.training
    for got, expected in zip(
        parameter_gradients(model, shared, weights),
        parameter_gradients(model, naive, weights),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_completion_logprobs_on_a_lora_model():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        tiny_model(),
        peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
    )
    input_ids, attention_mask = left_padded_prompts(PROMPT_LENGTHS[:2])
    completions, completion_mask = random_group(2, 3, 3)
    shared = completion_logprobs(model, input_ids, attention_mask, completions, completion_mask)
    naive = naive_completion_logprobs(
        model, input_ids, attention_mask, completions, completion_mask
    )
    torch.testing.assert_close(shared, naive)
    weights = torch.ones(completions.shape)
    for got, expected in zip(
        parameter_gradients(model, shared, weights),
        parameter_gradients(model, naive, weights),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_completion_logprobs_rejects_bad_groups():
    model = tiny_model()
    input_ids, attention_mask = left_padded_prompts([4, 2])
    completions, completion_mask = random_group(2, 3, 3)
    holes = completion_mask.clone()
    holes[0, 0] = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match="right-padded"):
        completion_logprobs(model, input_ids, attention_mask, completions, holes)
    with pytest.raises(ValueError, match=r"B = 2 prompts"):
        completion_logprobs(model, input_ids, attention_mask, completions[:1], completion_mask[:1])
    with pytest.raises(ValueError, match="shape of completions"):
        completion_logprobs(model, input_ids, attention_mask, completions, completion_mask[..., :2])
