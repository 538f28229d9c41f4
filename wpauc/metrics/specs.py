"""Metric specs: what `RankingMetrics` reports, one small object per metric.

A spec is one metric: its key in the logs (``hr@10``, ``ndcg@5``, ``auc``,
``wpauc@[0,0.01]``), its per-user value from the positive's counts (a functional of
:mod:`wpauc.metrics.functional`) and its ``cutoff``, the K of a metric of the top K, which
says whether counts cut at a rank cap still give it. Configs write specs as their keys
(``model.metrics: [hr@10, ndcg@10, auc, "wpauc@[0,0.01]"]``); :func:`metric_spec` reads a key
back into its spec.

A new metric is its functional and its spec: a subclass of :class:`MetricSpec` (or of
:class:`TopKSpec` for a metric of the top K) with a ``family``, the name before the ``@``.
Defining the class registers the family, so its keys parse, `RankingMetrics` and the
LightningModule report it, and a metric of the top K gets its curve in the callbacks' figure
of metric@K against K.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from wpauc.metrics.functional import (
    PositiveRanks,
    auc_from_ranks,
    hit_rate_from_ranks,
    ndcg_from_ranks,
    validate_top_k,
    windowed_partial_auc_from_ranks,
)
from wpauc.window import validate_window, wpauc_key

#: The metrics the LightningModule reports unless told otherwise (``model.metrics``).
DEFAULT_METRICS = (
    *(f"hr@{k}" for k in (1, 3, 5, 10, 20)),
    *(f"ndcg@{k}" for k in (1, 3, 5, 10, 20)),
    "auc",
    "wpauc@[0,0.01]",
    "wpauc@[0,0.05]",
)


class MetricSpec(ABC):
    """One reported metric. Subclasses are frozen dataclasses that set ``family``.

    A spec is called on a batch's :class:`~wpauc.metrics.functional.PositiveRanks` and
    returns the ``[B]`` per-user values that `RankingMetrics` averages.
    """

    family: ClassVar[str]
    """The key's name: ``hr`` of ``hr@10``, or the whole key of a metric without argument
    (``auc``). Unique among the specs; defining the class registers it for `metric_spec`."""

    _by_family: ClassVar[dict[str, type[MetricSpec]]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        family = cls.__dict__.get("family")
        if family is None:
            return
        registered = MetricSpec._by_family.get(family)
        if registered is not None and registered.__qualname__ != cls.__qualname__:
            raise TypeError(f"metric family {family!r} is already {registered.__name__}'s")
        MetricSpec._by_family[family] = cls

    @property
    @abstractmethod
    def key(self) -> str:
        """The metric's name in the logs, without the ``val/`` or ``test/`` prefix."""

    @property
    def cutoff(self) -> int | None:
        """K of a metric of the top K: counts cut at any rank cap >= K give it exactly (the
        contexts beyond the cap are outside the top K). None: it needs every count."""
        return None

    @abstractmethod
    def __call__(self, ranks: PositiveRanks) -> Tensor:
        """``[B]`` float32 per-user values of the metric."""

    @classmethod
    @abstractmethod
    def parse(cls, argument: str | None) -> MetricSpec:
        """The spec of the key ``<family>@<argument>`` (``argument`` None: the key is the
        family alone); ValueError when the argument does not fit."""


@dataclass(frozen=True)
class TopKSpec(MetricSpec):
    """Base of the metrics of the top K, keyed ``<family>@K``; a subclass sets ``family``
    and ``__call__``."""

    k: int
    """The cut-off, an integer >= 1."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", validate_top_k(self.k))

    @property
    def key(self) -> str:
        return f"{self.family}@{self.k}"

    @property
    def cutoff(self) -> int:
        return self.k

    @classmethod
    def parse(cls, argument: str | None) -> TopKSpec:
        if argument is None or not argument.strip().isdigit():
            raise ValueError(f"{cls.family}@K needs an integer K >= 1, got {argument!r}")
        return cls(int(argument))


@dataclass(frozen=True)
class HitRateSpec(TopKSpec):
    """``hr@K``: 1 when the positive is in the top K, ties counted against it."""

    family: ClassVar[str] = "hr"

    def __call__(self, ranks: PositiveRanks) -> Tensor:
        return hit_rate_from_ranks(ranks, self.k)


@dataclass(frozen=True)
class NDCGSpec(TopKSpec):
    """``ndcg@K`` with one relevant item."""

    family: ClassVar[str] = "ndcg"

    def __call__(self, ranks: PositiveRanks) -> Tensor:
        return ndcg_from_ranks(ranks, self.k)


@dataclass(frozen=True)
class AUCSpec(MetricSpec):
    """``auc``: the positive's ROC AUC against the rest of the catalog (a tie counts 1/2)."""

    family: ClassVar[str] = "auc"

    @property
    def key(self) -> str:
        return "auc"

    def __call__(self, ranks: PositiveRanks) -> Tensor:
        return auc_from_ranks(ranks)

    @classmethod
    def parse(cls, argument: str | None) -> AUCSpec:
        if argument is not None:
            raise ValueError(f"auc takes no argument, got auc@{argument}")
        return cls()


@dataclass(frozen=True)
class WPAUCSpec(MetricSpec):
    """``wpauc@[A,B]``: the mean TPR over the FPR window ``[alpha, alpha + d]``, keyed with
    ``A = alpha`` and ``B = alpha + d`` printed with ``:g`` (`wpauc.window.wpauc_key`)."""

    alpha: float
    """The window's start (FPR), in [0, 1]."""
    d: float
    """The window's width, in (0, 1], ``alpha + d <= 1``."""

    family: ClassVar[str] = "wpauc"

    def __post_init__(self) -> None:
        alpha, d = validate_window(self.alpha, self.d)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "d", d)

    @classmethod
    def between(cls, start: float, end: float) -> WPAUCSpec:
        """The window ``[start, end]``: ``d`` such that ``alpha + d`` is ``end`` itself in
        floating point (the functional reads the window as ``alpha`` and ``alpha + d``), so a
        key written with every digit (``repr``) gives exactly the window it was written from."""
        start, end = float(start), float(end)
        d = end - start
        for _ in range(4):  # the sum is off by at most an ulp or two
            if start + d == end or not math.isfinite(d):
                break
            d = math.nextafter(d, math.inf if start + d < end else -math.inf)
        return cls(start, d)

    @property
    def key(self) -> str:
        return wpauc_key(self.alpha, self.d)

    def __call__(self, ranks: PositiveRanks) -> Tensor:
        return windowed_partial_auc_from_ranks(ranks, self.alpha, self.d)

    @classmethod
    def parse(cls, argument: str | None) -> WPAUCSpec:
        bounds = None if argument is None else argument.strip()
        if not bounds or bounds[0] != "[" or bounds[-1] != "]" or bounds.count(",") != 1:
            raise ValueError(f"wpauc needs its FPR window as wpauc@[A,B], got {argument!r}")
        try:
            start, end = (float(bound) for bound in bounds[1:-1].split(","))
        except ValueError:
            raise ValueError(
                f"wpauc@[A,B] needs two numbers A < B in [0, 1], got {argument!r}"
            ) from None
        return cls.between(start, end)


def metric_spec(metric: str | MetricSpec) -> MetricSpec:
    """The spec of a key (``"hr@10"``, ``"ndcg@5"``, ``"auc"``, ``"wpauc@[0,0.01]"``, or any
    registered family); a spec is returned as it is. ValueError names the key."""
    if isinstance(metric, MetricSpec):
        return metric
    if not isinstance(metric, str):
        raise ValueError(f"a metric is a key such as 'hr@10' or a MetricSpec, got {metric!r}")
    family, at, argument = metric.strip().partition("@")
    spec_class = MetricSpec._by_family.get(family)
    if spec_class is None:
        known = ", ".join(sorted(MetricSpec._by_family))
        raise ValueError(f"unknown metric {metric!r}: the metric families are {known}")
    try:
        return spec_class.parse(argument if at else None)
    except ValueError as error:
        raise ValueError(f"metric {metric!r}: {error}") from None


def metric_specs(metrics: Sequence[str | MetricSpec]) -> list[MetricSpec]:
    """The specs of ``metrics`` (see :func:`metric_spec`); ValueError on a bad or repeated
    one."""
    if isinstance(metrics, (str, MetricSpec)):
        raise ValueError(f"metrics must be a list of metrics, got {metrics!r}")
    specs = [metric_spec(metric) for metric in metrics]
    keys = [spec.key for spec in specs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"metrics repeat {duplicates}")
    return specs


def metric_columns(
    results: Iterable[Mapping[str, object]], wanted: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The metric keys that at least one of ``results`` (dicts of logged values, without the
    ``val/`` or ``test/`` prefix) holds: the columns of a report of those results.

    Args:
        results: the results (e.g. each run's test metrics).
        wanted: the keys to keep, in this order, when present; None: every metric key present
            (keys that are no metric, such as ``expected_hr@10`` or ``epoch``, are left out),
            by family in the order the specs were defined (hr, ndcg, auc, wpauc, then any
            new one), then by K or window.
    """
    present = {key for result in results for key in result}
    if wanted is not None:
        return tuple(key for key in wanted if key in present)
    families = list(MetricSpec._by_family)
    specs = []
    for key in present:
        try:
            spec = metric_spec(key)
        except ValueError:
            continue
        if spec.key == key:
            specs.append(spec)

    def order(spec: MetricSpec) -> tuple:
        window = (spec.alpha, spec.d) if isinstance(spec, WPAUCSpec) else ()
        return (families.index(spec.family), spec.cutoff or 0, window)

    return tuple(spec.key for spec in sorted(specs, key=order))


__all__ = [
    "AUCSpec",
    "DEFAULT_METRICS",
    "HitRateSpec",
    "MetricSpec",
    "NDCGSpec",
    "TopKSpec",
    "WPAUCSpec",
    "metric_columns",
    "metric_spec",
    "metric_specs",
]
