"""The experiment drivers build the `wpauc` command lines recorded in
tests/snapshots/experiment_commands.json: each driver's `main` runs with `wpauc` recorded
instead of run (data, baselines and curves are stand-ins), so that moving code between the
drivers and their shared module cannot change a run. Re-record after a deliberate change:
`python -m tests.test_driver_commands`."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch

from wpauc.models.provenance import CATALOG_KEY

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).parent / "snapshots" / "experiment_commands.json"
METRICS = {"hr@1": 0.1, "hr@3": 0.2, "hr@10": 0.3, "hr@20": 0.4, "ndcg@10": 0.2, "auc": 0.9}
DRIVER_ARGS = {
    "run_experiments": [
        ["--datasets", "synthetic", "office", "--seeds", "0", "1", "--sweep-k", "3"],
        ["--sft-epochs", "1", "--rl-epochs", "2", "--rl-batches", "5"],
    ],
    "base_models": [
        ["--datasets", "office", "--seeds", "0", "--rows", "counting", "sasrec", "sft_v1"],
        ["--datasets", "industrial", "--seeds", "1", "--rows", "sft_shipped", "--refit"],
    ],
    "sft_recipes": [["--dataset", "office", "--recipes", "v1", "w128_wd_cosine", "--seeds", "2"]],
    "study": [
        ["--dataset", "synthetic", "--plan", "starts", "--sft-seeds", "1", "--seeds", "0"],
        [
            *("--dataset", "synthetic", "--plan", "main", "--lrs", "3e-4", "--beta", "0.04"),
            *("--only", "sft_matched", "tawin_gated", "beam_pauc_gated", "grpo_auc"),
            *("--sft-seeds", "0", "--seeds", "0", "1"),
        ],
        [
            *("--dataset", "office", "--plan", "sweep1", "--val-rank-cap", "20"),
            *("--only", "sweep1_tawin_gated_k3", "--steps", "50", "--val-every", "10"),
        ],
        ["--dataset", "synthetic", "--plan", "sweep", "--only", "sweep_tawin_k1"],
    ],
}
"""A few invocations of each driver (module under experiments/ -> argument lists)."""


def fake_run_cli(calls: list[list[str]]):
    """`wpauc.cli.run_cli` that records its arguments; a fit leaves a best checkpoint."""

    def run_cli(args, run=True):
        calls.append(list(args))
        root = next(a.split("=", 1)[1] for a in args if a.startswith("--trainer.default_root"))
        if args[0] == "fit":
            checkpoints = Path(root) / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": {}, CATALOG_KEY: None}, checkpoints / "best.ckpt")
        metrics = {f"{split}/{k}": v for k, v in METRICS.items() for split in ("val", "test")}
        return types.SimpleNamespace(trainer=types.SimpleNamespace(callback_metrics=metrics))

    return run_cli


def stand_ins() -> dict[str, object]:
    """The drivers' helpers that would read data or logs, by name."""
    curves = {f"val/{k}": [(0, v), (9, v + 0.01)] for k, v in METRICS.items()}
    return {
        "load_data": lambda dataset: types.SimpleNamespace(catalog=range(100)),
        "baseline_metrics": lambda data, windows, refit=False: {"popularity": METRICS},
        "sasrec_test_metrics": lambda data, seed, refit: METRICS,
        "read_curves": lambda run_dir: curves,
        "write_report": lambda *args: None,
    }


def recorded_commands(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Every `wpauc` command line of `DRIVER_ARGS`, paths written relative to `<repo>` and
    `<out>`."""
    monkeypatch.chdir(tmp)  # the drivers change to the repository; this undoes it
    monkeypatch.setenv("WPAUC_STUDY_COMMIT", "recorded")
    threads = torch.get_num_threads()
    calls: list[list[str]] = []
    monkeypatch.setattr("wpauc.cli.run_cli", fake_run_cli(calls))
    modules = [
        importlib.import_module(f"experiments.{name}")
        for name in ("runs", "report", *DRIVER_ARGS)
        if importlib.util.find_spec(f"experiments.{name}")
    ]
    for name, stand_in in stand_ins().items():
        for module in modules:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, stand_in)
    commands: dict[str, list] = {}
    for driver, invocations in DRIVER_ARGS.items():
        main = importlib.import_module(f"experiments.{driver}").main
        for number, args in enumerate(invocations):
            out = tmp / f"{driver}{number}"
            calls.clear()
            monkeypatch.setattr(sys, "argv", [driver, *args, "--out", str(out), "--threads", "1"])
            main()
            text = json.dumps(calls).replace(str(out), "<out>").replace(str(REPO), "<repo>")
            commands.setdefault(driver, []).append(json.loads(text))
    torch.set_num_threads(threads)
    return commands


def test_the_drivers_build_the_recorded_commands(tmp_path, monkeypatch):
    recorded = json.loads(SNAPSHOT.read_text())
    commands = recorded_commands(tmp_path, monkeypatch)
    for driver in DRIVER_ARGS:
        assert commands[driver] == recorded[driver], driver


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        SNAPSHOT.write_text(json.dumps(recorded_commands(Path(folder), patch), indent=1) + "\n")
    print(f"wrote {SNAPSHOT}")
