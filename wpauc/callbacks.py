"""Callbacks for the ``wpauc`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter


class RecommendationWriter(BasePredictionWriter):
    """Writes ``wpauc predict`` output as JSON lines, one line per test sample:
    ``{"sample_index", "user", "target_item_id", "item_ids", "scores"}``, the top
    ``model.eval_num_beams`` items by constrained beam search, best first, as dataset item ids.

    Args:
        output_path: File to write; under DDP each process writes ``<stem>.rank<r><suffix>``.
    """

    def __init__(self, output_path: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)
        self._file = None

    def _path(self, trainer) -> Path:
        if trainer.world_size == 1:
            return self.output_path
        return self.output_path.with_name(f"{self.output_path.stem}.rank{trainer.global_rank}{self.output_path.suffix}")

    def on_predict_start(self, trainer, pl_module) -> None:
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")

    def write_on_batch_end(
        self, trainer, pl_module, prediction: dict[str, Any], batch_indices, batch, batch_idx: int, dataloader_idx: int
    ) -> None:
        datamodule = trainer.datamodule
        item_ids = datamodule.catalog.item_ids
        test = datamodule.data.test
        for sample_index, items, scores in zip(
            prediction["sample_index"].tolist(), prediction["items"].tolist(), prediction["scores"].tolist(), strict=True
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

    def on_predict_end(self, trainer, pl_module) -> None:
        self._file.close()
        self._file = None
