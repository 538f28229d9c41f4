"""Behaviour of the shipped synthetic configs, recorded: SFT steps, then a few RL steps of each
objective from that SFT checkpoint, validated under every evaluation protocol (exact, exact
with a rank cap, beam), tested and predicted. Every logged metric, the trained weights' sums
and the predictions must equal the recorded ones, so that a refactoring that should change
nothing (module, protocols, metrics, objectives, configs) is shown to change nothing.

A refactoring must make this test pass as it is, without recording again: if it fails, the
refactoring changed behaviour and is wrong. Only a change whose purpose is to change the
numbers (a fix, a new default) records them again, and says so in its commit message:
``WPAUC_RECORD_SNAPSHOT=1 .venv/bin/python -m pytest tests/test_behaviour_snapshot.py``.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from wpauc.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "behaviour.json"
RECORD = os.environ.get("WPAUC_RECORD_SNAPSHOT") == "1"
SMALL_RUN = [
    "--trainer.max_epochs=1",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=false",
    "--data.source.init_args.num_users=800",
    "--data.max_eval_samples=64",
    "--data.eval_batch_size=32",
]
PROTOCOLS = {
    "exact": [],
    "exact_capped": ["--model.evaluation.rank_cap=20"],
    "beam": ["--model.evaluation=wpauc.evaluation.Beam", "--model.evaluation.num_beams=20"],
}
RL_OBJECTIVES = {
    # configs/objective/<name>.yaml after configs/synthetic/rl.yaml, with what the synthetic
    # world's settings for that objective differ in (configs/README.md)
    "grpo_auc": ["--model.loss.beta=0.0", "--model.optimizer.init_args.lr=1e-4"],
    "beam_pauc": ["--model.loss.beta=0.0"],
    "tawin": [],
}


def weight_sums(model: torch.nn.Module) -> list[float]:
    """Sum and absolute sum of the policy's weights: any change to training moves them."""
    weights = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    return [float(weights.sum()), float(weights.abs().sum())]


def metrics(cli) -> dict[str, float]:
    return {key: float(value) for key, value in sorted(cli.trainer.callback_metrics.items())}


def run(subcommand: str, config: str, root: Path, *overrides: str):
    args = [subcommand, f"--config={REPO / 'configs' / config}"]
    args += [f"--trainer.default_root_dir={root}", *SMALL_RUN, "--model.init_from=null", *overrides]
    return run_cli(args + (["--test_after_fit=false"] if subcommand == "fit" else []))


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory) -> dict:
    torch.set_num_threads(1)  # reductions in one order, whatever the machine
    root = tmp_path_factory.mktemp("snapshot")
    observed = {}
    sft = run("fit", "synthetic/sft.yaml", root / "sft", "--trainer.limit_train_batches=8")
    observed["sft"] = {"metrics": metrics(sft), "weights": weight_sums(sft.model.policy)}
    start = root / "sft" / "checkpoints" / "last.ckpt"
    for name, settings in RL_OBJECTIVES.items():
        rl = run(
            "fit",
            "synthetic/rl.yaml",
            root / name,
            f"--model.objective={REPO / 'configs' / 'objective' / f'{name}.yaml'}",
            *settings,
            f"--model.init_from={start}",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
        )
        observed[name] = {"metrics": metrics(rl), "weights": weight_sums(rl.model.policy)}
    trained = root / "tawin" / "checkpoints" / "last.ckpt"
    for protocol, settings in PROTOCOLS.items():
        tested = run(
            "test", "synthetic/rl.yaml", root / protocol, f"--ckpt_path={trained}", *settings
        )
        observed[f"test_{protocol}"] = metrics(tested)
    run("predict", "synthetic/rl.yaml", root / "predict", f"--ckpt_path={trained}")
    lines = (root / "predict" / "predictions.jsonl").read_text().splitlines()
    observed["predictions"] = [json.loads(line) for line in lines[:8]]
    return observed


def test_shipped_configs_behave_as_recorded(behaviour):
    if RECORD:
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(behaviour, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {SNAPSHOT}")
    recorded = json.loads(SNAPSHOT.read_text())
    assert sorted(behaviour) == sorted(recorded)
    for part, expected in recorded.items():
        assert behaviour[part] == expected, part  # bit-identical: one thread, same seeds
