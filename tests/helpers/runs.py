"""Tiny runs of the wpauc CLI: the tiny synthetic world on the quickstart config, its
arguments, the events its TensorBoard logger wrote and the final weights of a run."""

from __future__ import annotations

from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

#: A world small enough for a few seconds per run: 64 items, 3-token SIDs.
TINY_WORLD = [
    "--data.source.init_args.num_items=64",
    "--data.source.init_args.num_users=48",
    "--data.source.init_args.num_categories=2",
    "--data.source.init_args.subcategories_per_category=4",
    "--data.batch_size=8",
    "--data.eval_batch_size=16",
    "--data.max_eval_samples=32",
    "--model.policy.init_args.hidden_size=32",
    "--model.policy.init_args.intermediate_size=64",
    "--model.metrics=[hr@1, hr@3, hr@5, hr@10, hr@20, ndcg@1, ndcg@3, ndcg@5, ndcg@10, ndcg@20,"
    ' auc, "wpauc@[0,0.1]", "wpauc@[0.05,0.15]"]',
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]


def tiny_args(tmp_path: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    return [
        subcommand,
        f"--config={QUICKSTART}",
        *TINY_WORLD,
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        # TAWin on a 63-negative catalog: window ranks [2, 5), beam width 6
        "--model.objective.init_args.target_k=3",
        "--model.objective.init_args.window_width=3",
        *extra,
    ]


def read_events(root: Path) -> EventAccumulator:
    """Everything the run's TensorBoard logger wrote (all event files of its version folder)."""
    (run_dir,) = {path.parent for path in root.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0}
    )
    accumulator.Reload()
    return accumulator


def final_weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.policy.state_dict().items()}
