"""``wpauc export`` and ``wpauc.export.load_recommender``: the export is a plain Hugging Face
directory (the same logits as the checkpoint's policy, LoRA merged; the tokenizer holds the
code tokens), the loader recommends the checkpoint's top-K, and a checkpoint of another
catalog, a used output folder or a tampered export are refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.runs import SFT_ONE_EPOCH, lora_args, tiny_args
from wpauc.cli import main, run_cli
from wpauc.decoding import constrained_beam_search
from wpauc.evaluation import Beam
from wpauc.export import RECOMMENDER_FILE, load_recommender


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> tuple[object, Path, Path]:
    """(the fit CLI, its last.ckpt, the export of that checkpoint) of a tiny SFT run."""
    root = tmp_path_factory.mktemp("tiny")
    cli = run_cli(tiny_args(root, *SFT_ONE_EPOCH))
    checkpoint = root / "checkpoints" / "last.ckpt"
    output = root / "export"
    main(
        tiny_args(root, f"--ckpt_path={checkpoint}", f"--output_dir={output}", subcommand="export")
    )
    return cli, checkpoint, output


def assert_same_logits_and_top_k(cli, output: Path, atol: float) -> None:
    """The export's logits and recommendations are the fitted policy's."""
    datamodule = cli.datamodule
    policy = cli.model.policy.eval()
    exported = AutoModelForCausalLM.from_pretrained(output, local_files_only=True).eval()
    assert not any("lora" in name for name in exported.state_dict())
    samples = datamodule.data.test[:4]
    batch = datamodule.batch_for(samples)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = policy(**inputs).logits[real]
        torch.testing.assert_close(exported(**inputs).logits[real], expected, rtol=0, atol=atol)

    recommender = load_recommender(output)
    items, _ = constrained_beam_search(
        policy, batch["input_ids"], batch["attention_mask"], cli.model.trie, 10
    )
    item_ids = datamodule.catalog.item_ids
    for sample, top in zip(samples, items.tolist(), strict=True):
        history = [item_ids[item] for item in sample.history]
        assert recommender.recommend(history, k=10) == [item_ids[item] for item in top]


def test_export_round_trip_gives_the_checkpoint_logits_and_top_k(tiny_export):
    cli, checkpoint, output = tiny_export
    assert_same_logits_and_top_k(cli, output, atol=1e-5)
    # the weights are the checkpoint's (safetensors; the tied lm_head is stored once)
    stored = load_file(output / "model.safetensors")
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, value in stored.items():
        torch.testing.assert_close(value, saved[f"policy.{name}"], rtol=0, atol=0, msg=name)
    # the tokenizer and the item-code map give every item's code
    tokenizer = AutoTokenizer.from_pretrained(output, local_files_only=True)
    description = json.loads((output / RECOMMENDER_FILE).read_text())
    catalog, codes = cli.datamodule.catalog, cli.datamodule.item_codes
    assert [item["item_id"] for item in description["items"]] == list(catalog.item_ids)
    assert [item["title"] for item in description["items"]] == list(catalog.titles)
    for item, code in zip(description["items"], codes, strict=True):
        assert item["code_ids"] == code == tokenizer.convert_tokens_to_ids(item["code_tokens"])
    assert description["catalog"] == cli.model.catalog_record
    # the loader's prompts are the data module's (the same template, limits and codes)
    prompts = load_recommender(output).prompts
    for sample in cli.datamodule.data.test[:8]:
        assert prompts.encode(sample.history) == cli.datamodule.prompt_ids(sample)


def test_lora_export_is_merged_and_gives_the_same_logits_and_top_k(tmp_path, standin):  # noqa: F811
    cli = run_cli(["fit", *lora_args(tmp_path, standin), *SFT_ONE_EPOCH])
    output = tmp_path / "export"
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    main(
        [
            "export",
            *lora_args(tmp_path, standin),
            f"--ckpt_path={checkpoint}",
            f"--output_dir={output}",
        ]
    )
    assert_same_logits_and_top_k(cli, output, atol=1e-4)


def test_export_refuses_a_checkpoint_of_another_catalog(tiny_export, tmp_path):
    _, checkpoint, _ = tiny_export
    arguments = [
        f"--ckpt_path={checkpoint}",
        f"--output_dir={tmp_path / 'export'}",
        "--data.source.init_args.num_items=60",
    ]
    with pytest.raises(SystemExit) as error:
        main(tiny_args(tmp_path, *arguments, subcommand="export"))
    message = str(error.value)
    assert message.startswith("wpauc export: error: ckpt_path: ")
    assert "trained on another catalog" in message
    assert "(64 items" in message and "(60 items" in message
    assert not (tmp_path / "export").exists()


def test_export_refuses_a_used_output_folder(tiny_export, tmp_path):
    _, checkpoint, _ = tiny_export
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("keep me")
    arguments = [f"--ckpt_path={checkpoint}", f"--output_dir={tmp_path / 'export'}"]
    with pytest.raises(SystemExit, match="output_dir: .* is not an empty folder"):
        main(tiny_args(tmp_path, *arguments, subcommand="export"))


def test_export_help_names_its_options(capsys):
    with pytest.raises(SystemExit) as error:
        main(["export", "--help"])
    assert error.value.code == 0
    help_text = capsys.readouterr().out
    assert "--ckpt_path" in help_text and "--output_dir" in help_text and "--config" in help_text


def edited_copy(output: Path, directory: Path, edit) -> Path:
    """A copy of the export whose description `edit` changed."""
    copy = shutil.copytree(output, directory / "export")
    description = json.loads((copy / RECOMMENDER_FILE).read_text())
    edit(description)
    (copy / RECOMMENDER_FILE).write_text(json.dumps(description))
    return copy


def test_loader_builds_only_wpauc_templates(tiny_export, tmp_path):
    def point_at_a_command(description):
        description["template"] = {"class_path": "subprocess.run", "init_args": {"args": "true"}}

    copy = edited_copy(tiny_export[2], tmp_path, point_at_a_command)
    with pytest.raises(ValueError, match="'subprocess.run' is not a PromptTemplate"):
        load_recommender(copy)


def test_loader_refuses_codes_its_tokenizer_does_not_give(tiny_export, tmp_path):
    def swap_two_codes(description):
        items = description["items"]
        items[0]["code_ids"], items[1]["code_ids"] = items[1]["code_ids"], items[0]["code_ids"]

    copy = edited_copy(tiny_export[2], tmp_path, swap_two_codes)
    with pytest.raises(ValueError, match="does not give the exported item codes"):
        load_recommender(copy)


def test_recommend_names_an_unknown_item_and_a_bad_k(tiny_export):
    recommender = load_recommender(tiny_export[2])
    with pytest.raises(ValueError, match="item id 9999 is not in the catalog"):
        recommender.recommend([9999], k=5)
    with pytest.raises(ValueError, match="num_beams=65 must be between 1 and the number of items"):
        recommender.recommend([0], k=65)


def test_recommend_gives_the_recommendations_of_its_protocol(tiny_export):
    """Under the beam protocol the top k are the first k of its beams (20 here), as `predict`
    under ``model.evaluation: Beam`` writes them; it cannot recommend past its beams."""
    cli, _, output = tiny_export
    recommender = dataclasses.replace(load_recommender(output), evaluation=Beam(num_beams=20))
    datamodule = cli.datamodule
    sample = datamodule.data.test[0]
    batch = datamodule.batch_for([sample])
    beams, _ = constrained_beam_search(
        cli.model.policy.eval(), batch["input_ids"], batch["attention_mask"], cli.model.trie, 20
    )
    item_ids = datamodule.catalog.item_ids
    history = [item_ids[item] for item in sample.history]
    assert recommender.recommend(history, k=5) == [item_ids[i] for i in beams[0, :5].tolist()]
    with pytest.raises(ValueError, match="Beam: num_beams = 20: cannot recommend k=21 items"):
        recommender.recommend(history, k=21)
