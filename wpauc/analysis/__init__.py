"""wpauc.analysis: what an objective does in expectation, for contexts whose true next-item
distribution is known (the synthetic world). Pure torch, no Lightning."""

from wpauc.analysis.consistency import (
    expected_score_update,
    gated_window_update,
    lower_edge,
    order_report,
    simulate_tabular_policy,
    tabular_log_prob_update,
)
from wpauc.analysis.distribution import DIAGNOSTICS, distribution_diagnostics

__all__ = [
    "DIAGNOSTICS",
    "distribution_diagnostics",
    "expected_score_update",
    "gated_window_update",
    "lower_edge",
    "order_report",
    "simulate_tabular_policy",
    "tabular_log_prob_update",
]
