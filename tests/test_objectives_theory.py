"""docs/design.md on real code: the GRPO loss with binary rewards is the pairwise AUC
surrogate (gradients on a tiny Qwen2), and the negative sampler decides which AUC."""

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from wpauc.decoding import (
    ItemTrie,
    PolicyScorer,
    ScoreTable,
    completion_logprobs,
    constrained_beam_search,
    score_items,
)
from wpauc.objectives import (
    GRPOAUC,
    PolicyLoss,
    Rollout,
    RolloutContext,
    TAWinWPAUC,
    grpo_advantages,
)

VOCAB = 40
FIRST_CODE_TOKEN = 10


def tiny_qwen2(seed=0):
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    return Qwen2ForCausalLM(config).eval()


def per_token_logprobs(model, prompts, completions):
    """Direct forward of prompt + code for every member: `[B, G, L]` log-probs."""
    batch, group, length = completions.shape
    prompt_length = prompts.shape[1]
    sequences = torch.cat(
        [prompts.unsqueeze(1).expand(batch, group, prompt_length), completions], dim=-1
    ).reshape(batch * group, prompt_length + length)
    logits = model(input_ids=sequences).logits[:, prompt_length - 1 : -1]
    logp = logits.log_softmax(-1).gather(-1, sequences[:, prompt_length:].unsqueeze(-1))
    return logp.view(batch, group, length)


@pytest.mark.parametrize("code_length", [1, 2])
def test_grpo_loss_gradient_is_the_pairwise_auc_surrogate_gradient(code_length):
    num_items, num_negatives, batch = 12, 5, 3
    if code_length == 1:
        codes = [[FIRST_CODE_TOKEN + item] for item in range(num_items)]
    else:
        codes = [
            [FIRST_CODE_TOKEN + item // 4, FIRST_CODE_TOKEN + 5 + item % 4]
            for item in range(num_items)
        ]
    trie = ItemTrie.from_codes(codes)
    model = tiny_qwen2()
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, FIRST_CODE_TOKEN, (batch, 6), generator=generator)
    target = torch.randint(0, num_items, (batch,), generator=generator)

    scorer = PolicyScorer(model, prompts, torch.ones_like(prompts), trie)
    group = GRPOAUC(num_negatives=num_negatives).group(RolloutContext(scorer, target, generator))
    advantages = grpo_advantages(group.rewards, eps=0.0)
    completions, completion_mask = group.completions(trie)

    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    # The GRPO side runs the training path (shared-prompt group forward); the oracle below
    # runs a plain forward of every prompt + code.
    logp = completion_logprobs(
        model, prompts, torch.ones_like(prompts), completions, completion_mask
    )
    loss, _ = PolicyLoss(beta=0.0)(logp, Rollout(group, advantages, completion_mask))
    grpo_gradients = torch.autograd.grad(loss, parameters)

    # -(1 / (G sqrt(m))) sum_j (s+ - s_j) with s the summed code log-prob, averaged over contexts.
    group = num_negatives + 1
    scores = per_token_logprobs(model, prompts, completions).sum(-1)
    pairwise = (scores[:, :1] - scores[:, 1:]).sum(-1)
    surrogate = -(pairwise / (group * num_negatives**0.5)).mean()
    surrogate_gradients = torch.autograd.grad(surrogate, parameters)
    # The token mean divides a fixed-length code's score by its length L.
    for grpo_gradient, surrogate_gradient in zip(grpo_gradients, surrogate_gradients, strict=True):
        torch.testing.assert_close(
            grpo_gradient * code_length, surrogate_gradient, atol=1e-6, rtol=1e-4
        )
    assert any(gradient.abs().max() > 1e-4 for gradient in surrogate_gradients)


def grpo_surrogate(rollout, scores):
    """Sequence-level GRPO objective at ratio 1: -(1/G) sum_i A_i s_i, one per context."""
    return -(rollout.advantages * scores[rollout.items]).mean(-1)


def run_sampler(objective, scores, batch, positive, seed):
    """The objective's groups for `batch` contexts whose policy scores the items `scores`."""
    target = torch.full((batch,), positive)
    generator = torch.Generator().manual_seed(seed)
    group = objective.group(RolloutContext(ScoreTable(scores.expand(batch, -1)), target, generator))
    return SimpleNamespace(items=group.items, advantages=PolicyLoss().advantages(group))


def test_uniform_negatives_give_the_full_auc_surrogate_in_expectation():
    num_items, num_negatives, positive, batch = 9, 3, 4, 20000
    scores = torch.randn(num_items, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rollout = run_sampler(GRPOAUC(num_negatives=num_negatives), scores, batch, positive, seed=2)
    negatives = rollout.items[:, 1:]
    assert (negatives != positive).all()
    assert (negatives.sort(-1).values.diff(dim=-1) > 0).all()  # distinct within a group

    # Every negative is in a group with probability m / n.
    n = num_items - 1
    inclusion = num_negatives / n
    counts = torch.bincount(negatives.flatten(), minlength=num_items).double()
    spread = (batch * inclusion * (1 - inclusion)) ** 0.5
    others = torch.arange(num_items) != positive
    assert ((counts[others] - batch * inclusion).abs() < 5 * spread).all()

    # E[surrogate] = -(A+ / G) * (1/n) sum over ALL negatives (s+ - s_k): full AUC, scaled.
    positive_advantage = rollout.advantages[0, 0].double()
    full_auc_surrogate = (scores[positive] - scores[others]).mean()
    expected = -positive_advantage / (num_negatives + 1) * full_auc_surrogate
    draws = grpo_surrogate(rollout, scores)
    standard_error = draws.std() / batch**0.5
    assert (draws.mean() - expected).abs() < 5 * standard_error


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_policy_negatives_follow_the_sequence_level_softmax(temperature):
    scores = torch.tensor([-0.5, -2.0, -1.0, -3.0, -0.2, -4.0, -1.5, -2.5])
    positive, batch = 4, 20000
    others = torch.arange(len(scores)) != positive
    probabilities = torch.zeros(len(scores))
    probabilities[others] = torch.softmax(scores[others] / temperature, -1)

    with_replacement = GRPOAUC(
        num_negatives=2, sampler="policy", temperature=temperature, replacement=True
    )
    rollout = run_sampler(with_replacement, scores, batch, positive, seed=3)
    draws = rollout.items[:, 1:].flatten()
    counts = torch.bincount(draws, minlength=len(scores)).double()
    expected = probabilities.double() * draws.numel()
    assert counts[positive] == 0
    assert ((counts - expected).abs() <= 5 * (expected * (1 - probabilities)).sqrt() + 1e-9).all()
    # With replacement the expected surrogate is the pi-weighted AUC surrogate.
    weighted = (probabilities[others] * (scores[positive] - scores[others])).sum().double()
    expected_surrogate = -rollout.advantages[0, 0].double() / 3 * weighted
    values = grpo_surrogate(rollout, scores.double())
    assert (values.mean() - expected_surrogate).abs() < 5 * values.std() / batch**0.5

    # Without replacement the first draw follows the same distribution, the rest are distinct.
    distinct = GRPOAUC(num_negatives=3, sampler="policy", temperature=temperature)
    rollout = run_sampler(distinct, scores, batch, positive, seed=4)
    first = torch.bincount(rollout.items[:, 1], minlength=len(scores)).double()
    expected = probabilities.double() * batch
    assert ((first - expected).abs() <= 5 * (expected * (1 - probabilities)).sqrt() + 1e-9).all()
    assert (rollout.items[:, 1:].sort(-1).values.diff(dim=-1) > 0).all()


@pytest.mark.parametrize("tail", [0, 3])
def test_tawin_on_a_tiny_model_takes_the_window_of_the_beam_ranking(tail):
    num_items = 20
    codes = [
        [FIRST_CODE_TOKEN + item // 5, FIRST_CODE_TOKEN + 10 + item % 5]
        for item in range(num_items)
    ]
    trie = ItemTrie.from_codes(codes)
    model = tiny_qwen2(seed=1)
    generator = torch.Generator().manual_seed(5)
    prompts = torch.randint(1, FIRST_CODE_TOKEN, (4, 5), generator=generator)
    mask = torch.ones_like(prompts)
    # Window negative-ranks [2, 6): beam width 7. Positives at beam positions 0, 3 (inside
    # the window: the negatives below it shift up), 6 (last beam) and outside the beam.
    beam_items, _ = constrained_beam_search(model, prompts, mask, trie, 7)
    exact_order = score_items(model, prompts, mask, trie).argsort(-1, descending=True)
    target = torch.stack([beam_items[0, 0], beam_items[1, 3], beam_items[2, 6], exact_order[3, 10]])

    scorer = PolicyScorer(model, prompts, mask, trie)
    rollout = TAWinWPAUC(target_k=3, window_width=4, tail_negatives=tail).group(
        RolloutContext(scorer, target, torch.Generator().manual_seed(6))
    )
    assert rollout.items.shape == (4, 1 + 4 + tail)
    for row in range(4):
        negatives = [item for item in beam_items[row].tolist() if item != target[row]]
        assert rollout.items[row, 1:5].tolist() == negatives[2:6]
        # the tail: negatives of negative-rank >= 6, i.e. neither the positive nor above
        tail_members = set(rollout.items[row, 5:].tolist())
        assert len(tail_members) == tail
        assert not tail_members & {target[row].item(), *negatives[:6]}
    assert rollout.stats["positive_rank"].tolist() == [0, 3, 6, 7]
