"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation") in pure torch.

The network is the paper's: item embeddings (plus one padding id) and learned positional
embeddings, then causal self-attention blocks, each made of self-attention and a point-wise
feed-forward network (two linear maps with a ReLU), both applied as the paper's residual
``x + Dropout(g(LayerNorm(x)))`` (pre-LN), and a final LayerNorm. An item's score after a
history is the dot product of the last position's hidden state with the item's embedding
(the embedding table is shared by input and output).

Training is the **full-softmax** variant: cross-entropy over the whole catalog at every
position of a training sample (a history of length L plus its target gives L next-item
targets). Later work showed it much stronger than the paper's binary cross-entropy with one
sampled negative per position (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss:
is BERT4Rec really better than SASRec?"); ``loss="bce"`` keeps the paper's loss, the
negative drawn uniformly among the items other than the position's target.

Model selection uses the project's exact metrics (:class:`wpauc.metrics.RankingMetrics`)
on the validation samples; the returned model is the epoch with the best valid NDCG@10.
Scores cover the whole catalog, like the counting baselines', so HR@K, NDCG@K and AUC are
exact. Fitting is deterministic given the seed on CPU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wpauc.data.catalog import Sample
from wpauc.metrics import RankingMetrics, WPAUCSpec

logger = logging.getLogger(__name__)

IGNORED_TARGET = -100
"""Target of a padding position (``F.cross_entropy``'s default ``ignore_index``)."""

EMBEDDING_INIT_STD = 0.02
"""Standard deviation of the initial item and position embeddings (as in BERT / GPT-2)."""

SELECTION_METRIC = "ndcg@10"
"""Valid metric that picks the best epoch and drives early stopping."""


@dataclass(frozen=True)
class SASRecConfig:
    """Hyperparameters of the network and of its fitting: the paper's sizes, with dropout 0.5
    (picked over 0.2 on Office_Products' valid NDCG@10)."""

    hidden_size: int = 64
    """Width of the embeddings and hidden states."""
    num_blocks: int = 2
    """Causal self-attention blocks."""
    num_heads: int = 1
    """Attention heads per block (must divide `hidden_size`)."""
    dropout: float = 0.5
    """Dropout on the embeddings, attention weights and both residual branches."""
    max_len: int = 10
    """Most recent history items the model reads (set it to the data's history length)."""
    loss: Literal["softmax", "bce"] = "softmax"
    """Full-softmax cross-entropy over the catalog, or the paper's BCE with one negative."""
    learning_rate: float = 1e-3
    """Adam step size."""
    weight_decay: float = 0.0
    """Adam's L2 penalty."""
    batch_size: int = 128
    """Training samples per step."""
    max_epochs: int = 200
    """Upper bound on the training epochs."""
    patience: int = 5
    """Epochs without a better valid NDCG@10 before training stops."""
    seed: int = 0
    """Seeds the initial weights, the shuffling, dropout and the sampled negatives."""
    device: str = "cpu"
    """Where to fit (fitting is only guaranteed deterministic on CPU)."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_blocks", "num_heads", "max_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"SASRecConfig: num_heads={self.num_heads} does not divide "
                f"hidden_size={self.hidden_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in ("softmax", "bce"):
            raise ValueError(f"SASRecConfig: loss must be 'softmax' or 'bce', got {self.loss!r}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("SASRecConfig: max_epochs and patience must be >= 1")


def left_padded(sequences: Sequence[Sequence[int]], width: int, fill: int) -> Tensor:
    """[S, width] long: the last `width` entries of each sequence, right-aligned, `fill`
    before them."""
    padded = torch.full((len(sequences), width), fill, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        recent = sequence[-width:]
        if recent:
            padded[row, width - len(recent) :] = torch.tensor(recent, dtype=torch.long)
    return padded


def training_tensors(
    samples: Sequence[Sample], max_len: int, padding_id: int
) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)``, both [S, max_len] long: each sample's history and, at every
    history position, the item that followed it (the next history item, then the target);
    `IGNORED_TARGET` at padding positions."""
    inputs = left_padded([sample.history for sample in samples], max_len, padding_id)
    # (*history, target)[1:] is as long as the history (empty for an empty one)
    following = [(*sample.history, sample.target)[1:] for sample in samples]
    return inputs, left_padded(following, max_len, IGNORED_TARGET)


def attention_allowed(is_padding: Tensor) -> Tensor:
    """[B, T, T] bool, query x key: causal, and never a padding key except the query itself,
    so that a padding query (e.g. an empty history) still attends somewhere (no NaN)."""
    length = is_padding.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=is_padding.device).tril()
    itself = torch.eye(length, dtype=torch.bool, device=is_padding.device)
    return causal & (~is_padding[:, None, :] | itself)


def next_item_loss(
    hidden: Tensor,
    item_embeddings: Tensor,
    targets: Tensor,
    loss: Literal["softmax", "bce"] = "softmax",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean next-item loss over the positions with a target.

    Args:
        hidden: [B, T, H] hidden states.
        item_embeddings: [N, H] the catalog's embeddings (the output layer).
        targets: [B, T] long, the next item at each position, `IGNORED_TARGET` elsewhere.
        loss: "softmax": cross-entropy of the full softmax over the N items; "bce": binary
            cross-entropy of the target against one negative drawn uniformly among the
            other N - 1 items.
        generator: draws the negatives (CPU) for "bce".
    """
    has_target = targets != IGNORED_TARGET
    states, positives = hidden[has_target], targets[has_target]
    if loss == "softmax":
        return F.cross_entropy(states @ item_embeddings.T, positives)
    num_items = item_embeddings.shape[0]
    # an offset in 1..N-1 from the target is uniform over the other items
    offsets = torch.randint(1, num_items, positives.shape, generator=generator)
    negatives = (positives + offsets.to(positives.device)) % num_items
    positive_logits = (states * item_embeddings[positives]).sum(-1)
    negative_logits = (states * item_embeddings[negatives]).sum(-1)
    return (F.softplus(-positive_logits) + F.softplus(negative_logits)).mean()


class CausalSelfAttentionBlock(nn.Module):
    """Self-attention then the point-wise feed-forward network, each as
    ``x + Dropout(g(LayerNorm(x)))``. As in the paper, the heads' outputs are concatenated
    without an output projection."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_dropout = dropout
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.query_key_value = nn.Linear(hidden_size, 3 * hidden_size)
        self.feed_forward_norm = nn.LayerNorm(hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, states: Tensor, allowed: Tensor) -> Tensor:
        """[B, T, H] states -> [B, T, H], attending where `allowed` [B, T, T] is True."""
        states = states + self.residual_dropout(self._attend(self.attention_norm(states), allowed))
        return states + self.residual_dropout(self.feed_forward(self.feed_forward_norm(states)))

    def _attend(self, states: Tensor, allowed: Tensor) -> Tensor:
        batch, length, width = states.shape
        query, key, value = (
            self.query_key_value(states)
            .view(batch, length, 3, self.num_heads, width // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=allowed[:, None],
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        return attended.transpose(1, 2).reshape(batch, length, width)


class SASRec(nn.Module):
    """The SASRec network over a catalog of `num_items` items (padding id `num_items`)."""

    def __init__(self, num_items: int, config: SASRecConfig) -> None:
        super().__init__()
        if num_items < 2:
            raise ValueError(f"SASRec: num_items must be >= 2, got {num_items}")
        self.num_items = num_items
        self.max_len = config.max_len
        self.item_embedding = nn.Embedding(
            num_items + 1, config.hidden_size, padding_idx=self.padding_id
        )
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(config.hidden_size, config.num_heads, config.dropout)
            for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(config.hidden_size)
        # torch's N(0, 1) embeddings would start the catalog logits at a spread of
        # sqrt(hidden_size); small ones start near the uniform softmax
        for embedding in (self.item_embedding, self.position_embedding):
            nn.init.normal_(embedding.weight, std=EMBEDDING_INIT_STD)
        with torch.no_grad():
            self.item_embedding.weight[self.padding_id].zero_()

    @property
    def padding_id(self) -> int:
        """Input id of an empty position (left padding)."""
        return self.num_items

    @property
    def item_embeddings(self) -> Tensor:
        """[N, H] the catalog's embeddings, without the padding row."""
        return self.item_embedding.weight[: self.num_items]

    def forward(self, items: Tensor) -> Tensor:
        """[B, T] item ids, left-padded with `padding_id`, T <= max_len -> [B, T, H] hidden
        states, position t reading items up to t."""
        length = items.shape[1]
        if length > self.max_len:
            raise ValueError(f"SASRec: {length} positions, more than max_len={self.max_len}")
        # positions count back from the most recent item, so the amount of left padding
        # never changes what a real position sees
        recency = torch.arange(length - 1, -1, -1, device=items.device)
        states = self.embedding_dropout(
            self.item_embedding(items) + self.position_embedding(recency)
        )
        allowed = attention_allowed(items == self.padding_id)
        for block in self.blocks:
            states = block(states, allowed)
        return self.final_norm(states)

    def score_histories(self, items: Tensor) -> Tensor:
        """[B, T] left-padded histories -> [B, N] scores of every item as the next one."""
        return self(items)[:, -1] @ self.item_embeddings.T


def sasrec_scores(
    model: SASRec, samples: Sequence[Sample], num_items: int, batch_size: int = 512
) -> Tensor:
    """[S, N] float (CPU) scores of every catalog item after each sample's history (its last
    `max_len` items), in eval mode."""
    if num_items != model.num_items:
        raise ValueError(
            f"sasrec_scores: num_items={num_items} but the model has {model.num_items}"
        )
    device = model.item_embedding.weight.device
    inputs = left_padded([sample.history for sample in samples], model.max_len, model.padding_id)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        scores = [
            model.score_histories(chunk.to(device)).cpu() for chunk in inputs.split(batch_size)
        ]
    model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0, num_items)


def sasrec_metrics(
    model: SASRec,
    samples: Sequence[Sample],
    top_k: Sequence[int] = (10,),
    windows: Sequence[Sequence[float]] = (),
    batch_size: int = 512,
) -> dict[str, float]:
    """The exact :class:`~wpauc.metrics.RankingMetrics` of the model on `samples`, scored a
    batch at a time (never the whole [S, N] at once)."""
    metrics = RankingMetrics(
        [
            *(f"{name}@{k}" for name in ("hr", "ndcg") for k in top_k),
            "auc",
            *(WPAUCSpec(*window) for window in windows),
        ]
    )
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        scores = sasrec_scores(model, chunk, model.num_items, batch_size)
        metrics.update(scores, torch.tensor([sample.target for sample in chunk]))
    return {name: float(value) for name, value in metrics.compute().items()}


def fit_sasrec(
    train: Sequence[Sample],
    valid: Sequence[Sample],
    num_items: int,
    config: SASRecConfig = SASRecConfig(),  # noqa: B008 - frozen dataclass, never mutated
) -> tuple[SASRec, list[dict[str, float]]]:
    """Fit SASRec on `train` with Adam, keeping the epoch with the best valid NDCG@10.

    Training stops after `config.patience` epochs without a better valid NDCG@10, or after
    `config.max_epochs`. Samples without history give no target and are skipped. The global
    CPU random state of torch is left as it was.

    Returns:
        The model in eval mode, holding the best epoch's weights, and one record per epoch:
        ``{"epoch", "loss" (mean training loss), "hr@10", "ndcg@10", "auc" (valid)}``.
    """
    if not valid:
        raise ValueError("fit_sasrec: no validation samples to select the epoch on")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        model = SASRec(num_items, config).to(config.device)
        inputs, targets = training_tensors(train, config.max_len, model.padding_id)
        has_target = (targets != IGNORED_TARGET).any(dim=1)
        inputs, targets = inputs[has_target], targets[has_target]
        if not len(inputs):
            raise ValueError("fit_sasrec: no training sample has a history")
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        history: list[dict[str, float]] = []
        best_state, best_value, epochs_since_best = None, -1.0, 0
        for epoch in range(config.max_epochs):
            model.train()
            loss_sum = 0.0
            for batch in torch.randperm(len(inputs), generator=generator).split(config.batch_size):
                hidden = model(inputs[batch].to(config.device))
                loss = next_item_loss(
                    hidden,
                    model.item_embeddings,
                    targets[batch].to(config.device),
                    config.loss,
                    generator,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch)
            record = {
                "epoch": epoch,
                "loss": loss_sum / len(inputs),
                **sasrec_metrics(model, valid),
            }
            history.append(record)
            logger.info(
                "SASRec epoch %d: loss %.4f, valid %s %.4f",
                epoch,
                record["loss"],
                SELECTION_METRIC,
                record[SELECTION_METRIC],
            )
            if record[SELECTION_METRIC] > best_value:
                best_state = copy.deepcopy(model.state_dict())
                best_value, epochs_since_best = record[SELECTION_METRIC], 0
            else:
                epochs_since_best += 1
                if epochs_since_best >= config.patience:
                    break
    model.load_state_dict(best_state)
    return model.eval(), history
