"""The frozen reference policy of the KL term.

With a peft (LoRA) policy the reference is the policy itself with its adapter disabled: the
frozen base weights, no second copy in memory. Otherwise it is a frozen deep copy of the
policy taken when the reference is made.

Lightning: keep the `ReferenceModel` as a plain attribute of the LightningModule. It is not
an `nn.Module`, so its weights are neither in `parameters()` (the optimizer never sees them)
nor in `state_dict()` (checkpoints hold the policy once). The frozen copy follows the
policy's device and dtype by itself, each time it is activated. Make the reference in
`__init__`, `setup` or `configure_model`, which Lightning runs before it restores a
checkpoint into the policy: the policy is then rebuilt from its config (seeded random init,
or the pretrained path), so the copy holds the same initial weights as in the run that wrote
the checkpoint. When RL starts from weights loaded into the policy afterwards (an SFT
checkpoint), call `refresh()` once they are loaded.
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
            one, whose reference is then the base model with the adapter disabled).
        frozen_copy: keep a frozen deep copy of the policy as the reference. None: only when
            the policy is not a peft model. True with a peft model keeps its current adapter
            in the reference (e.g. an SFT-trained one) at the cost of a second copy.

    Example::

        reference = ReferenceModel(policy)
        with reference.activated() as reference_model:
            reference_logprobs = completion_logprobs(reference_model, ...)
    """

    def __init__(self, policy: nn.Module, frozen_copy: bool | None = None) -> None:
        if frozen_copy is False and not isinstance(policy, PeftModel):
            raise ValueError(
                "frozen_copy=False needs a peft (LoRA) policy, whose adapter can be disabled; "
                f"got a {type(policy).__name__}"
            )
        self._policy = policy
        self._copies_weights = (
            frozen_copy if frozen_copy is not None else not isinstance(policy, PeftModel)
        )
        self._frozen_copy: nn.Module | None = None
        self.refresh()

    @property
    def shares_policy_weights(self) -> bool:
        """True when the reference is the policy with its adapter disabled (no copy)."""
        return not self._copies_weights

    def refresh(self) -> None:
        """Make the policy's current weights the reference (a new frozen copy). Without a copy
        there is nothing to do: the reference is always the policy's frozen base weights."""
        if not self._copies_weights:
            return
        self._frozen_copy = None  # free the old copy before the new one is made
        frozen_copy = copy.deepcopy(self._policy)
        frozen_copy.requires_grad_(False)
        for parameter in frozen_copy.parameters():
            parameter.grad = None
        self._frozen_copy = frozen_copy.eval()

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The frozen copy's weights (None when the reference shares the policy's weights).

        Checkpoints need them when the reference was refreshed during the run (SFT then RL
        in one run): rebuilding the policy from its config would not give them back."""
        return None if self._frozen_copy is None else self._frozen_copy.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """Restore the frozen copy's weights saved by :meth:`state_dict`."""
        if (state is None) != (self._frozen_copy is None):
            raise ValueError(
                "reference checkpoint mismatch: the checkpoint "
                + ("has no" if state is None else "has a")
                + " frozen-copy reference but this run "
                + ("keeps one" if self._frozen_copy is not None else "shares the policy's weights")
            )
        if state is not None:
            self._frozen_copy.load_state_dict(state)

    @contextmanager
    def activated(self) -> Iterator[nn.Module]:
        """Yield a module to call like the policy (`input_ids`, `attention_mask`,
        `position_ids`, `past_key_values`, `use_cache`, ...) that computes the reference.

        Inside the block gradients are off and the module is in eval mode (no dropout): use
        it only for reference quantities. With a peft policy the policy's adapter is disabled
        for the duration of the block and its train/eval mode restored afterwards.
        """
        with torch.no_grad():
            if self._frozen_copy is not None:
                self._follow_policy_placement()
                yield self._frozen_copy
                return
            was_training = self._policy.training
            self._policy.eval()
            try:
                with self._policy.disable_adapter():
                    yield self._policy
            finally:
                self._policy.train(was_training)

    def __call__(self, **model_inputs):
        """The reference model's output (e.g. `.logits`) for the policy's keyword inputs."""
        with self.activated() as reference_model:
            return reference_model(**model_inputs)

    def _follow_policy_placement(self) -> None:
        """Move the frozen copy to the device and floating dtype of the policy's weights
        (Lightning moves and casts only the policy, which it knows as a submodule)."""
        policy_weight = next(p for p in self._policy.parameters() if p.is_floating_point())
        copy_weight = next(p for p in self._frozen_copy.parameters() if p.is_floating_point())
        if (copy_weight.device, copy_weight.dtype) != (policy_weight.device, policy_weight.dtype):
            self._frozen_copy.to(device=policy_weight.device, dtype=policy_weight.dtype)
