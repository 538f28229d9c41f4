"""A seeded synthetic world whose true next-item distribution is known exactly.

Items are the leaves of a 3-level tree: `num_categories` categories, each with
`subcategories_per_category` subcategories, the `num_items` items spread over the
subcategories in contiguous blocks as evenly as possible. An item's natural SID is its path,
`<a_category><b_subcategory><c_leaf>`, and its title is `"cat{c} sub{j} item{k}"`.

Latent state (all drawn from `numpy.random.default_rng(seed)`, reproducible across platforms):
- item popularity `pop_i = exp(popularity_scale * z_i)`, z_i ~ N(0, 1), and its share
  inside its subcategory `q_i = pop_i / sum of pop over the subcategory`;
- subcategory weights `phi` inside each category, Dirichlet(1);
- a successor subcategory `succ(s) != s` for every subcategory (sequential dynamics,
  "printer then ink");
- per user, a taste `theta_u` over categories, Dirichlet(taste_concentration).

Each user has a sequence of `L ~ Uniform{min_sequence_length..max_sequence_length}` distinct
items. The first item is drawn from the taste distribution
`U_u(i) = theta_u[cat(i)] * phi[sub(i)] * q_i`; every later item, given the last item l
and the set of items seen so far, from

    P(i) ∝ [ w * T(i | l) + (1 - w) * U_u(i) ] * 1[i not seen]
    T(i | l) = rho * q_i * 1[sub(i) = sub(l)] + (1 - rho) * q_i * 1[sub(i) = succ(sub(l))]

with w = `sequential_weight` and rho = `same_subcategory_prob`. So the last item, the
user's taste (readable from the history) and popularity all carry signal.

Samples are MiniOneRec style: the item at position t is the target and the previous <=
`max_history` items are the history. Split: leave-one-out per user, the last item is the
test target, the one before it the valid target, and every earlier position t >= 1 gives
a train sample. `RecData.true_next_item_probs["valid" / "test"]` holds P for every
evaluation sample: the exact distribution the target was drawn from given the generator's
full state (the user's taste and all items seen). Ranking items by it gives the
Bayes-optimal expected HR@K / NDCG@K, a ceiling no model of the history can beat in
expectation (see `bayes_optimal_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wpauc.data.catalog import Catalog, RecData, Sample
from wpauc.data.readers import RecSource


@dataclass
class _World:
    """The generator's latent state, item-level quantities in catalog order."""

    subcategory: np.ndarray
    """[N] subcategory of each item."""
    within_share: np.ndarray
    """[N] popularity share q_i of each item inside its subcategory."""
    successor: np.ndarray
    """[S] successor subcategory of each subcategory."""
    taste: np.ndarray
    """[num_users, N] taste distribution U_u over items."""


@dataclass
class SyntheticSource(RecSource):
    """The synthetic world (see the module docstring); defaults run fast on 2 CPU cores."""

    num_items: int = 1024
    """Catalog size N."""
    num_users: int = 3000
    """Number of users (each gives one valid and one test sample)."""
    num_categories: int = 8
    """Top-level categories (first SID token)."""
    subcategories_per_category: int = 8
    """Subcategories in each category (second SID token)."""
    min_sequence_length: int = 5
    """Shortest user sequence (>= 3: one valid, one test, at least one earlier item)."""
    max_sequence_length: int = 20
    """Longest user sequence (at most N)."""
    max_history: int = 10
    """Most recent items kept as a sample's history."""
    popularity_scale: float = 1.0
    """Standard deviation of the log-popularity of items."""
    taste_concentration: float = 0.3
    """Dirichlet concentration of user taste over categories (smaller: narrower taste)."""
    sequential_weight: float = 0.6
    """Weight of the transition from the last item against the user's taste, in [0, 1]."""
    same_subcategory_prob: float = 0.5
    """Share of the transition that stays in the last item's subcategory, in [0, 1]."""
    seed: int = 0
    """Seed of the generator; the same seed gives the same world."""

    def __post_init__(self) -> None:
        num_subcategories = self.num_subcategories
        if self.num_categories < 1 or self.subcategories_per_category < 1:
            raise ValueError("num_categories and subcategories_per_category must be >= 1")
        if num_subcategories < 2:
            raise ValueError("need at least 2 subcategories for successor transitions")
        if self.num_items < num_subcategories:
            raise ValueError(
                f"num_items={self.num_items} must be >= num_categories * "
                f"subcategories_per_category = {num_subcategories}"
            )
        if not 3 <= self.min_sequence_length <= self.max_sequence_length <= self.num_items:
            raise ValueError(
                "need 3 <= min_sequence_length <= max_sequence_length <= num_items, got "
                f"{self.min_sequence_length}, {self.max_sequence_length}, {self.num_items}"
            )
        if self.num_users < 1 or self.max_history < 1:
            raise ValueError("num_users and max_history must be >= 1")
        for name in ("sequential_weight", "same_subcategory_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.taste_concentration <= 0 or self.popularity_scale < 0:
            raise ValueError("taste_concentration must be > 0 and popularity_scale >= 0")

    @property
    def num_subcategories(self) -> int:
        """Subcategories in the whole tree."""
        return self.num_categories * self.subcategories_per_category

    def _catalog(self) -> tuple[Catalog, np.ndarray]:
        """The tree catalog and the subcategory of every item."""
        block, extra = divmod(self.num_items, self.num_subcategories)
        subcategory, sids, titles = [], [], []
        for s in range(self.num_subcategories):
            category, sub = divmod(s, self.subcategories_per_category)
            for leaf in range(block + (1 if s < extra else 0)):
                subcategory.append(s)
                sids.append((f"<a_{category}>", f"<b_{sub}>", f"<c_{leaf}>"))
                titles.append(f"cat{category} sub{sub} item{leaf}")
        catalog = Catalog(
            item_ids=tuple(range(self.num_items)), titles=tuple(titles), sids=tuple(sids)
        )
        return catalog, np.array(subcategory)

    def _world(self, subcategory: np.ndarray, rng: np.random.Generator) -> _World:
        popularity = np.exp(self.popularity_scale * rng.standard_normal(self.num_items))
        subcategory_total = np.bincount(subcategory, weights=popularity)
        within_share = popularity / subcategory_total[subcategory]
        phi = rng.dirichlet(np.ones(self.subcategories_per_category), size=self.num_categories)
        offset = rng.integers(1, self.num_subcategories, size=self.num_subcategories)
        successor = (np.arange(self.num_subcategories) + offset) % self.num_subcategories
        taste = rng.dirichlet(
            np.full(self.num_categories, self.taste_concentration), size=self.num_users
        )
        category = subcategory // self.subcategories_per_category
        item_taste = taste[:, category] * (phi.reshape(-1)[subcategory] * within_share)
        return _World(subcategory, within_share, successor, item_taste)

    def _next_item_probs(
        self, world: _World, users: np.ndarray, last: np.ndarray, seen: np.ndarray
    ) -> np.ndarray:
        """[B, N] exact next-item distribution given users, their last items and seen masks."""
        last_subcategory = world.subcategory[last][:, None]
        same = world.subcategory[None, :] == last_subcategory
        follow = world.subcategory[None, :] == world.successor[last_subcategory]
        rho, weight = self.same_subcategory_prob, self.sequential_weight
        transition = (rho * same + (1 - rho) * follow) * world.within_share[None, :]
        probs = np.where(seen, 0.0, weight * transition + (1 - weight) * world.taste[users])
        return probs / probs.sum(axis=1, keepdims=True)

    def load(self) -> RecData:
        rng = np.random.default_rng(self.seed)
        catalog, subcategory = self._catalog()
        world = self._world(subcategory, rng)
        lengths = rng.integers(
            self.min_sequence_length, self.max_sequence_length + 1, size=self.num_users
        )
        sequences = np.zeros((self.num_users, self.max_sequence_length), dtype=np.int64)
        seen = np.zeros((self.num_users, self.num_items), dtype=bool)
        eval_probs = {split: np.zeros(seen.shape) for split in ("valid", "test")}
        for step in range(self.max_sequence_length):
            users = np.flatnonzero(lengths > step)
            if step == 0:
                probs = world.taste[users]
            else:
                probs = self._next_item_probs(world, users, sequences[users, step - 1], seen[users])
            items = _sample_rows(probs, rng)
            sequences[users, step] = items
            seen[users, items] = True
            for split, position in (("valid", lengths[users] - 2), ("test", lengths[users] - 1)):
                at_step = position == step
                eval_probs[split][users[at_step]] = probs[at_step]
        splits: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
        for user, (sequence, length) in enumerate(
            zip(sequences.tolist(), lengths.tolist(), strict=True)
        ):
            for position in range(1, length):
                # the last position is the test target, the one before it the valid target
                split = ("train", "valid", "test")[max(0, position - length + 3)]
                history = tuple(sequence[max(0, position - self.max_history) : position])
                splits[split].append(Sample(f"u{user}", history, sequence[position]))
        true_probs = {split: torch.from_numpy(probs).float() for split, probs in eval_probs.items()}
        return RecData(catalog=catalog, true_next_item_probs=true_probs, **splits)


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of `probs` (rows sum to 1), by inverting the row's CDF."""
    cdf = np.cumsum(probs, axis=1)
    # u in (0, total]: the first index whose CDF reaches u always has positive probability.
    u = (1.0 - rng.random(len(probs))) * cdf[:, -1]
    return (cdf < u[:, None]).sum(axis=1)


def bayes_optimal_scores(data: RecData, split: str) -> torch.Tensor:
    """[S, N] true next-item probabilities of every sample of `split` (synthetic world only).

    Ranking by them maximises expected HR@K and NDCG@K, so their metrics are the ceiling
    for any model of the history.
    """
    if data.true_next_item_probs is None or split not in data.true_next_item_probs:
        raise ValueError(
            f"no true next-item probabilities for split {split!r}; only the synthetic world "
            "(wpauc.data.SyntheticSource) provides them, for 'valid' and 'test'"
        )
    return data.true_next_item_probs[split]
