"""The training stages of `RecommenderModule`: supervised fine-tuning, then RL.

`training_stages` turns the module's settings into its stages, each from its first epoch:
`SFTStage` (next-item NLL of the target code) from epoch 0 and, with an objective,
`RLStage` from ``sft_epochs``; without one every epoch is SFT. It is the one place where "no
objective" means "SFT only": the module asks its stages what to check, log and keep. A
stage's `step` trains the module's policy on one batch through `update_policy` and the
module's logging; the maths stays in `wpauc.objectives` and `wpauc.decoding`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from wpauc.decoding import PolicyScorer, completion_logprobs
from wpauc.objectives import Objective, PolicyLoss, RolloutContext, group_statistics
from wpauc.window import Window


def check_finite(terms: dict[str, torch.Tensor], module: L.LightningModule) -> None:
    """Raise FloatingPointError naming the first non-finite term and the step, before the
    update."""
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            first_values = value.detach().float().flatten()[:4].tolist()
            raise FloatingPointError(
                f"non-finite {name} ({first_values}) at global step {module.global_step} "
                f"(epoch {module.current_epoch}); stopping before the update"
            )


class Stage(ABC):
    """One stage of training, from ``first_epoch`` until the next stage starts."""

    first_epoch: int
    """The epoch the stage starts at."""
    needs_reference: bool = False
    """Whether the stage needs the frozen reference model (the KL term)."""

    def check_catalog(self, num_items: int) -> None:  # noqa: B027 - an optional hook
        """Raise ValueError naming the key when the stage cannot train on a catalog of
        ``num_items`` items (called as soon as the catalog is loaded)."""

    def check_epochs(self, max_epochs: int | None) -> None:  # noqa: B027 - an optional hook
        """Warn naming the keys when the stage never runs in ``max_epochs`` epochs."""

    def logged_windows(self) -> list[Window]:
        """The windows whose WPAUC is logged beside the configured metrics."""
        return []

    def start(self, module: L.LightningModule) -> None:  # noqa: B027 - an optional hook
        """Run when the stage's first epoch begins (Lightning does not run it again when it
        resumes inside that epoch: the checkpoint's state is kept)."""

    @abstractmethod
    def step(self, module: L.LightningModule, batch: dict[str, torch.Tensor]) -> None:
        """Train the module's policy on one batch and log what it did."""


class SFTStage(Stage):
    """Supervised fine-tuning: the mean NLL of the target code's tokens."""

    first_epoch = 0

    def step(self, module: L.LightningModule, batch: dict[str, torch.Tensor]) -> None:
        code = batch["target_code"][:, None, :]
        code_mask = batch["target_code_mask"][:, None, :]
        logp = completion_logprobs(
            module.policy, batch["input_ids"], batch["attention_mask"], code, code_mask
        )
        loss = -(logp * code_mask).sum() / code_mask.sum()
        check_finite({"sft/loss": loss}, module)
        module.update_policy(loss)
        module.log("train/sft_loss", loss, prog_bar=True, batch_size=code.shape[0])


@dataclass(eq=False)
class RLStage(Stage):
    """RL: each step builds the objective's groups under the policy, records them once as a
    `wpauc.objectives.Rollout` (``module.last_rollout``, for the callbacks) and makes
    ``loss.num_iterations`` updates of ``loss`` on it."""

    objective: Objective
    """Who is in each context's group (``model.objective``)."""
    loss: PolicyLoss
    """How the groups are optimised (``model.loss``)."""
    first_epoch: int
    """The epoch RL starts at (``model.sft_epochs``)."""
    learning_rate: float | None
    """Every parameter group's learning rate from ``first_epoch`` on (``model.rl_learning_rate``);
    None keeps the optimizer's."""
    renormalize: bool
    """Score the rollouts by renormalised log-probs (``model.renormalize``)."""
    rollout_seed: int
    """Seed of the rollouts' randomness (``model.rollout_seed``)."""

    def __post_init__(self) -> None:
        try:
            self.objective.check_scoring(self.renormalize)
        except ValueError as error:
            raise ValueError(f"model.objective: {error}") from None

    @property
    def needs_reference(self) -> bool:
        return self.loss.beta > 0

    def check_catalog(self, num_items: int) -> None:
        try:
            self.objective.check_catalog(num_items)
        except ValueError as error:
            raise ValueError(f"model.objective: {error}") from None

    def check_epochs(self, max_epochs: int | None) -> None:
        if max_epochs not in (None, -1) and self.first_epoch >= max_epochs:
            rank_zero_warn(
                f"model.sft_epochs={self.first_epoch} >= trainer.max_epochs={max_epochs}: every"
                " epoch is SFT and the RL stage (model.objective) never runs; raise"
                " trainer.max_epochs, or set model.objective: null for SFT only"
            )

    def logged_windows(self) -> list[Window]:
        return self.objective.logged_windows()

    def start(self, module: L.LightningModule) -> None:
        """After SFT epochs the reference becomes the SFT-trained policy and the optimizer's
        moments are reset; ``learning_rate``, when set, becomes every parameter group's."""
        optimizer = module.optimizers().optimizer
        if self.first_epoch > 0:
            if module.reference is not None:
                module.reference.refresh()
            optimizer.state.clear()
        if self.learning_rate is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate

    def _generator(self, module: L.LightningModule) -> torch.Generator:
        # Keyed by seed, step and rank: reproducible and resumable without saving RNG state.
        key = (self.rollout_seed * 1_000_003 + module.global_step) * 1_009 + module.global_rank
        return torch.Generator(device="cpu").manual_seed(key)

    def step(self, module: L.LightningModule, batch: dict[str, torch.Tensor]) -> None:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        scorer = PolicyScorer(
            module.policy, input_ids, attention_mask, module.trie, self.renormalize
        )
        context = RolloutContext(scorer, batch["target"], self._generator(module))
        group = self.objective.group(context)
        completions, token_mask = group.completions(module.trie)

        def logprobs(model: torch.nn.Module) -> torch.Tensor:
            return completion_logprobs(model, input_ids, attention_mask, completions, token_mask)

        ref_logp = old_logp = None
        if module.reference is not None:
            with torch.no_grad(), module.reference.activated() as reference:
                ref_logp = logprobs(reference)
        if self.loss.num_iterations > 1:
            with torch.no_grad():
                old_logp = logprobs(module.policy)
        # old_logp None (one iteration): policy_loss uses logp.detach(), ratio 1 in value
        rollout = self.loss.rollout(group, token_mask, old_logp, ref_logp)
        for _ in range(self.loss.num_iterations):
            loss, stats = self.loss(logprobs(module.policy), rollout)
            check_finite({"rl/loss": loss, **{f"rl/{k}": v for k, v in stats.items()}}, module)
            grad_norm = module.update_policy(loss)
        module.last_rollout = rollout
        batch_size = input_ids.shape[0]
        logged = {
            **self._informative_loss_stats(loss, stats),
            **group_statistics(group, rollout.advantages),
            **{name: value for name, value in group.stats.items() if value.ndim == 0},
        }
        if grad_norm is not None:
            logged["grad_norm"] = grad_norm
        module.log("train/surrogate", logged.pop("surrogate"), prog_bar=True, batch_size=batch_size)
        module.log_dict({f"train/{k}": v for k, v in logged.items()}, batch_size=batch_size)

    def _informative_loss_stats(
        self, loss: torch.Tensor, stats: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The loss statistics that can vary in this configuration: with one update per
        rollout the ratio is 1 (no clipping, and the clipped term's value is 0 whatever the
        gradient), and with beta = 0 there is no KL."""
        kept = {"surrogate": stats["surrogate"]}
        if self.loss.num_iterations > 1:
            kept.update({k: stats[k] for k in ("pg_loss", "clip_ratio", "ratio_mean")})
        if self.loss.beta > 0:
            kept["kl"] = stats["kl"]
        if len(kept) > 1:
            kept["rl_loss"] = loss.detach()
        return kept


def training_stages(
    objective: Objective | None,
    loss: PolicyLoss,
    sft_epochs: int,
    rl_learning_rate: float | None,
    renormalize: bool,
    rollout_seed: int,
    scheduled: bool,
) -> tuple[Stage, ...]:
    """The stages of a run, in order of their first epoch (the module's settings; errors
    name their keys).

    Args:
        objective: the RL objective; None trains by SFT only (every epoch).
        loss: the RL loss settings.
        sft_epochs: with an objective, the leading SFT epochs (0: an RL-only run).
        rl_learning_rate: the learning rate set when RL starts; None keeps the optimizer's.
        renormalize: whether the policy scores by renormalised log-probs.
        rollout_seed: seed of the RL rollouts' randomness.
        scheduled: whether a learning-rate scheduler sets the rate at every step.
    """
    if objective is None:
        return (SFTStage(),)
    rl = RLStage(objective, loss, sft_epochs, rl_learning_rate, renormalize, rollout_seed)
    if rl_learning_rate is not None and scheduled:
        raise ValueError(
            "model.rl_learning_rate cannot be combined with model.scheduler: the scheduler"
            " sets the learning rate at every step and would replace it. Leave"
            " model.rl_learning_rate null and give the RL stage its rate in the schedule"
        )
    return (SFTStage(), rl) if sft_epochs > 0 else (rl,)
