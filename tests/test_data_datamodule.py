"""RecDataModule batches (left padding, masks, codes), seeding, evaluation subsets, prompt
truncation, templates and YAML instantiation."""

from dataclasses import dataclass

import pytest
import torch
from jsonargparse import ArgumentParser

from wpauc.data import (
    CodeOnlyTemplate,
    NaturalLanguageTemplate,
    RecData,
    RecDataModule,
    RecSource,
    Sample,
    SyntheticSource,
    TitleCodec,
    collate,
)
from wpauc.data.datamodule import PromptExample

SMALL = dict(num_items=64, num_users=60, num_categories=2, subcategories_per_category=4)


@dataclass
class CountingSource(RecSource):
    """A synthetic source that counts its loads."""

    loads: int = 0

    def load(self) -> RecData:
        self.loads += 1
        return SyntheticSource(**SMALL).load()


def make_module(**kwargs) -> RecDataModule:
    module = RecDataModule(SyntheticSource(**SMALL), **kwargs)
    module.setup()
    return module


def expected_code_only_prompt(module: RecDataModule, history) -> list[int]:
    """bos + SID tokens of the history + sep, looked up token by token."""
    tokenizer, sids = module.tokenizer, module.catalog.sids
    tokens = ["<bos>"] + [token for item in history for token in sids[item]] + ["<sep>"]
    return tokenizer.convert_tokens_to_ids(tokens)


def test_batches_are_left_padded_with_codes_and_indices():
    module = make_module(batch_size=8, max_history=3)
    pad = module.tokenizer.pad_token_id
    seen = []
    for batch in module.train_dataloader():
        mask = batch["attention_mask"]
        assert mask.dtype == torch.long and batch["target_code_mask"].dtype == torch.bool
        # left padding: each mask row is 0...0 1...1, padding holds the pad id
        assert torch.all(mask[:, 1:] >= mask[:, :-1]) and torch.all(mask[:, -1] == 1)
        assert torch.all(batch["input_ids"][mask == 0] == pad)
        for row, index in enumerate(batch["sample_index"].tolist()):
            sample = module.data.train[index]
            prompt = batch["input_ids"][row][mask[row] == 1].tolist()
            assert prompt == expected_code_only_prompt(module, sample.history[-3:])
            assert batch["target"][row] == sample.target
            code = batch["target_code"][row][batch["target_code_mask"][row]].tolist()
            assert code == module.item_codes[sample.target]
            assert torch.all(batch["target_code"][row][~batch["target_code_mask"][row]] == pad)
            seen.append(index)
    assert sorted(seen) == list(range(len(module.data.train)))  # one epoch = every sample once


def test_collate_pads_variable_length_codes_on_the_right():
    codes = [[5, 6], [7, 8, 9, 10]]
    batch = collate([PromptExample([3, 4, 5], 1, 7), PromptExample([9], 0, 2)], codes, 0)
    assert batch["input_ids"].tolist() == [[3, 4, 5], [0, 0, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["target_code"].tolist() == [[7, 8, 9, 10], [5, 6, 0, 0]]
    assert batch["target_code_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert batch["target"].tolist() == [1, 0] and batch["sample_index"].tolist() == [7, 2]
    with pytest.raises(ValueError, match="no examples"):
        collate([], codes, 0)


def train_order(module: RecDataModule, epochs: int = 2) -> list[list[int]]:
    loader = module.train_dataloader()
    orders = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # as Lightning does at every epoch start
        orders.append(torch.cat([b["sample_index"] for b in loader]).tolist())
    return orders


def test_training_order_is_seeded():
    first = train_order(make_module(batch_size=16, seed=3))
    assert first == train_order(make_module(batch_size=16, seed=3))
    assert first[0] != first[1]  # a new permutation each epoch
    assert first != train_order(make_module(batch_size=16, seed=4))


def test_evaluation_subset_is_seeded_sorted_and_shared_by_test_and_predict():
    module = make_module(max_eval_samples=17, eval_batch_size=5)
    valid = torch.cat([b["sample_index"] for b in module.val_dataloader()]).tolist()
    test = torch.cat([b["sample_index"] for b in module.test_dataloader()]).tolist()
    predict = torch.cat([b["sample_index"] for b in module.predict_dataloader()]).tolist()
    assert len(valid) == len(test) == 17 and valid == sorted(valid) and test == predict
    assert (
        valid
        == torch.cat(
            [b["sample_index"] for b in make_module(max_eval_samples=17).val_dataloader()]
        ).tolist()
    )
    assert (
        valid
        != torch.cat(
            [b["sample_index"] for b in make_module(max_eval_samples=17, seed=1).val_dataloader()]
        ).tolist()
    )
    # sample_index refers to the full split
    batch = next(iter(module.val_dataloader()))
    assert batch["target"].tolist() == [module.data.valid[i].target for i in valid[:5]]
    full = make_module()
    assert len(full.dataset("valid")) == len(full.data.valid)


@pytest.mark.parametrize("refit_on_valid", [False, True])
def test_refit_on_valid_appends_the_valid_samples_to_training(refit_on_valid):
    module = make_module(refit_on_valid=refit_on_valid, max_eval_samples=17)
    train, valid = module.data.train, module.data.valid
    expected = train + valid if refit_on_valid else train
    assert len(module.dataset("train")) == len(expected)
    assert [e.target for e in module.dataset("train").examples] == [s.target for s in expected]
    assert len(module.dataset("valid")) == 17  # validation still runs on valid


def test_setup_is_idempotent_and_required():
    source = CountingSource()
    module = RecDataModule(source)
    with pytest.raises(RuntimeError, match="call setup"):
        _ = module.tokenizer
    module.setup("fit")
    tokenizer = module.tokenizer
    module.setup("validate")
    assert source.loads == 1 and module.tokenizer is tokenizer


def test_long_prompts_lose_their_oldest_history_items():
    sample = Sample("u", history=(1, 2, 3, 4, 5), target=6)
    module = make_module(max_prompt_tokens=2 + 3 * 2)  # bos + two 3-token codes + sep
    batch = module.batch_for([sample])
    assert batch["input_ids"][0].tolist() == expected_code_only_prompt(module, (4, 5))
    module.max_prompt_tokens = 4  # not even bos + the last item's code + sep fits
    with pytest.raises(ValueError, match=r"given sample 0 \(user 'u'\): the prompt has 5 tokens"):
        module.batch_for([sample])
    with pytest.raises(ValueError, match=r"train sample 0 \(user 'u0'\)"):
        make_module(max_prompt_tokens=4)


def test_batch_for_matches_the_dataloader():
    module = make_module(eval_batch_size=4)
    batch = next(iter(module.test_dataloader()))
    again = module.batch_for(module.data.test[:4], sample_indices=[0, 1, 2, 3])
    for key in batch:
        assert torch.equal(batch[key], again[key]), key


@pytest.mark.parametrize("include_codes", [True, False])
def test_natural_language_template_matches_tokenizing_the_whole_text(include_codes):
    template = NaturalLanguageTemplate(instruction="cat0 sub1 item2", include_codes=include_codes)
    codec = TitleCodec() if not include_codes else None
    module = make_module(template=template, **({"codec": codec} if codec else {}))
    catalog, tokenizer = module.catalog, module.tokenizer
    history = (5, 9, 3)
    lines = "".join(
        f'\n{"".join(catalog.sids[i]) + " " if include_codes else ""}"{catalog.titles[i]}"'
        for i in history
    )
    text = f"cat0 sub1 item2\nHistory:{lines}\nNext item:"
    expected = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    assert module.prompt_ids(Sample("u", history, 0)) == expected
    assert tokenizer.convert_tokens_to_ids("sub1") in expected[:4]


def test_templates_need_their_tokens():
    with pytest.raises(ValueError, match="include_titles or include_codes"):
        NaturalLanguageTemplate(include_titles=False, include_codes=False)
    module = make_module()
    module.tokenizer.sep_token = None
    with pytest.raises(ValueError, match="needs a tokenizer with a sep token"):
        CodeOnlyTemplate().encode([1], module.catalog, module.item_codes, module.tokenizer)


@pytest.mark.parametrize(
    "name, value",
    [
        ("batch_size", 0),
        ("max_history", 0),
        ("max_prompt_tokens", 0),
        ("max_eval_samples", 0),
        ("num_workers", -1),
    ],
)
def test_invalid_arguments_are_named(name, value):
    with pytest.raises(ValueError, match=f"RecDataModule: {name} must be"):
        RecDataModule(SyntheticSource(**SMALL), **{name: value})


def test_yaml_style_configuration_instantiates():
    parser = ArgumentParser()
    parser.add_class_arguments(RecDataModule, "data")
    config = parser.parse_object(
        {
            "data": {
                "source": {
                    "class_path": "wpauc.data.SyntheticSource",
                    "init_args": {"num_users": 10},
                },
                "codec": {"class_path": "wpauc.data.TitleCodec"},
                "template": {
                    "class_path": "wpauc.data.NaturalLanguageTemplate",
                    "init_args": {"include_codes": False},
                },
                "batch_size": 4,
            }
        }
    )
    module = parser.instantiate(config).data
    assert isinstance(module.codec, TitleCodec) and module.template.include_codes is False
    assert module.source.num_users == 10
    default = parser.instantiate(
        parser.parse_object({"data": {"source": {"class_path": "wpauc.data.SyntheticSource"}}})
    ).data
    assert type(default.codec).__name__ == "SIDCodec" and isinstance(
        default.template, CodeOnlyTemplate
    )


@pytest.mark.parametrize("source", ["MiniOneRecSource", "D3Source"])
def test_file_sources_take_strict_from_yaml(source):
    """The option the repeated-rows warning names: data.source.init_args.strict."""
    parser = ArgumentParser()
    parser.add_class_arguments(RecDataModule, "data")
    init_args = {"data_dir": "data", "category": "Toys", "strict": True}
    config = parser.parse_object(
        {"data": {"source": {"class_path": f"wpauc.data.{source}", "init_args": init_args}}}
    )
    assert parser.instantiate(config).data.source.strict is True
