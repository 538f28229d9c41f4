"""The FPR window of WPAUC and TAWin, in one place.

A window is a range of false-positive rates `[alpha, alpha + d]`. Over a catalog with
n = N - 1 negatives per context it covers the 0-based negative-ranks `[lo, hi)` with
`lo = ceil(alpha n)` and `hi = ceil((alpha + d) n)`: the negatives the positive has to
out-rank for its ROC to reach TPR 1 inside the window. A window can also be aimed at a
Top-K: `Window.top_k(K, w)` covers negative-ranks `[K - 1, K - 1 + w)`, because the positive
is a hit at K exactly when it out-ranks the negative of rank K - 1.

The metrics (`WindowedPartialAUC`, `RankingMetrics`), the TAWin objective, the
LightningModule and the experiments all take their windows, rank bounds and metric keys
from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

TOLERANCE = 1e-9
"""Floating-point slack of window arithmetic: `alpha + d` may exceed 1 by this much (0.7 +
0.3), and a product within this distance above an integer counts as that integer when
turned into a rank (`ceil(0.1 * 30)` must be 3, not the 4 that 3.0000000000000004 gives)."""


def validate_window(alpha: float, d: float) -> tuple[float, float]:
    """Return `(alpha, d)` as floats, or raise ValueError unless `0 <= alpha`, `0 < d` and
    `alpha + d <= 1` (up to `TOLERANCE`)."""
    for name, value in (("alpha", alpha), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if d == 0:
        raise ValueError("d must be > 0: the window [alpha, alpha + d] is empty")
    if alpha + d > 1.0 + TOLERANCE:
        raise ValueError(f"alpha + d must be <= 1, got alpha={alpha!r} + d={d!r} = {alpha + d!r}")
    return float(alpha), float(d)


def rank_ceil(fraction: float, num_negatives: int) -> int:
    """`ceil(fraction * num_negatives)`, robust to floating point (see `TOLERANCE`)."""
    return max(0, math.ceil(fraction * num_negatives - TOLERANCE))


def window_bounds(num_negatives: int, alpha: float, d: float) -> tuple[int, int]:
    """0-based negative-ranks `[lo, hi)` of the FPR window `[alpha, alpha + d]`.

    The window may hold no negative when `d * n < 1`; callers that need one check `hi > lo`.
    """
    if num_negatives < 0:
        raise ValueError(f"window_bounds: num_negatives must be >= 0, got {num_negatives}")
    validate_window(alpha, d)
    hi = min(rank_ceil(alpha + d, num_negatives), num_negatives)
    return min(rank_ceil(alpha, num_negatives), hi), hi


def wpauc_key(alpha: float, d: float) -> str:
    """The metric name of WPAUC over `[alpha, alpha + d]`: `wpauc@[A,B]` printed with `:g`
    (`(0.001, 0.002)` -> `wpauc@[0.001,0.003]`)."""
    alpha, d = validate_window(alpha, d)
    return f"wpauc@[{alpha:g},{alpha + d:g}]"


@dataclass(frozen=True)
class Window:
    """A window given either by FPR `(alpha, d)` or by rank `(target_k, width)`.

    Build it with `Window.fpr(alpha, d)` or `Window.top_k(target_k, width)`; errors name
    the fields (`alpha`, `d`, `target_k`, `window_width`) so owners can prefix their key.
    """

    alpha: float | None = None
    d: float | None = None
    target_k: int | None = None
    width: int | None = None

    @classmethod
    def fpr(cls, alpha: float, d: float) -> Window:
        """The window FPR in `[alpha, alpha + d]`."""
        alpha, d = validate_window(alpha, d)
        return cls(alpha=alpha, d=d)

    @classmethod
    def top_k(cls, target_k: int, width: int) -> Window:
        """The `width` negative-ranks starting at `target_k - 1`, aimed at HR@target_k."""
        if isinstance(target_k, bool) or not isinstance(target_k, int) or target_k < 1:
            raise ValueError(f"target_k must be an integer >= 1, got {target_k!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"window_width must be an integer >= 1, got {width!r}")
        return cls(target_k=target_k, width=width)

    @property
    def by_rank(self) -> bool:
        """True for a window given by `(target_k, width)`."""
        return self.target_k is not None

    @property
    def max_rank(self) -> int | None:
        """`hi` of a rank window (known before the catalog is), None for an FPR window."""
        return None if self.target_k is None else self.target_k - 1 + self.width

    def ranks(self, num_negatives: int) -> tuple[int, int]:
        """Negative-ranks `[lo, hi)` for n = `num_negatives`; ValueError naming the field
        when the window does not fit that catalog or holds no negative."""
        if self.target_k is not None:
            lo, hi = self.target_k - 1, self.max_rank
            if self.target_k > num_negatives:
                raise ValueError(
                    f"target_k = {self.target_k} exceeds the catalog's {num_negatives} negatives"
                )
            if hi > num_negatives:
                raise ValueError(
                    f"window_width = {self.width}: window ranks [{lo}, {hi}) run past the "
                    f"catalog's {num_negatives} negatives"
                )
            return lo, hi
        lo, hi = window_bounds(num_negatives, self.alpha, self.d)
        if hi <= lo:
            raise ValueError(
                f"d = {self.d}: the window [ceil(alpha n), ceil((alpha + d) n)) = [{lo}, {hi}) "
                f"holds no negative for n = {num_negatives}"
            )
        return lo, hi

    def fractions(self, num_negatives: int) -> tuple[float, float]:
        """`(alpha, d)` of the window for n = `num_negatives` (e.g. for the WPAUC metric)."""
        if self.alpha is not None:
            return self.alpha, self.d
        lo, hi = self.ranks(num_negatives)
        return lo / num_negatives, (hi - lo) / num_negatives

    def metric_key(self, num_negatives: int) -> str:
        """The name of this window's WPAUC metric (see `wpauc_key`)."""
        return wpauc_key(*self.fractions(num_negatives))
