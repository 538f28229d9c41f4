"""The LightningModule: supervised fine-tuning, then RL with a swappable objective.

The module orchestrates; the maths lives elsewhere: item scores and log-probs in
:mod:`wpauc.decoding`, losses and rollouts in :mod:`wpauc.objectives`, the evaluation
protocols in :mod:`wpauc.evaluation`, ranking metrics in :mod:`wpauc.metrics`. It is built
from the data module's `wpauc.data.CatalogContext`. One run can do both stages
(:mod:`wpauc.stages`): the first ``sft_epochs`` epochs are supervised (next-item NLL of the
target code), the rest optimise ``objective``; with no objective every epoch is SFT. An
RL-only run starts from an SFT checkpoint (``init_from``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from torchmetrics import MeanMetric

from wpauc.analysis import DIAGNOSTICS, distribution_diagnostics
from wpauc.data import CatalogContext
from wpauc.decoding import ItemTrie, score_items
from wpauc.evaluation import EvaluationProtocol, Exact
from wpauc.metrics import DEFAULT_METRICS, MetricSpec, RankingMetrics, WPAUCSpec, metric_specs
from wpauc.models import PolicyBuilder, ReferenceModel, TinyQwen2Policy
from wpauc.models.provenance import (
    CATALOG_KEY,
    catalog_record,
    check_catalog,
    load_policy_weights,
)
from wpauc.objectives import Objective, PolicyLoss, Rollout
from wpauc.scaling import check_strategy
from wpauc.schedules import WarmupCosine
from wpauc.stages import RLStage, Stage, training_stages


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)


class RecommenderModule(L.LightningModule):
    """A causal-LM recommender trained by SFT and then by an RL ranking objective.

    Args:
        policy: Builds the policy from the data module's tokenizer (a tiny Qwen2 from a
            config, or a pretrained model from a local path with optional LoRA / 4-bit).
        objective: The RL objective (GRPO/AUC, beam-PAUC, TAWin-WPAUC, rank-aware reward):
            who is in each context's group; ``None`` trains by SFT only.
        loss: How the RL groups are optimised (advantages, PPO clip, KL weight, updates per
            rollout, aggregation); see ``wpauc.objectives.PolicyLoss``.
        sft_epochs: With an objective, the number of leading SFT epochs before RL starts.
        rl_learning_rate: Learning rate set on every parameter group when RL starts: at
            epoch ``sft_epochs``, also when that is 0 (an RL-only run); after SFT epochs the
            optimizer's moments are reset then too. ``None`` keeps the optimizer's learning
            rate. Must be > 0, and cannot be combined with ``scheduler`` (which sets the
            learning rate at every step); unused without an objective.
        optimizer: Optimizer factory over the trainable parameters.
        scheduler: Optional learning-rate scheduler factory, stepped once per optimizer step,
            e.g. ``wpauc.schedules.WarmupCosine`` (its ``total_steps`` defaults to the run's).
        gradient_clip_val: Max global gradient norm per update (``None`` disables clipping).
            Clipping is done here, not by the Trainer, because updates are manual (RL reuses
            one rollout for ``loss.num_iterations`` updates).
        init_from: Checkpoint whose policy weights initialise this run (e.g. the SFT run's
            ``last.ckpt`` for an RL run); optimizer state is not taken from it. It must
            match ``policy`` (same architecture) and record the catalog of this run's data.
        evaluation: The evaluation protocol of validation, test and ``predict``
            (`wpauc.evaluation`): ``Exact`` ranks the whole catalog by exact item scores
            (with ``rank_cap``, HR@K and NDCG@K only, faster); ``Beam`` ranks only the top
            ``num_beams`` beams, as MiniOneRec and ReRe report (HR@K and NDCG@K only).
            ``predict`` writes the protocol's recommendations (``num_beams`` items).
        metrics: The reported metrics, as keys of `wpauc.metrics.specs` (``hr@K``,
            ``ndcg@K``, ``auc``, ``wpauc@[A,B]`` for the FPR window ``[A, B]``), logged with
            ``val/`` and ``test/`` in front. A TAWin objective's own window is added; under
            a protocol whose counts are cut at a rank (``Exact(rank_cap)``, ``Beam``) only
            the metrics of the top K are reported.
        renormalize: Score items by log-probs renormalised over the allowed continuations
            at each step instead of raw log-probs (RL rollouts, evaluation and prediction).
        diagnostic_samples: Validation contexts per epoch whose whole item distribution is
            scored for ``val/entropy``, ``val/top1_prob`` and, where the data knows the true
            next-item distribution (the synthetic world), ``val/kl_to_oracle`` and
            ``val/oracle_rank_corr``; 0 turns them off.
        rollout_seed: Seed of the RL rollouts' randomness (negative sampling), combined with the
            global step and the process rank so runs are reproducible and resume exactly.
    """

    def __init__(
        self,
        policy: PolicyBuilder | None = None,
        objective: Objective | None = None,
        loss: PolicyLoss = PolicyLoss(),  # noqa: B008 - a frozen-by-convention settings object
        sft_epochs: int = 0,
        rl_learning_rate: float | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        gradient_clip_val: float | None = 1.0,
        init_from: str | None = None,
        evaluation: EvaluationProtocol = Exact(),  # noqa: B008 - frozen settings object
        metrics: Sequence[str] = DEFAULT_METRICS,
        renormalize: bool = False,
        diagnostic_samples: int = 256,
        rollout_seed: int = 0,
    ):
        super().__init__()
        try:
            specs = metric_specs(metrics)
        except ValueError as error:
            raise ValueError(f"model.metrics: {error}") from None
        try:
            evaluation.check([spec.cutoff for spec in specs if spec.cutoff is not None])
        except ValueError as error:
            raise ValueError(f"model.evaluation: {error}") from None
        if sft_epochs < 0:
            raise ValueError(f"model.sft_epochs must be >= 0, got {sft_epochs}")
        if rl_learning_rate is not None and rl_learning_rate <= 0:
            raise ValueError(f"model.rl_learning_rate must be > 0, got {rl_learning_rate}")
        self.stages: tuple[Stage, ...] = training_stages(
            objective,
            loss,
            sft_epochs,
            rl_learning_rate,
            renormalize,
            rollout_seed,
            scheduled=scheduler is not None,
        )
        """The training stages, in order of their first epoch (`wpauc.stages`)."""
        self.save_hyperparameters(
            ignore=["policy", "objective", "loss", "evaluation", "optimizer", "scheduler"]
        )
        self.policy_builder = policy if policy is not None else TinyQwen2Policy()
        self.objective = objective
        self.loss = loss
        self.evaluation = evaluation
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.automatic_optimization = False
        self.policy: torch.nn.Module | None = None
        self.reference: ReferenceModel | None = None
        self.trie: ItemTrie | None = None
        self.val_metrics: RankingMetrics | None = None
        self.test_metrics: RankingMetrics | None = None
        self.evaluation_ranks: list[torch.Tensor] = []
        """Positive ranks (``ge``) of the current validation/test epoch, for the callbacks
        (the protocol's ``rank_cap`` where the rank is only known to be at least the cap)."""
        self.last_rollout: Rollout | None = None
        """The last RL step's rollout (its groups and advantages), for the callbacks."""
        self.val_diagnostics = torch.nn.ModuleDict({name: MeanMetric() for name in DIAGNOSTICS})
        self.diagnosed_samples = 0
        self.oracle_probs: torch.Tensor | None = None
        """``[S, N]`` true next-item distribution of every validation sample, when known."""
        self.catalog_record: dict[str, Any] | None = None
        """The catalog of the data (see `wpauc.models.provenance`), saved in checkpoints."""

    # ------------------------------------------------------------------ building
    def build(self, context: CatalogContext) -> None:
        """Build policy, reference and trie from the data's catalog context (idempotent).

        Lightning calls this through :meth:`configure_model`; notebooks call it directly
        with ``datamodule.catalog_context()``.
        """
        if self.policy is not None:
            return
        self.oracle_probs = context.valid_next_item_probs
        self.catalog_record = catalog_record(
            context.catalog.item_ids, context.item_codes, context.tokenizer, context.description
        )
        self.policy = self.policy_builder.build(context.tokenizer, context.item_codes)
        self.trie = ItemTrie.from_codes(context.item_codes)
        for stage in self.stages:
            stage.check_catalog(self.trie.num_items)
        specs = self.evaluation.reported_metrics(self._metric_specs(self.trie.num_items - 1))
        rank_cap = self.evaluation.rank_cap
        try:
            self.val_metrics = RankingMetrics(specs, "val/", rank_cap)
        except ValueError as error:
            raise ValueError(f"model.metrics: {error}") from None
        self.test_metrics = RankingMetrics(specs, "test/", rank_cap)
        if self.hparams.init_from:
            self.load_policy_weights(self.hparams.init_from)
        if any(stage.needs_reference for stage in self.stages):
            # the policy's weights now: the SFT start point of RL from init_from (under LoRA a
            # snapshot of the adapter and code-token rows, not the pre-SFT base model)
            self.reference = ReferenceModel(self.policy)

    def _metric_specs(self, num_negatives: int) -> list[MetricSpec]:
        """``metrics`` plus the WPAUC of the objective's own window (TAWin), so its target is
        logged (unless ``metrics`` holds its key already)."""
        specs = metric_specs(self.hparams.metrics)
        for window in (window for stage in self.stages for window in stage.logged_windows()):
            spec = WPAUCSpec(*window.fractions(num_negatives))
            if spec.key not in {configured.key for configured in specs}:
                specs.append(spec)
        return specs

    def configure_model(self) -> None:
        self.build(self.trainer.datamodule.catalog_context())
        check_strategy(
            self.trainer.strategy,
            lora_reference=self.reference is not None and self.reference.shares_policy_weights,
            refreshed_reference=self.reference is not None and self.hparams.sft_epochs > 0,
        )

    def load_policy_weights(self, path: str, key: str = "model.init_from") -> None:
        """Load the policy weights of the checkpoint at ``path`` (see
        `wpauc.models.load_policy_weights`); errors name ``key``."""
        load_policy_weights(self.policy, path, self.catalog_record, key)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the catalog record and the reference's weights."""
        checkpoint[CATALOG_KEY] = self.catalog_record
        if self.reference is not None:
            checkpoint["reference_state_dict"] = self.reference.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another catalog (``ckpt_path`` of fit, validate, test and
        predict); restore the reference's weights."""
        check_catalog(checkpoint.get(CATALOG_KEY), self.catalog_record, "ckpt_path")
        if self.reference is not None and "reference_state_dict" in checkpoint:
            self.reference.load_state_dict(checkpoint["reference_state_dict"])

    def _put_trie_on_device(self) -> None:
        # The trie is plain tensors, not a submodule: Lightning does not move it.
        self.trie = self.trie.to(self.device)

    on_fit_start = on_validation_start = on_test_start = on_predict_start = _put_trie_on_device

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        for stage in self.stages:
            stage.check_epochs(self.trainer.max_epochs)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, WarmupCosine) and scheduler.total_steps is None:
            scheduler.set_total_steps(int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    @property
    def current_stage(self) -> Stage:
        """The stage of the current epoch."""
        return [stage for stage in self.stages if stage.first_epoch <= self.current_epoch][-1]

    @property
    def in_rl_stage(self) -> bool:
        return isinstance(self.current_stage, RLStage)

    def on_train_epoch_start(self) -> None:
        """Start the stage whose first epoch this is (`wpauc.stages.Stage.start`)."""
        if self.current_stage.first_epoch == self.current_epoch:
            self.current_stage.start(self)

    def update_policy(self, loss: torch.Tensor) -> torch.Tensor | None:
        """One optimizer step on ``loss`` (clip, step, schedule); returns the gradient norm
        before clipping (None under DeepSpeed, see `_clip_gradients`)."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grad_norm = self._clip_gradients(optimizer)
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        return grad_norm

    def _clip_gradients(self, optimizer) -> torch.Tensor | None:
        """Clip the gradients to the global norm ``gradient_clip_val``; return that norm
        before clipping, where the strategy lets the module see it.

        Under FSDP each process holds gradient shards: FSDP's own ``clip_grad_norm_`` reduces
        the norm over processes (Lightning's ``clip_gradients`` refuses norm clipping there).
        DeepSpeed keeps the gradients in its own partitions and clips them itself (its config's
        ``gradient_clipping``): None. Otherwise (one process, DDP) every process holds the
        whole, already averaged gradients.
        """
        max_norm = self.hparams.gradient_clip_val
        strategy = self.trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy):
            return None
        if isinstance(strategy, FSDPStrategy):
            # an infinite max_norm measures without clipping (the scale is clamped to 1)
            return self.trainer.model.clip_grad_norm_(
                math.inf if max_norm is None else max_norm
            ).detach()
        gradients = [p.grad for p in self.policy.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.float()) for g in gradients])
        )
        if max_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=max_norm)
        return grad_norm.detach()

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.current_stage.step(self, batch)

    # ------------------------------------------------------------------ evaluation
    def _evaluation_step(
        self, batch: dict[str, torch.Tensor], metrics: RankingMetrics
    ) -> dict[str, torch.Tensor]:
        """Add the batch's positive counts to ``metrics``; return them by ``sample_index``
        (``wpauc.callbacks.TestRanksWriter`` saves them per test context)."""
        gt, ge, beyond_cap = self.evaluation.counts(
            self.policy, batch, self.trie, self.hparams.renormalize
        )
        metrics.update_ranks(gt, ge, self.trie.num_items - 1, beyond_cap)
        # ge = negatives scoring at least the positive: its 0-based rank, ties against it.
        self.evaluation_ranks.append(ge.cpu())
        return {"sample_index": batch["sample_index"], "gt": gt, "ge": ge}

    def on_validation_epoch_start(self) -> None:
        self.evaluation_ranks = []
        self.diagnosed_samples = 0

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics)
        self._diagnose(batch)

    def _diagnose(self, batch: dict[str, torch.Tensor]) -> None:
        """Distribution diagnostics of the first ``diagnostic_samples`` validation contexts.

        Under DDP a process diagnoses the contexts of its shard among them (rank ``r`` holds
        positions ``r, r + world_size, ...``, `wpauc.data.loaders.EvalShardSampler`), so the
        means over all processes are those of one process.
        """
        share = len(
            range(self.global_rank, self.hparams.diagnostic_samples, self.trainer.world_size)
        )
        count = min(share - self.diagnosed_samples, len(batch["target"]))
        if count <= 0:
            return
        self.diagnosed_samples += count
        scores = score_items(
            self.policy,
            batch["input_ids"][:count],
            batch["attention_mask"][:count],
            self.trie,
            renormalize=self.hparams.renormalize,
        )
        oracle = None
        if self.oracle_probs is not None:
            oracle = self.oracle_probs[batch["sample_index"][:count].cpu()].to(scores.device)
        for name, values in distribution_diagnostics(scores, oracle).items():
            self.val_diagnostics[name].update(values)

    def _log_diagnostics(self) -> None:
        """Log the diagnostics' means over every process's contexts. Each ``compute()`` is a
        collective under DDP, so every process makes it, also one that diagnosed nothing (a
        process that logged a metric object the others never logged would wait forever)."""
        if self.hparams.diagnostic_samples == 0:
            return
        # distribution_diagnostics gives the oracle's diagnostics exactly when given the oracle
        names = [n for n in DIAGNOSTICS if self.oracle_probs is not None or "oracle" not in n]
        values = {f"val/{name}": self.val_diagnostics[name].compute() for name in names}
        for metric in self.val_diagnostics.values():
            metric.reset()
        self.log_dict(values, sync_dist=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, self.test_metrics)

    def _end_evaluation(self, metrics: RankingMetrics) -> None:
        values = metrics.compute()
        metrics.reset()
        # Values are already global (summed states); sync_dist only averages identical numbers.
        self.log_dict(values, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation(self.val_metrics)
        self._log_diagnostics()

    def on_test_epoch_end(self) -> None:
        self._end_evaluation(self.test_metrics)

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        """The evaluation protocol's recommendations per context, best first."""
        items, scores = self.evaluation.recommend(
            self.policy,
            batch["input_ids"],
            batch["attention_mask"],
            self.trie,
            self.hparams.renormalize,
        )
        return {"sample_index": batch["sample_index"], "items": items, "scores": scores}
