"""Lightning DDP with 2 CPU processes (gloo), through the shipped ``configs/strategy/ddp.yaml``:
each process trains and rolls out on its own half of every global batch and evaluates its own
shard of the contexts, none twice, also when a split does not divide by the processes; the
validation metrics, diagnostics and test metrics equal one process's. Full fine-tuning of the
tiny Qwen2 here, LoRA with its snapshot reference, several updates per rollout, rank-capped
evaluation and prediction in the slow test."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import save_random_checkpoint
from tests.helpers.ddp import fit, wpauc
from tests.helpers.runs import REPO, TINY_WORLD, tiny_args
from wpauc.models import TinyQwen2Policy

DDP = [
    f"--config={REPO / 'configs' / 'strategy' / 'ddp.yaml'}",
    "--trainer.accelerator=cpu",
    "--trainer.devices=2",
]
#: 33 evaluation contexts in batches of 16: shards of 17 and 16, two batches and one
UNEVEN_SPLITS = ["--data.max_eval_samples=33", "--model.diagnostic_samples=5"]


def recorded(root: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (root / f"rank{rank}.jsonl").read_text().splitlines()]


def check_shards(single_root: Path, ddp_root: Path) -> None:
    """Every evaluation context on exactly one process, and each global training batch split
    between the processes, the union being one process's batch; rollouts on the own batch."""
    single = recorded(single_root, 0)
    ranks = [recorded(ddp_root, rank) for rank in (0, 1)]

    def evaluated(records, stage) -> dict[int, list[int]]:
        contexts = defaultdict(list)
        for record in records:
            if record["stage"] == stage:
                contexts[record["epoch"]] += record["samples"]
        return contexts

    for stage in ("valid", "test"):
        expected = evaluated(single, stage)
        assert expected and all(len(set(c)) == len(c) == 33 for c in expected.values()), stage
        shards = [evaluated(records, stage) for records in ranks]
        for epoch, contexts in expected.items():
            first, second = shards[0][epoch], shards[1][epoch]
            assert (len(first), len(second)) == (17, 16), (stage, epoch)
            assert sorted(first + second) == sorted(contexts), (stage, epoch)

    def trained(records) -> dict[tuple[int, int], dict]:
        return {(r["epoch"], r["batch"]): r for r in records if r["stage"] == "train"}

    expected = trained(single)
    shares = [trained(records) for records in ranks]
    assert len(expected) == 6 and all(len(share) == 6 for share in shares)
    for step, batch in expected.items():
        halves = [share[step]["samples"] for share in shares]
        assert [len(half) for half in halves] == [4, 4], step
        assert sorted(halves[0] + halves[1]) == sorted(batch["samples"]), step
        for share in shares:
            record = share[step]
            if "targets" not in record:  # an SFT step
                continue
            # one group per row of this process's batch, holding that row's positive or none
            for target, positives in zip(record["targets"], record["group_positives"], strict=True):
                assert positives in ([], [target]), step
    assert sum("targets" in record for record in shares[0].values()) == 3  # the RL steps


def check_same_metrics(single: dict, ddp: dict) -> None:
    assert single.keys() == ddp.keys()
    for tag, values in single.items():
        assert ddp[tag] == pytest.approx(values, abs=1e-5), tag


def test_two_process_ddp_matches_one_process(tmp_path):
    assert "--data.batch_size=8" in TINY_WORLD
    single = fit(tmp_path / "single", *UNEVEN_SPLITS)
    ddp = fit(tmp_path / "ddp", *UNEVEN_SPLITS, *DDP, "--data.batch_size=4")
    expected = {"test/auc", "val/wpauc@[0,0.1]", "val/entropy", "val/kl_to_oracle"}
    assert expected | {"train/grad_norm"} <= single.keys()
    check_same_metrics(single, ddp)
    check_shards(tmp_path / "single", tmp_path / "ddp")


@pytest.mark.slow
def test_lora_under_ddp_matches_one_process_and_predicts_each_context_once(tmp_path):
    architecture = TinyQwen2Policy(
        num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, seed=0
    )
    standin = save_random_checkpoint(tmp_path / "standin", 12, architecture)
    lora = [
        "--model.policy=wpauc.models.PretrainedPolicy",
        f"--model.policy.init_args.path={standin}",
        '--model.policy.init_args.lora={"r": 4, "dropout": 0.0}',
        f"--data.tokenizer_path={standin}",
        "--model.loss.beta=0.04",  # the LoRA reference: a snapshot swapped into the policy
        "--model.loss.num_iterations=2",
        "--model.evaluation.rank_cap=10",
        "--model.metrics=[hr@1, hr@5, hr@10, ndcg@1, ndcg@5, ndcg@10]",
        *UNEVEN_SPLITS,
    ]
    single = fit(tmp_path / "single", *lora)
    ddp = fit(tmp_path / "ddp", *lora, *DDP, "--data.batch_size=4")
    assert "test/ndcg@10" in single and "test/auc" not in single
    check_same_metrics(single, ddp)
    check_shards(tmp_path / "single", tmp_path / "ddp")

    checkpoint = tmp_path / "ddp" / "checkpoints" / "last.ckpt"
    args = tiny_args(tmp_path / "ddp", *lora, *DDP, subcommand="predict")
    wpauc(*args, f"--ckpt_path={checkpoint}")
    predicted = [
        json.loads(line)["sample_index"]
        for rank in (0, 1)
        for line in (tmp_path / "ddp" / f"predictions.rank{rank}.jsonl").read_text().splitlines()
    ]
    assert sorted(predicted) == list(range(48))  # every test context (one per user), once
