"""The frozen reference policy of the KL term: the policy as it was at the last `refresh()`
(for RL after SFT, the SFT-trained policy).

With a peft (LoRA) policy the reference runs on the policy's own modules: only the weights
that training changes (the adapter and, with `lora.train_embeddings`, the code tokens'
embedding rows, i.e. the policy's trainable parameters) are kept as a frozen snapshot, and
swapped in for the duration of a reference call. There is no second copy of the base model,
and the same holds for 4/8-bit base weights, which are never written. Otherwise the reference
is a frozen deep copy of the policy.

Lightning: keep the `ReferenceModel` as a plain attribute of the LightningModule. It is not
an `nn.Module`, so its weights are neither in `parameters()` (the optimizer never sees them)
nor in `state_dict()`; save :meth:`ReferenceModel.state_dict` in the checkpoint yourself
(`on_save_checkpoint`), since a rebuilt policy would not give a refreshed reference back. The
frozen copy and the snapshot follow the policy's device and dtype by themselves, each time the
reference is activated. Make the reference in `__init__`, `setup` or `configure_model`, which
Lightning runs before it restores a checkpoint; when RL starts from weights loaded into the
policy afterwards (an SFT checkpoint, or SFT epochs of the same run), call `refresh()` once
they are in place.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import PeftModel
from torch import nn


class ReferenceModel:
    """A frozen reference policy, used like the policy inside `activated()`.

    Args:
        policy: the policy being trained (a Hugging Face causal LM, or a peft model wrapping
            one, whose reference then shares its modules and snapshots its trainable weights).
        frozen_copy: keep a frozen deep copy of the whole policy as the reference. None: only
            when the policy is not a peft model. True with a peft model costs a second copy
            of the base model for the same reference; False needs a peft model.

    Example::

        reference = ReferenceModel(policy)
        with reference.activated() as reference_model:
            reference_logprobs = completion_logprobs(reference_model, ...)
    """

    def __init__(self, policy: nn.Module, frozen_copy: bool | None = None) -> None:
        if frozen_copy is False and not isinstance(policy, PeftModel):
            raise ValueError(
                "frozen_copy=False needs a peft (LoRA) policy, whose trainable weights can be "
                f"snapshotted apart from its frozen base; got a {type(policy).__name__}"
            )
        self._policy = policy
        self._copies_weights = (
            frozen_copy if frozen_copy is not None else not isinstance(policy, PeftModel)
        )
        self._frozen_copy: nn.Module | None = None
        self._snapshot: dict[str, torch.Tensor] = {}
        self.refresh()

    @property
    def shares_policy_weights(self) -> bool:
        """True when the reference runs on the policy's modules with a snapshot of its
        trainable weights (no copy of the base model)."""
        return not self._copies_weights

    def refresh(self) -> None:
        """Make the policy's current weights the reference: a new frozen copy, or a new
        snapshot of the trainable weights."""
        if not self._copies_weights:
            self._snapshot = {
                name: parameter.detach().clone()
                for name, parameter in self._policy.named_parameters()
                if parameter.requires_grad
            }
            return
        self._frozen_copy = None  # free the old copy before the new one is made
        frozen_copy = copy.deepcopy(self._policy)
        frozen_copy.requires_grad_(False)
        for parameter in frozen_copy.parameters():
            parameter.grad = None
        self._frozen_copy = frozen_copy.eval()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The reference's own weights: the frozen copy's, or the snapshot of the trainable
        weights. Checkpoints need them when the reference was refreshed during the run (SFT
        then RL): rebuilding the policy from its config would not give them back."""
        if self._frozen_copy is not None:
            return self._frozen_copy.state_dict()
        return dict(self._snapshot)

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """Restore the weights saved by :meth:`state_dict`."""
        if state is None:
            raise ValueError(
                "reference checkpoint mismatch: the checkpoint holds no reference weights (it "
                "was saved when a LoRA reference was the base model with the adapter disabled); "
                "start the RL run again from its SFT checkpoint (model.init_from)"
            )
        if self._frozen_copy is not None:
            self._frozen_copy.load_state_dict(state)
            return
        if set(state) != set(self._snapshot):
            raise ValueError(
                "reference checkpoint mismatch: the checkpoint's reference weights "
                f"({len(state)} tensors, e.g. {sorted(state)[:2]}) are not this policy's "
                f"trainable weights ({len(self._snapshot)}, e.g. {sorted(self._snapshot)[:2]})"
            )
        for name, value in state.items():
            self._snapshot[name].copy_(value)

    @contextmanager
    def activated(self) -> Iterator[nn.Module]:
        """Yield a module to call like the policy (`input_ids`, `attention_mask`,
        `position_ids`, `past_key_values`, `use_cache`, ...) that computes the reference.

        Inside the block gradients are off and the module is in eval mode (no dropout): use
        it only for reference quantities. With a peft policy the block runs on the policy
        with its trainable weights set to the snapshot (an in-place copy, so a policy graph
        that is still waiting for its backward pass fails loudly instead of using them);
        its weights and train/eval mode are restored afterwards.
        """
        with torch.no_grad():
            if self._frozen_copy is not None:
                self._follow_policy_placement()
                yield self._frozen_copy
                return
            was_training = self._policy.training
            parameters = dict(self._policy.named_parameters())
            trainable = {name: parameters[name] for name in self._snapshot}
            current = {name: parameter.detach().clone() for name, parameter in trainable.items()}
            try:
                self._policy.eval()
                for name, parameter in trainable.items():
                    parameter.copy_(self._snapshot_like(name, parameter))
                yield self._policy
            finally:
                for name, parameter in trainable.items():
                    parameter.copy_(current[name])
                self._policy.train(was_training)

    def __call__(self, **model_inputs):
        """The reference model's output (e.g. `.logits`) for the policy's keyword inputs."""
        with self.activated() as reference_model:
            return reference_model(**model_inputs)

    def _snapshot_like(self, name: str, parameter: nn.Parameter) -> torch.Tensor:
        """The snapshot of `parameter`, moved once to its device and dtype when the policy
        was moved or cast after the snapshot was taken."""
        snapshot = self._snapshot[name]
        if (snapshot.device, snapshot.dtype) != (parameter.device, parameter.dtype):
            snapshot = self._snapshot[name] = snapshot.to(parameter)
        return snapshot

    def _follow_policy_placement(self) -> None:
        """Move the frozen copy to the device and floating dtype of the policy's weights
        (Lightning moves and casts only the policy, which it knows as a submodule)."""
        policy_weight = next(p for p in self._policy.parameters() if p.is_floating_point())
        copy_weight = next(p for p in self._frozen_copy.parameters() if p.is_floating_point())
        if (copy_weight.device, copy_weight.dtype) != (policy_weight.device, policy_weight.dtype):
            self._frozen_copy.to(device=policy_weight.device, dtype=policy_weight.dtype)
