"""Policy builders, the frozen reference and the vocabulary check, on tiny random models."""

import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from tests.conftest import save_random_checkpoint, word_tokenizer
from wpauc.decoding import ItemTrie, score_items
from wpauc.models import (
    LoraSettings,
    PolicyBuilder,
    PretrainedPolicy,
    ReferenceModel,
    TinyQwen2Policy,
    check_vocabulary,
)

NUM_WORDS = 12
HIDDEN = 32
NUM_LAYERS = 2
CHECKPOINT_ARCHITECTURE = dict(
    num_layers=NUM_LAYERS, hidden_size=HIDDEN, num_heads=4, num_kv_heads=2, intermediate_size=64
)
CODE_TOKENS = [f"<{level}_{value}>" for level in "abc" for value in range(4)]


def code_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with the SID code tokens added, as the data layer adds them."""
    tokenizer = word_tokenizer(NUM_WORDS)
    tokenizer.add_tokens(CODE_TOKENS)
    return tokenizer


def sid_codes(tokenizer: PreTrainedTokenizerFast) -> list[list[int]]:
    """Five 3-token SID codes that use every code token at least once."""
    values = [(0, 0, 0), (1, 2, 3), (2, 1, 0), (3, 3, 1), (0, 3, 2)]
    return [
        tokenizer.convert_tokens_to_ids([f"<a_{a}>", f"<b_{b}>", f"<c_{c}>"]) for a, b, c in values
    ]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return code_tokenizer()


@pytest.fixture(scope="module")
def item_codes(tokenizer) -> list[list[int]]:
    return sid_codes(tokenizer)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def checkpoint(request, tmp_path_factory) -> Path:
    """A random 'pretrained' checkpoint whose tokenizer lacks the code tokens."""
    architecture = TinyQwen2Policy(
        **CHECKPOINT_ARCHITECTURE, tie_word_embeddings=request.param, seed=0
    )
    return save_random_checkpoint(tmp_path_factory.mktemp("checkpoint"), NUM_WORDS, architecture)


def prompt_ids(item_codes: list[list[int]]) -> torch.Tensor:
    """A batch of two prompts: a bos, two words and two item codes each."""
    return torch.tensor(
        [[2, 5, 6, *item_codes[0], *item_codes[1]], [2, 7, 8, *item_codes[2], *item_codes[3]]]
    )


def perturb_adapter(policy: torch.nn.Module) -> None:
    """Give the LoRA B matrices (zero at init) and the trainable token rows non-trivial values."""
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(0.5 * torch.randn_like(parameter))


# ---- tiny builder -----------------------------------------------------------------------


def test_tiny_policy_vocabulary_shapes_and_special_ids(tokenizer, item_codes):
    builder = TinyQwen2Policy(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, seed=0)
    model = builder.build(tokenizer, item_codes)
    assert model.config.vocab_size == len(tokenizer) == 5 + NUM_WORDS + len(CODE_TOKENS)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 64)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert len(model.model.layers) == 2
    assert model.config.num_key_value_heads == 2
    assert model.config._attn_implementation == "sdpa"
    assert model.dtype == torch.float32
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    logits = model(input_ids=prompt_ids(item_codes)).logits
    assert logits.shape == (2, 9, len(tokenizer))


def test_tiny_policy_seed_reproducible_and_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(123)
    first = TinyQwen2Policy(seed=7).build(tokenizer)
    assert torch.equal(torch.rand(1), expected_next_draw)
    second = TinyQwen2Policy(seed=7).build(tokenizer)
    other = TinyQwen2Policy(seed=8).build(tokenizer)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.model.embed_tokens.weight, other.model.embed_tokens.weight)


@pytest.mark.parametrize(
    "fields, key",
    [
        (dict(hidden_size=60, num_heads=8), "num_heads"),
        (dict(num_heads=4, num_kv_heads=3), "num_kv_heads"),
        (dict(num_layers=0), "num_layers"),
        (dict(attention_dropout=1.0), "attention_dropout"),
        (dict(embedding_dropout=-0.1), "embedding_dropout"),
    ],
)
def test_tiny_policy_rejects_bad_shapes(fields, key):
    with pytest.raises(ValueError, match=key):
        TinyQwen2Policy(**fields)


@pytest.mark.parametrize("dropout", ["attention_dropout", "embedding_dropout"])
def test_tiny_policy_dropout_acts_in_training_only(tokenizer, dropout):
    settings = {dropout: 0.5, "seed": 0, "attn_implementation": "eager"}
    model = TinyQwen2Policy(**settings).build(tokenizer)
    plain = TinyQwen2Policy(seed=0, attn_implementation="eager").build(tokenizer)
    ids = torch.arange(4, 12)[None]
    model.eval()
    assert torch.equal(model(ids).logits, plain.eval()(ids).logits)
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)


# ---- pretrained builder -----------------------------------------------------------------


def test_pretrained_resizes_embeddings_and_keeps_old_rows(checkpoint, tokenizer, item_codes):
    original = AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True)
    original_rows = original.get_input_embeddings().weight.shape[0]
    assert original_rows == 5 + NUM_WORDS < len(tokenizer)

    policy = PretrainedPolicy(str(checkpoint)).build(tokenizer, item_codes)

    assert policy.get_input_embeddings().weight.shape == (len(tokenizer), HIDDEN)
    assert policy.get_output_embeddings().weight.shape == (len(tokenizer), HIDDEN)
    assert all(parameter.requires_grad for parameter in policy.parameters())
    # On words the checkpoint knew, the resized model predicts exactly what the checkpoint did.
    words = torch.tensor([[2, 5, 6, 9, 10]])
    torch.testing.assert_close(
        policy(input_ids=words).logits[..., :original_rows], original(input_ids=words).logits
    )
    assert policy.config.pad_token_id == tokenizer.pad_token_id


def test_pretrained_loads_in_requested_dtype(checkpoint, tokenizer):
    policy = PretrainedPolicy(str(checkpoint), dtype="bfloat16", attn_implementation="eager")
    model = policy.build(tokenizer)
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"


def test_pretrained_missing_path_names_the_key(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"^path: .*no config\.json"):
        PretrainedPolicy(str(tmp_path / "nowhere")).build(tokenizer)


def test_lora_trains_only_adapter_and_code_token_rows(checkpoint, tokenizer, item_codes):
    settings = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    policy = PretrainedPolicy(str(checkpoint), lora=settings).build(tokenizer, item_codes)
    tied = policy.config.tie_word_embeddings

    trainable = {name: p for name, p in policy.named_parameters() if p.requires_grad}
    lora_names = [name for name in trainable if ".lora_" in name]
    token_names = [name for name in trainable if "trainable_tokens_delta" in name]
    assert sorted(lora_names + token_names) == sorted(trainable)
    assert {name.split(".self_attn.")[1].split(".")[0] for name in lora_names} == {
        "q_proj",
        "v_proj",
    }
    assert len(lora_names) == NUM_LAYERS * 2 * 2  # layers x modules x (A, B)
    assert len(token_names) == (1 if tied else 2)  # tied lm_head rows follow the embedding's

    code_token_ids = sorted({token for code in item_codes for token in code})
    assert code_token_ids == tokenizer.convert_tokens_to_ids(CODE_TOKENS)
    for name in token_names:
        assert trainable[name].shape == (len(code_token_ids), HIDDEN)
    config = policy.model.config
    q_out = config.num_attention_heads * HIDDEN // config.num_attention_heads
    v_out = config.num_key_value_heads * HIDDEN // config.num_attention_heads
    expected_lora = NUM_LAYERS * 4 * ((HIDDEN + q_out) + (HIDDEN + v_out))
    assert sum(trainable[name].numel() for name in lora_names) == expected_lora


def test_lora_policy_with_trainable_code_rows_scores_items(checkpoint, tokenizer, item_codes):
    # peft wraps the embedding (no `num_embeddings` attribute): decoding must still size it.
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
        tokenizer, item_codes
    )
    perturb_adapter(policy)
    ids = prompt_ids(item_codes)
    scores = score_items(policy, ids, torch.ones_like(ids), ItemTrie.from_codes(item_codes))
    # oracle: one full forward of every prompt + code, summing the code tokens' log-probs
    with torch.no_grad():
        for item, code in enumerate(item_codes):
            sequences = torch.cat([ids, torch.tensor(code).expand(len(ids), -1)], dim=1)
            log_probs = policy(input_ids=sequences).logits.float().log_softmax(-1)
            prompt_length = ids.shape[1]
            next_tokens = sequences[:, prompt_length:, None]
            picked = log_probs[:, prompt_length - 1 : -1].gather(-1, next_tokens)
            torch.testing.assert_close(scores[:, item], picked.sum((1, 2)), atol=1e-4, rtol=1e-4)


def test_lora_with_embeddings_needs_item_codes(checkpoint, tokenizer):
    with pytest.raises(ValueError, match="lora.train_embeddings"):
        PretrainedPolicy(str(checkpoint), lora=LoraSettings()).build(tokenizer)
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(train_embeddings=False)).build(
        tokenizer
    )
    assert not any("trainable_tokens" in name for name, _ in policy.named_parameters())


def test_lora_with_gradient_checkpointing_backpropagates(checkpoint, tokenizer, item_codes):
    builder = PretrainedPolicy(
        str(checkpoint), lora=LoraSettings(dropout=0.0), gradient_checkpointing=True
    )
    policy = builder.build(tokenizer, item_codes)
    policy.train()
    policy(input_ids=prompt_ids(item_codes)).logits.sum().backward()
    # lora_B gets the gradient at init (lora_A's is zero while B is zero)
    grads = [p.grad for name, p in policy.named_parameters() if "lora_B" in name]
    assert grads and all(grad is not None and grad.abs().sum() > 0 for grad in grads)


@pytest.mark.parametrize(
    "make_settings, key",
    [
        (lambda: PretrainedPolicy("unused", quantization="4bit"), "needs lora"),
        (lambda: PretrainedPolicy("unused", quantization="2bit"), "quantization"),
        (lambda: PretrainedPolicy("unused", dtype="float8"), "dtype"),
        (lambda: LoraSettings(r=0), "lora.r"),
        (lambda: LoraSettings(dropout=1.0), "lora.dropout"),
        (lambda: LoraSettings(target_modules=[]), "lora.target_modules"),
    ],
)
def test_pretrained_rejects_bad_settings(make_settings, key):
    with pytest.raises(ValueError, match=key):
        make_settings()


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available(),
    reason="bitsandbytes and CUDA are both present: quantized loading can run here",
)
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_without_bitsandbytes_or_cuda_is_a_clear_error(
    checkpoint, tokenizer, item_codes, quantization
):
    builder = PretrainedPolicy(str(checkpoint), lora=LoraSettings(), quantization=quantization)
    with pytest.raises((ImportError, RuntimeError), match=f"quantization='{quantization}'"):
        builder.build(tokenizer, item_codes)


# ---- reference model --------------------------------------------------------------------


def test_lora_reference_of_a_new_adapter_is_the_base_model_without_copy(
    checkpoint, tokenizer, item_codes
):
    # Oracle: the same checkpoint loaded without LoRA, its new rows drawn from the same seed.
    torch.manual_seed(0)
    base = PretrainedPolicy(str(checkpoint)).build(tokenizer, item_codes).eval()
    torch.manual_seed(0)
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
        tokenizer, item_codes
    )
    storages_before = {p.data_ptr() for p in policy.parameters()}
    reference = ReferenceModel(policy)
    perturb_adapter(policy)

    assert reference.shares_policy_weights
    assert {p.data_ptr() for p in policy.parameters()} == storages_before
    ids = prompt_ids(item_codes)
    policy.train()
    with reference.activated() as reference_model:
        assert reference_model is policy
        assert not torch.is_grad_enabled() and not policy.training
        reference_logits = reference_model(input_ids=ids).logits
    assert policy.training and torch.is_grad_enabled()
    torch.testing.assert_close(reference_logits, base(input_ids=ids).logits)
    torch.testing.assert_close(reference(input_ids=ids).logits, reference_logits)
    policy_logits = policy(input_ids=ids).logits
    assert (policy_logits - reference_logits).abs().max() > 1e-2


def test_lora_reference_can_keep_the_adapter_as_a_frozen_copy(checkpoint, tokenizer, item_codes):
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
        tokenizer, item_codes
    )
    perturb_adapter(policy)  # stands for an SFT-trained adapter the reference should keep
    ids = prompt_ids(item_codes)
    policy.eval()
    policy_logits = policy(input_ids=ids).logits.detach()
    reference = ReferenceModel(policy, frozen_copy=True)
    assert not reference.shares_policy_weights
    _train_step(policy, ids)
    torch.testing.assert_close(reference(input_ids=ids).logits, policy_logits)


def test_lora_reference_keeps_the_trained_adapter_and_code_rows_without_copy(
    checkpoint, tokenizer, item_codes
):
    # The reference of RL after a LoRA SFT is the SFT policy, trained code-token rows
    # included, not the base model with the adapter disabled; no second base model is made.
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
        tokenizer, item_codes
    )
    perturb_adapter(policy)  # stands for the SFT-trained adapter and code-token rows
    ids = prompt_ids(item_codes)
    policy.eval()
    sft_logits = policy(input_ids=ids).logits.detach()
    with policy.disable_adapter():
        base_logits = policy(input_ids=ids).logits.detach()
    assert (sft_logits - base_logits).abs().max() > 1e-2
    storages = {p.data_ptr() for p in policy.parameters()}

    reference = ReferenceModel(policy)
    assert reference.shares_policy_weights
    torch.testing.assert_close(reference(input_ids=ids).logits, sft_logits)
    _train_step(policy, ids)
    policy.eval()
    trained_logits = policy(input_ids=ids).logits.detach()
    assert (trained_logits - sft_logits).abs().max() > 1e-3
    with reference.activated() as reference_model:
        assert reference_model is policy
        assert {p.data_ptr() for p in reference_model.parameters()} == storages
        torch.testing.assert_close(reference_model(input_ids=ids).logits, sft_logits)
    # the policy's own weights are back after the block
    torch.testing.assert_close(policy(input_ids=ids).logits, trained_logits)
    snapshot_bytes = sum(t.numel() * t.element_size() for t in reference.state_dict().values())
    trainable_bytes = sum(
        p.numel() * p.element_size() for p in policy.parameters() if p.requires_grad
    )
    assert snapshot_bytes == trainable_bytes

    reference.refresh()
    torch.testing.assert_close(reference(input_ids=ids).logits, trained_logits)


def test_lora_reference_restores_the_policy_when_the_block_fails(checkpoint, tokenizer, item_codes):
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
        tokenizer, item_codes
    )
    reference = ReferenceModel(policy)
    perturb_adapter(policy)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    policy.train()
    with pytest.raises(RuntimeError, match="inside the block"):
        with reference.activated():
            raise RuntimeError("inside the block")
    assert policy.training
    for name, parameter in policy.named_parameters():
        assert torch.equal(parameter, before[name]), name


def test_lora_reference_state_round_trip_and_mismatch(checkpoint, tokenizer, item_codes):
    def build():
        torch.manual_seed(0)  # the same resized rows and adapter init in both policies
        return PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
            tokenizer, item_codes
        )

    trained = build()
    perturb_adapter(trained)
    saved = ReferenceModel(trained).state_dict()
    rebuilt = build()
    reference = ReferenceModel(rebuilt)
    reference.load_state_dict(saved)
    ids = prompt_ids(item_codes)
    trained.eval()
    torch.testing.assert_close(reference(input_ids=ids).logits, trained(input_ids=ids).logits)
    with pytest.raises(ValueError, match="holds no reference weights"):
        reference.load_state_dict(None)
    with pytest.raises(ValueError, match="not this policy's trainable weights"):
        reference.load_state_dict({"base_model.other": torch.zeros(1)})


def test_lora_reference_snapshot_follows_the_policy_dtype(checkpoint, tokenizer, item_codes):
    policy = PretrainedPolicy(str(checkpoint), lora=LoraSettings(dropout=0.0)).build(
        tokenizer, item_codes
    )
    perturb_adapter(policy)
    reference = ReferenceModel(policy)
    ids = prompt_ids(item_codes)
    expected = reference(input_ids=ids).logits
    policy.to(torch.float64)
    torch.testing.assert_close(
        reference(input_ids=ids).logits, expected.double(), rtol=1e-4, atol=1e-4
    )
    assert all(t.dtype == torch.float64 for t in reference.state_dict().values())


def test_reference_without_adapter_cannot_share_weights(tokenizer):
    with pytest.raises(ValueError, match="frozen_copy=False needs a peft"):
        ReferenceModel(TinyQwen2Policy(seed=0).build(tokenizer), frozen_copy=False)


def _train_step(policy: torch.nn.Module, ids: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    policy.train()
    policy(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("use_lora", [False, True], ids=["frozen_copy", "lora"])
def test_reference_unchanged_by_policy_updates(checkpoint, tokenizer, item_codes, use_lora):
    lora = LoraSettings(dropout=0.0) if use_lora else None
    policy = PretrainedPolicy(str(checkpoint), lora=lora).build(tokenizer, item_codes)
    reference = ReferenceModel(policy)
    ids = prompt_ids(item_codes)
    reference_before = reference(input_ids=ids).logits
    policy_before = policy(input_ids=ids).logits.detach()

    _train_step(policy, ids)

    assert (policy(input_ids=ids).logits - policy_before).abs().max() > 1e-3
    torch.testing.assert_close(reference(input_ids=ids).logits, reference_before, rtol=0, atol=0)


def test_frozen_copy_is_separate_frozen_and_follows_dtype(tokenizer, item_codes):
    policy = TinyQwen2Policy(seed=0).build(tokenizer, item_codes)
    reference = ReferenceModel(policy)
    assert not reference.shares_policy_weights
    with reference.activated() as reference_model:
        assert reference_model is not policy and not reference_model.training
        copies = list(reference_model.parameters())
    assert not any(p.requires_grad for p in copies)
    assert not {p.data_ptr() for p in copies} & {p.data_ptr() for p in policy.parameters()}
    # Tied weights stay tied in the copy (no extra embedding matrix).
    assert reference_model.lm_head.weight is reference_model.model.embed_tokens.weight

    policy.to(torch.float64)
    with reference.activated() as reference_model:
        assert reference_model.dtype == torch.float64
        ids = prompt_ids(item_codes)
        torch.testing.assert_close(
            reference_model(input_ids=ids).logits, policy(input_ids=ids).logits
        )


def test_refresh_takes_the_policy_current_weights(tokenizer, item_codes):
    policy = TinyQwen2Policy(seed=0).build(tokenizer, item_codes)
    reference = ReferenceModel(policy)
    ids = prompt_ids(item_codes)
    _train_step(policy, ids)
    policy.eval()
    assert (reference(input_ids=ids).logits - policy(input_ids=ids).logits).abs().max() > 1e-3
    reference.refresh()
    torch.testing.assert_close(reference(input_ids=ids).logits, policy(input_ids=ids).logits)


@pytest.mark.parametrize("use_lora", [False, True], ids=["frozen_copy", "lora"])
def test_reference_supports_kv_cache_calls(checkpoint, tokenizer, item_codes, use_lora):
    lora = LoraSettings(dropout=0.0) if use_lora else None
    policy = PretrainedPolicy(str(checkpoint), lora=lora).build(tokenizer, item_codes)
    if use_lora:
        perturb_adapter(policy)
    reference = ReferenceModel(policy)
    ids = prompt_ids(item_codes)
    attention_mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with reference.activated() as model:
        full = model(input_ids=ids, attention_mask=attention_mask, position_ids=positions).logits
        prefix = model(
            input_ids=ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
        )
        last = model(
            input_ids=ids[:, -1:],
            attention_mask=attention_mask,
            position_ids=positions[:, -1:],
            past_key_values=prefix.past_key_values,
            use_cache=True,
        ).logits
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)


class _PolicyModule(L.LightningModule):
    """The way a LightningModule holds the two: the policy as a submodule, the reference as a
    plain attribute."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.reference = ReferenceModel(policy)


def test_reference_stays_out_of_lightning_parameters_and_checkpoints(tokenizer, item_codes):
    policy = TinyQwen2Policy(seed=0).build(tokenizer, item_codes)
    module = _PolicyModule(policy)
    assert sum(p.numel() for p in module.parameters()) == sum(
        p.numel() for p in policy.parameters()
    )
    assert set(module.state_dict()) == {f"policy.{name}" for name in policy.state_dict()}


# ---- vocabulary check -------------------------------------------------------------------


def test_check_vocabulary_accepts_covering_model(tokenizer, item_codes):
    model = TinyQwen2Policy(seed=0).build(tokenizer)
    check_vocabulary(model, tokenizer, item_codes)


def test_check_vocabulary_model_lacking_code_tokens(tokenizer, item_codes):
    model = TinyQwen2Policy(seed=0).build(word_tokenizer(NUM_WORDS))
    with pytest.raises(
        ValueError, match=r"model's vocabulary lacks the code tokens: item_codes\[0\]"
    ):
        check_vocabulary(model, tokenizer, item_codes)
    with pytest.raises(ValueError, match="tokenizer lacks the code tokens"):  # build checks too
        TinyQwen2Policy(seed=0).build(word_tokenizer(NUM_WORDS), item_codes)


def test_check_vocabulary_tokenizer_lacking_code_tokens(tokenizer, item_codes):
    model = TinyQwen2Policy(seed=0).build(tokenizer)
    beyond = [*item_codes, [len(tokenizer)]]
    with pytest.raises(
        ValueError, match=rf"tokenizer lacks the code tokens: item_codes\[5\].*{len(tokenizer)}"
    ):
        check_vocabulary(model, tokenizer, beyond)
    unknown = [*item_codes, tokenizer.convert_tokens_to_ids(["<a_1>", "<z_9>"])]
    with pytest.raises(ValueError, match=r"item_codes\[5\].*unknown token '<unk>'"):
        check_vocabulary(model, tokenizer, unknown)
    with pytest.raises(ValueError, match="item_codes is empty"):
        check_vocabulary(model, tokenizer, [])


# ---- configuration by class_path --------------------------------------------------------


def test_builders_are_chosen_by_class_path_in_yaml():
    from jsonargparse import ArgumentParser

    def takes_policy(policy: PolicyBuilder) -> PolicyBuilder:
        """Stands for a LightningModule argument.

        Args:
            policy: the policy builder.
        """
        return policy

    parser = ArgumentParser()
    parser.add_function_arguments(takes_policy, "model")
    yaml_text = """
model:
  policy:
    class_path: wpauc.models.PretrainedPolicy
    init_args: {path: /checkpoints/qwen, lora: {r: 16, target_modules: [q_proj]}, dtype: bfloat16}
"""
    policy = parser.instantiate(parser.parse_string(yaml_text)).model.policy
    assert policy == PretrainedPolicy(
        "/checkpoints/qwen", lora=LoraSettings(r=16, target_modules=["q_proj"]), dtype="bfloat16"
    )
    yaml_text = "model: {policy: {class_path: wpauc.models.TinyQwen2Policy, init_args: {seed: 3}}}"
    policy = parser.instantiate(parser.parse_string(yaml_text)).model.policy
    assert policy == TinyQwen2Policy(seed=3) and isinstance(policy, PolicyBuilder)
