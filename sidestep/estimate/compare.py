"""Compare module configs: how much do two estimates agree on where to put the adapter?"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

import torch


@dataclass
class Comparison:
    a: str
    b: str
    overlap: int
    jaccard: float
    spearman: float | None  # over the modules both scored; None when fewer than two


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _ranks(values: list[float]) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), 1-based."""
    x = torch.tensor(values, dtype=torch.float64)
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for value in torch.unique(x):
        tie = x == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: dict[str, float], b: dict[str, float]) -> float | None:
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    ra, rb = _ranks([a[m] for m in common]), _ranks([b[m] for m in common])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.square().sum() * rb.square().sum()).sqrt()
    return float((ra * rb).sum() / denominator) if denominator > 0 else None


def compare(configs: dict[str, tuple[list[str], dict[str, float]]]) -> list[Comparison]:
    """Every pair of {name: (top_k, scores)}."""
    out = []
    for (na, (ta, sa)), (nb, (tb, sb)) in combinations(configs.items(), 2):
        out.append(Comparison(na, nb, len(set(ta) & set(tb)), jaccard(set(ta), set(tb)), spearman(sa, sb)))
    return out


_LAYER = re.compile(r"^layers\.(\d+)\.")


def per_layer_counts(top: list[str]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for name in top:
        if m := _LAYER.match(name):
            counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    return counts
