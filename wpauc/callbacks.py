"""Callbacks for the ``wpauc`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info


class RecommendationWriter(BasePredictionWriter):
    """Writes ``wpauc predict`` output as JSON lines, one line per test sample:
    ``{"sample_index", "user", "target_item_id", "item_ids", "scores"}``: the evaluation
    protocol's recommendations (``model.evaluation``: its ``num_beams`` items by constrained
    beam search), best first, as dataset item ids.
    When it is done it reports how many of the test split's contexts it wrote.

    Args:
        output_path: File to write; None writes ``predictions.jsonl`` in the run folder
            (``trainer.default_root_dir``). Under DDP each process writes
            ``<stem>.rank<r><suffix>``.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = None if output_path is None else Path(output_path)
        self._file = None
        self._written = 0

    def _path(self, trainer) -> Path:
        path = self.output_path
        if path is None:
            path = Path(trainer.default_root_dir) / "predictions.jsonl"
        if trainer.world_size == 1:
            return path
        return path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")

    def on_predict_start(self, trainer, pl_module) -> None:
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")
        self._written = 0

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: dict[str, Any],
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        datamodule = trainer.datamodule
        item_ids = datamodule.catalog.item_ids
        test = datamodule.data.test
        for sample_index, items, scores in zip(
            prediction["sample_index"].tolist(),
            prediction["items"].tolist(),
            prediction["scores"].tolist(),
            strict=True,
        ):
            sample = test[sample_index]
            record = {
                "sample_index": sample_index,
                "user": sample.user,
                "target_item_id": item_ids[sample.target],
                "item_ids": [item_ids[i] for i in items],
                "scores": scores,
            }
            self._file.write(json.dumps(record) + "\n")
        self._written += len(prediction["sample_index"])

    def on_predict_end(self, trainer, pl_module) -> None:
        path = Path(self._file.name)
        self._file.close()
        self._file = None
        share = f" (process {trainer.global_rank}'s share)" if trainer.world_size > 1 else ""
        rank_zero_info(
            f"RecommendationWriter: recommendations for {self._written} of the"
            f" {len(trainer.datamodule.data.test)} test contexts{share} written to {path}"
        )


class RankingPlots(Callback):
    """TensorBoard pictures of what the module logs as numbers: histograms of the
    positive's rank (each validation/test epoch, and in RL rollouts every
    ``log_every_n_steps`` steps) and a figure of the metrics of the top K (HR@K, NDCG@K)
    against K, one curve per metric family the module reports.

    Does nothing without a TensorBoard logger. Under DDP only rank 0 draws, from its own
    shard's ranks (the figure uses the global metrics).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rollout = pl_module.last_rollout
        if rollout is None or "positive_rank" not in rollout.group.stats:
            return
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            ranks = rollout.group.stats["positive_rank"]
            self._histogram(trainer, "train/positive_rank_in_rollout", ranks)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._evaluation_pictures(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module) -> None:
        self._evaluation_pictures(trainer, pl_module, "test")

    def _evaluation_pictures(self, trainer, pl_module, stage: str) -> None:
        if pl_module.evaluation_ranks:
            self._histogram(
                trainer, f"{stage}/positive_rank", torch.cat(pl_module.evaluation_ranks)
            )
        reported = pl_module.val_metrics if stage == "val" else pl_module.test_metrics
        metrics = trainer.callback_metrics
        curves = {
            family: ([k for k, _ in points], [float(metrics[key]) for _, key in points])
            for family, points in ({} if reported is None else reported.at_k()).items()
            if all(key in metrics for _, key in points)
        }
        writer = _tensorboard_writer(trainer)
        if writer is None or not curves:
            return
        from matplotlib.figure import Figure  # not pyplot: leaves the session's backend alone

        figure = Figure(figsize=(4, 3))
        axis = figure.subplots()
        for family, (ks, values) in curves.items():
            axis.plot(ks, values, marker="o", label=family.upper())
        axis.set_xscale("log")
        axis.set_xlabel("K")
        axis.set_ylabel("metric@K")
        axis.set_title(f"{stage}: " + " and ".join(f"{family.upper()}@K" for family in curves))
        axis.legend()
        figure.tight_layout()
        writer.add_figure(f"{stage}/metrics_at_k", figure, trainer.global_step, close=False)

    def _histogram(self, trainer, tag: str, values: torch.Tensor) -> None:
        writer = _tensorboard_writer(trainer)
        if writer is not None and values.numel():
            writer.add_histogram(tag, values.float().cpu(), trainer.global_step)


def _tensorboard_writer(trainer):
    """Rank 0's TensorBoard ``SummaryWriter``, or None."""
    if not trainer.is_global_zero:
        return None
    from torch.utils.tensorboard import SummaryWriter

    for logger in trainer.loggers:
        if isinstance(getattr(logger, "experiment", None), SummaryWriter):
            return logger.experiment
    return None


class TestRanksWriter(Callback):
    """Saves each test context's positive counts (``gt``, ``ge``: negatives scored above, and
    at or above, its positive) to a compressed ``.npz``, so that any metric of the run can be
    recomputed per user and compared paired with another run's (``experiments.stats``).

    Arrays, in ``sample_index`` order: ``sample_index``, ``gt``, ``ge`` (int32) and
    ``num_negatives``. Where the data know the true next-item distribution of the test split
    (the synthetic world) also ``oracle_ks`` and ``expected_hr`` ``[S, len(oracle_ks)]``, the
    true probability mass of the policy's top K (`wpauc.metrics.oracle.expected_hit_rate`),
    which costs one full-catalog scoring per context.

    Args:
        output_path: File to write; None writes ``test_ranks.npz`` in the run folder
            (``trainer.default_root_dir``). Under DDP each process writes
            ``<stem>.rank<r><suffix>``.
        oracle_ks: The K of ``expected_hr``.
    """

    def __init__(self, output_path: str | None = None, oracle_ks: tuple[int, ...] = (1, 3, 10, 20)):
        super().__init__()
        self.output_path = None if output_path is None else Path(output_path)
        self.oracle_ks = tuple(oracle_ks)
        self._batches: list[dict[str, torch.Tensor]] = []

    def _path(self, trainer) -> Path:
        path = self.output_path or Path(trainer.default_root_dir) / "test_ranks.npz"
        if trainer.world_size == 1:
            return path
        return path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._batches = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        counts = {key: outputs[key].cpu() for key in ("sample_index", "gt", "ge")}
        oracle = (trainer.datamodule.data.true_next_item_probs or {}).get("test")
        if oracle is not None:
            from wpauc.decoding import score_items
            from wpauc.metrics.oracle import expected_hit_rate

            scores = score_items(
                pl_module.policy,
                batch["input_ids"],
                batch["attention_mask"],
                pl_module.trie,
                renormalize=pl_module.hparams.renormalize,
            )
            true_probs = oracle[counts["sample_index"]].to(scores.device)
            counts["expected_hr"] = expected_hit_rate(scores, true_probs, self.oracle_ks).cpu()
        self._batches.append(counts)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        import numpy as np

        arrays = {key: torch.cat([b[key] for b in self._batches]) for key in self._batches[0]}
        order = arrays["sample_index"].argsort()
        saved = {key: value[order].numpy() for key, value in arrays.items()}
        for key in ("sample_index", "gt", "ge"):
            saved[key] = saved[key].astype(np.int32)
        if "expected_hr" in saved:
            saved["oracle_ks"] = np.array(self.oracle_ks, dtype=np.int32)
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, num_negatives=pl_module.trie.num_items - 1, **saved)
        self._batches = []
        rank_zero_info(f"TestRanksWriter: counts of {len(order)} test contexts written to {path}")
