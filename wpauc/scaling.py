"""What wpauc's training and evaluation need of Lightning's strategies, checked before
anything is trained, with errors that say what to change (docs/scaling.md).

Under DDP and DeepSpeed ZeRO-2 every process holds whole weights, so a forward involves no
other process. FSDP's FULL_SHARD and HYBRID_SHARD free each wrapped layer after its forward
and gather it from every process at the next one, a collective each time; wpauc's rollouts
(beam search) and exact evaluation (the pruned walk) make a number of forwards that depends on
the process's own contexts, so the processes would wait on each other forever. SHARD_GRAD_OP
keeps a layer gathered from its first forward until the backward: only that first forward,
which every process makes, gathers.
"""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy, Strategy
from torch.distributed.fsdp import ShardingStrategy

#: FSDP sharding strategies that gather a layer again at every forward
RESHARDING_AFTER_FORWARD = (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD)


def check_strategy(strategy: Strategy, lora_reference: bool, refreshed_reference: bool) -> None:
    """Refuse strategy settings under which a wpauc run would hang or fail mid-run.

    Args:
        strategy: the trainer's strategy, once its processes are set up (``world_size``).
        lora_reference: the KL reference swaps a snapshot into the policy's own trainable
            weights (a LoRA policy with ``model.loss.beta > 0``).
        refreshed_reference: the reference is copied from the trained policy when RL starts
            (an objective, ``beta > 0`` and ``model.sft_epochs > 0``).

    Raises:
        ValueError: naming the setting to change.
    """
    if not isinstance(strategy, FSDPStrategy):
        return
    if strategy.sharding_strategy in RESHARDING_AFTER_FORWARD and strategy.world_size > 1:
        raise ValueError(
            f"trainer.strategy: FSDP with sharding_strategy {strategy.sharding_strategy.name} "
            "gathers every layer again at each forward, which all processes must join, and "
            "wpauc's rollouts and exact evaluation make a different number of forwards on each "
            "process: they would wait on each other forever. Use sharding_strategy: "
            "SHARD_GRAD_OP (configs/strategy/fsdp.yaml) or DeepSpeed ZeRO-2"
        )
    if lora_reference:
        raise ValueError(
            "trainer.strategy: FSDP with a LoRA policy and model.loss.beta > 0: the KL "
            "reference swaps a snapshot of the adapter into weights that FSDP holds in shards. "
            "Train LoRA under DDP (configs/strategy/ddp.yaml): every process then holds the "
            "frozen base model, which costs no more than one GPU's share of a LoRA run"
        )
    if refreshed_reference:
        raise ValueError(
            "trainer.strategy: FSDP with model.sft_epochs > 0, an objective and "
            "model.loss.beta > 0: the KL reference would be copied from the sharded policy "
            "when RL starts. Run SFT and RL as two runs: RL with model.sft_epochs: 0 and "
            "model.init_from: the SFT run's checkpoint (its reference is then copied before "
            "FSDP shards the policy)"
        )
