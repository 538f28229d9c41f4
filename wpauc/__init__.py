"""wpauc: LLM recommenders trained with RL, where the RL objective is a ranking objective.

GRPO with random negatives maximises AUC, beam-search negatives give partial AUC, and
TAWin optimises a windowed partial AUC aimed at a chosen Top-K.
"""

__version__ = "0.1.0"
