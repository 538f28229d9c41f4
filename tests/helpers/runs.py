"""Tiny runs of the wpauc CLI: the tiny synthetic world on the quickstart config, its
arguments (also of a LoRA run on the stand-in checkpoint of tests/conftest.py), the events
its TensorBoard logger wrote, the final weights of a run and a probe of the KL reference."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback
from peft import PeftModel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wpauc.cli import run_cli

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

#: One SFT epoch of two training steps and one validation batch, no test after the fit.
SFT_ONE_EPOCH = [
    "--model.objective=null",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--test_after_fit=false",
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


#: The tiny world and trainer settings without the tiny policy's own settings.
WORLD = [argument for argument in TINY_WORLD if not argument.startswith("--model.policy")]


def lora_args(root: Path, standin: Path, *extra: str) -> list[str]:
    """Config arguments (no subcommand) of a LoRA run on the stand-in checkpoint: TAWin with a
    KL term, a learning rate high enough for two SFT steps to move the code-token rows."""
    return [
        f"--config={QUICKSTART}",
        *WORLD,
        f"--trainer.default_root_dir={root}",
        "--model.policy=wpauc.models.PretrainedPolicy",
        f"--model.policy.init_args.path={standin}",
        '--model.policy.init_args.lora={"r": 4, "dropout": 0.0}',
        f"--data.tokenizer_path={standin}",
        "--model.objective.init_args.target_k=3",
        "--model.objective.init_args.window_width=3",
        "--model.loss.beta=0.04",
        "--model.optimizer.init_args.lr=0.05",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        *extra,
    ]


class ReferenceProbe(Callback):
    """Logits of one validation prompt: of the policy when the SFT epochs end, and of the
    reference, the policy and (LoRA) the policy with its adapter disabled (the pre-SFT base
    model) when the first RL step starts."""

    def __init__(self) -> None:
        self.logits: dict[str, torch.Tensor] = {}

    @staticmethod
    def _logits(trainer, model: torch.nn.Module) -> torch.Tensor:
        prompt = trainer.datamodule.dataset("valid")[0].input_ids
        input_ids = torch.tensor([prompt], device=trainer.lightning_module.device)
        with torch.no_grad():
            return model(input_ids=input_ids).logits.float()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == pl_module.hparams.sft_epochs - 1:
            pl_module.policy.eval()
            self.logits["sft_end"] = self._logits(trainer, pl_module.policy)
            pl_module.policy.train()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not pl_module.in_rl_stage or "reference" in self.logits:
            return
        with pl_module.reference.activated() as reference:
            self.logits["reference"] = self._logits(trainer, reference)
        pl_module.policy.eval()
        self.logits["policy"] = self._logits(trainer, pl_module.policy)
        if isinstance(pl_module.policy, PeftModel):
            with pl_module.policy.disable_adapter():
                self.logits["base"] = self._logits(trainer, pl_module.policy)
        pl_module.policy.train()


def fit_with_probe(args: list[str]) -> tuple[object, ReferenceProbe]:
    cli = run_cli(args, run=False)
    probe = ReferenceProbe()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, probe
