"""What an RL objective needs from the policy: item scores and beams for a batch of prompts.

An objective only picks group members; it asks an `ItemScorer` for the policy's ranking.
`PolicyScorer` binds a policy, the prompts and the trie; `ScoreTable` holds fixed scores
(an exact ranking of a known model: the consistency analysis and the tests use it).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from wpauc.decoding.beam_search import constrained_beam_search
from wpauc.decoding.group_forward import completion_logprobs
from wpauc.decoding.scoring import score_items
from wpauc.decoding.trie import ItemTrie


class ItemScorer(Protocol):
    """The policy's view of each context's catalog: `[B, N]` scores and top-W beams."""

    @property
    def num_items(self) -> int:
        """N, the catalog size."""

    def beam(self, width: int) -> tuple[Tensor, Tensor]:
        """`(items [B, W], scores [B, W])`: the top `width` items per context, best first."""

    def scores(self) -> Tensor:
        """`[B, N]` the score of every catalog item per context."""

    def score(self, items: Tensor) -> Tensor:
        """`[B, K]` the scores of `items` `[B, K]` (catalog indices), per context."""


class PolicyScorer:
    """Scores of a causal-LM policy: trie-constrained beam search and exact item scores.

    Args:
        policy: the causal LM (in whatever train/eval mode the caller chose).
        input_ids: `[B, P]` prompt tokens, left-padded.
        attention_mask: `[B, P]`.
        trie: the catalog's `ItemTrie`.
        renormalize: score items by log-probs renormalised over the trie's allowed
            continuations at each step instead of raw log-probs.
    """

    def __init__(
        self,
        policy: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        trie: ItemTrie,
        renormalize: bool = False,
    ) -> None:
        self.policy = policy
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.trie = trie
        self.renormalize = renormalize

    @property
    def num_items(self) -> int:
        return int(self.trie.num_items)

    @torch.no_grad()
    def beam(self, width: int) -> tuple[Tensor, Tensor]:
        return constrained_beam_search(
            self.policy,
            self.input_ids,
            self.attention_mask,
            self.trie,
            width,
            renormalize=self.renormalize,
        )

    @torch.no_grad()
    def scores(self) -> Tensor:
        return score_items(
            self.policy,
            self.input_ids,
            self.attention_mask,
            self.trie,
            renormalize=self.renormalize,
        )

    @torch.no_grad()
    def score(self, items: Tensor) -> Tensor:
        if self.renormalize:
            raise ValueError(
                "scores of chosen items are raw summed log-probs; with renormalize=True they "
                "would not match the beam's scores (set model.renormalize false)"
            )
        codes = self.trie.item_codes.to(items.device)[items]
        lengths = self.trie.item_code_lengths.to(items.device)[items]
        mask = torch.arange(codes.shape[-1], device=items.device) < lengths.unsqueeze(-1)
        logp = completion_logprobs(self.policy, self.input_ids, self.attention_mask, codes, mask)
        return logp.sum(-1)


class ScoreTable:
    """Fixed item scores `[B, N]`; its beam is the exact top-W (ties broken by item index).

    Args:
        scores: `[B, N]` the score of every item per context.
    """

    def __init__(self, scores: Tensor) -> None:
        if scores.dim() != 2:
            raise ValueError(f"ScoreTable: scores must be [B, N], got {tuple(scores.shape)}")
        self.table = scores

    @property
    def num_items(self) -> int:
        return self.table.shape[-1]

    def beam(self, width: int) -> tuple[Tensor, Tensor]:
        # A stable descending sort breaks ties by item index, deterministically.
        order = torch.sort(self.table, dim=-1, descending=True, stable=True).indices[:, :width]
        return order, self.table.gather(-1, order)

    def scores(self) -> Tensor:
        return self.table.clone()

    def score(self, items: Tensor) -> Tensor:
        return self.table.gather(-1, items)
