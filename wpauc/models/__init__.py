"""Policy and reference builders: a tiny Qwen2 model from a config (the default), a
pretrained local checkpoint with optional LoRA and 4/8-bit loading, the frozen reference,
the vocabulary check that the policy covers every item code, and the catalog record that
checkpoints keep (`wpauc.models.provenance`).

Builders are chosen by `class_path` in YAML and share one method (`PolicyBuilder`):
`build(tokenizer, item_codes=None) -> model`.
"""

from wpauc.models.pretrained import LoraSettings, PretrainedPolicy
from wpauc.models.protocol import PolicyBuilder
from wpauc.models.reference import ReferenceModel
from wpauc.models.tiny import TinyQwen2Policy
from wpauc.models.vocabulary import check_vocabulary, embedding_rows, set_special_token_ids

__all__ = [
    "LoraSettings",
    "PolicyBuilder",
    "PretrainedPolicy",
    "ReferenceModel",
    "TinyQwen2Policy",
    "check_vocabulary",
    "embedding_rows",
    "set_special_token_ids",
]
