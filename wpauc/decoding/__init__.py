"""Decoding over the catalog: the item trie, trie-constrained batched beam search, exact
scoring of every item, the exact rank of a positive by threshold-pruned trie expansion, the
`ItemScorer` that objectives rank with, and the shared-prompt group forward used by the RL
losses."""

from wpauc.decoding.beam_search import constrained_beam_search
from wpauc.decoding.group_forward import completion_logprobs
from wpauc.decoding.pruned_ranking import PositiveRankCounts, exact_positive_ranks
from wpauc.decoding.scorer import ItemScorer, PolicyScorer, ScoreTable
from wpauc.decoding.scoring import score_items
from wpauc.decoding.trie import ItemTrie

__all__ = [
    "ItemScorer",
    "ItemTrie",
    "PolicyScorer",
    "PositiveRankCounts",
    "ScoreTable",
    "completion_logprobs",
    "constrained_beam_search",
    "exact_positive_ranks",
    "score_items",
]
