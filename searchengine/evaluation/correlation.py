"""Correlation of a metric with human ratings: Pearson, Spearman and Kendall tau-c.

The CLIPScore paper (Hessel et al., 2021) reports Kendall's tau-c against Flickr8k-Expert
ratings, because tau-c (Stuart's tau) corrects for the many ties a 1-4 rating scale has.
Definitions, for ``n`` pairs ``(x_i, y_i)``:

- Pearson r: covariance over the product of standard deviations.
- Spearman rho: Pearson r of the ranks, tied values sharing their average rank.
- Kendall tau-c: ``2 (C - D) / (n^2 (m - 1) / m)`` with ``C``/``D`` the concordant and
  discordant pairs (pairs tied in ``x`` or ``y`` are neither) and ``m`` the smaller number
  of distinct values of ``x`` and ``y``.

All three match ``scipy.stats`` (``pearsonr``, ``spearmanr``, ``kendalltau(variant="c")``)
without depending on scipy; a constant input gives NaN, as scipy does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Correlations", "correlations", "kendall_tau_c", "pearson", "spearman"]


@dataclass(frozen=True)
class Correlations:
    """The three coefficients between a metric and human ratings, and ``n`` pairs."""

    pearson: float
    spearman: float
    kendall_tau_c: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return dict(self.__dict__)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson's r; NaN when fewer than two pairs or either input is constant."""
    a, b = _pair(x, y)
    if len(a) < 2:
        return math.nan
    if np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan  # tested before centring: a mean can round off a constant
    a, b = a - a.mean(), b - b.mean()
    scale_a, scale_b = float(np.abs(a).max()), float(np.abs(b).max())
    # Scaling to unit max keeps tiny (even subnormal) or huge values from under/overflowing.
    a, b = a / scale_a, b / scale_b
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return max(-1.0, min(1.0, float(a @ b) / norm))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho: Pearson's r of average ranks."""
    a, b = _pair(x, y)
    return pearson(_average_ranks(a), _average_ranks(b))


def kendall_tau_c(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-c (Stuart's tau), as ``scipy.stats.kendalltau(x, y, variant="c")``."""
    a, b = _pair(x, y)
    n = len(a)
    if n < 2:
        return math.nan
    xr, yr = _dense_ranks(a), _dense_ranks(b)
    classes = min(int(xr.max()) + 1, int(yr.max()) + 1)
    if classes < 2:
        return math.nan
    order = np.lexsort((yr, xr))  # by x, then y: ties in x never look discordant
    xs, ys = xr[order], yr[order]
    discordant = _inversions(ys)
    tied_both = _tied_pairs(xs * (int(yr.max()) + 1) + ys)
    total = n * (n - 1) // 2
    concordant_minus_discordant = (
        total - _tied_pairs(xr) - _tied_pairs(yr) + tied_both - 2 * discordant
    )
    return 2.0 * concordant_minus_discordant / (n * n * (classes - 1) / classes)


def correlations(
    metric: Sequence[float] | np.ndarray, ratings: Sequence[float] | np.ndarray
) -> Correlations:
    """All three coefficients between a metric and human ratings."""
    a, b = _pair(metric, ratings)
    return Correlations(pearson(a, b), spearman(a, b), kendall_tau_c(a, b), len(a))


def _pair(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"need equal lengths, got {a.size} and {b.size}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("inputs contain NaN")
    return a, b


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    dense = _dense_ranks(values)
    # Every member of a tie group gets the mean of the positions the group occupies.
    sums = np.bincount(dense, weights=ranks)
    counts = np.bincount(dense)
    return sums[dense] / counts[dense]


def _dense_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks where equal values share one rank and ranks have no gaps."""
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64).ravel()


def _tied_pairs(labels: np.ndarray) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(values: np.ndarray) -> int:
    """Pairs ``i < j`` with ``values[i] > values[j]``, by a Fenwick tree: O(n log n)."""
    size = int(values.max()) + 1
    tree = [0] * (size + 1)
    inversions = 0
    for seen, value in enumerate(values.tolist()):
        # Count earlier values <= value, then everything else seen is greater.
        i, not_greater = value + 1, 0
        while i > 0:
            not_greater += tree[i]
            i -= i & -i
        inversions += seen - not_greater
        i = value + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return inversions
