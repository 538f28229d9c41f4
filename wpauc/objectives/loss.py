"""How a group's log-probs are optimised: `PolicyLoss`, the settings of the GRPO loss.

An objective decides who is in each group (`wpauc.objectives.Objective`); `PolicyLoss`
turns the group's rewards into advantages (`PolicyLoss.rollout`, the `Rollout` record an RL
step builds once) and its members' per-token log-probs into the PPO-clipped,
KL-regularised loss (`functional.policy_loss`), as TRL splits `GRPOConfig` from the
trainer's loss. The RL stage reads `num_iterations` and `beta` to run its update loop and
to decide whether it needs a reference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from wpauc.objectives.base import Group
from wpauc.objectives.functional import AGGREGATIONS, grpo_advantages, policy_loss


@dataclass(frozen=True, eq=False)
class Rollout:
    """One RL step's groups as the loss and the callbacks read them: who is in each group,
    their advantages, which completion tokens count and the log-probs fixed at rollout time.
    """

    group: Group
    """The objective's groups."""
    advantages: Tensor
    """`[B, G]` one advantage per member (0 for padding members)."""
    token_mask: Tensor
    """`[B, G, L]` True on the members' code tokens (`Group.completions`)."""
    old_logp: Tensor | None = None
    """`[B, G, L]` the policy's log-probs at rollout time; None: one update per rollout, the
    ratio is 1 in value (see `policy_loss`)."""
    ref_logp: Tensor | None = None
    """`[B, G, L]` the reference's log-probs; None without a KL term."""


@dataclass
class PolicyLoss:
    """Settings of the RL loss shared by every objective (TRL's GRPO loss).

    Per token `-min(rho A, clip(rho, 1 - epsilon, 1 + epsilon_high) A) + beta k3`, with
    `k3 = exp(ref - logp) - (ref - logp) - 1` to the frozen reference, reduced as
    `aggregation` says; `A` are GRPO advantages of the group's rewards.

    Args:
        epsilon: PPO clip range; the probability ratio is clipped to
            `[1 - epsilon, 1 + epsilon_high]`.
        epsilon_high: upper clip range (DAPO "clip-higher"); None uses `epsilon`.
        beta: weight of the k3 KL penalty to the frozen reference, the policy at the start
            of RL (0 turns it off and no reference model is kept).
        num_iterations: policy updates per rollout (GRPO's mu); above 1 the same groups are
            reused and the ratio to the rollout policy's log-probs is clipped.
        scale: divide advantages by the group's std (GRPO); False only centres them
            (Dr. GRPO).
        aggregation: "sequence_mean" (mean over each member's tokens, then over members:
            TRL's `grpo`), "token_mean" (mean over all tokens of the batch: DAPO) or
            "sequence_sum" (sum over each member's tokens, then mean over members: the loss
            on the item score itself, not length-normalised).
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    num_iterations: int = 1
    scale: bool = True
    aggregation: Literal["sequence_mean", "token_mean", "sequence_sum"] = "sequence_mean"

    def __post_init__(self) -> None:
        if not 0.0 < self.epsilon < 1.0:
            raise _config_error("epsilon", f"must be in (0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high <= 0.0:
            raise _config_error("epsilon_high", f"must be > 0, got {self.epsilon_high}")
        if self.beta < 0.0:
            raise _config_error("beta", f"must be >= 0, got {self.beta}")
        if self.num_iterations < 1:
            raise _config_error("num_iterations", f"must be >= 1, got {self.num_iterations}")
        if self.aggregation not in AGGREGATIONS:
            raise _config_error(
                "aggregation", f"must be one of {AGGREGATIONS}, got {self.aggregation!r}"
            )

    def advantages(self, group: Group) -> Tensor:
        """`[B, G]` GRPO advantages of the group's rewards (0 for padding members)."""
        return grpo_advantages(
            group.rewards, scale=self.scale, mask=group.member_mask, weights=group.weights
        )

    def rollout(
        self,
        group: Group,
        token_mask: Tensor,
        old_logp: Tensor | None = None,
        ref_logp: Tensor | None = None,
    ) -> Rollout:
        """The record of one rollout, with the advantages of `group`'s rewards.

        Args:
            group: the objective's groups.
            token_mask: `[B, G, L]` the completion mask of `group.completions(trie)`.
            old_logp: `[B, G, L]` log-probs at rollout time; None when `num_iterations = 1`.
            ref_logp: `[B, G, L]` reference log-probs; None when `beta = 0`.
        """
        return Rollout(group, self.advantages(group), token_mask, old_logp, ref_logp)

    def __call__(self, logp: Tensor, rollout: Rollout) -> tuple[Tensor, dict[str, Tensor]]:
        """`(loss, stats)` of the members' per-token log-probs (see `policy_loss`).

        Args:
            logp: `[B, G, L]` current policy log-probs of the rollout's completions.
            rollout: the groups, their advantages and the log-probs of rollout time.
        """
        return policy_loss(
            logp,
            rollout.old_logp,
            rollout.ref_logp,
            rollout.advantages,
            rollout.token_mask,
            rollout.group.member_mask,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high,
            beta=self.beta,
            aggregation=self.aggregation,
        )


def _config_error(key: str, message: str) -> ValueError:
    return ValueError(f"model.loss.{key} {message}")
