"""The benchmarks' interval of a median: the order statistics of the sample that the binomial law gives."""

from __future__ import annotations

import math
import random

import pytest

from bench.common import median_interval


@pytest.mark.parametrize(
    ("n", "ranks"),
    # The textbook ranks (1-based) of a 95 % interval of the median: 6-15 of 20, 22-39 of 60, 1-6 of 6.
    [(20, (6, 15)), (60, (22, 39)), (6, (1, 6))],
)
def test_the_interval_is_the_order_statistics_of_the_binomial_law(n: int, ranks: tuple[int, int]) -> None:
    values = [float(v) for v in range(1, n + 1)]
    random.Random(n).shuffle(values)
    assert median_interval(values) == (float(ranks[0]), float(ranks[1]))


def test_the_interval_holds_at_least_its_confidence() -> None:
    for n in (6, 20, 60, 101):
        low, high = median_interval(list(range(n)))
        j = int(low) + 1  # rank of the low end
        miss_below = sum(math.comb(n, r) for r in range(j)) / 2.0**n
        assert 1.0 - 2.0 * miss_below >= 0.95
        assert high == n - j  # symmetric: ranks j and n + 1 - j


def test_too_few_values_for_the_confidence_give_no_interval() -> None:
    low, high = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])  # 5 values: even the extremes miss 1/16 of the time
    assert math.isnan(low) and math.isnan(high)
    assert median_interval([1.0, 2.0, 3.0], confidence=0.5) == (1.0, 3.0)


def test_a_long_run_gets_its_interval_too() -> None:
    # 2,000 frames: the binomial counts exceed a float's range (2**2000); the ranks are those of the normal
    # approximation, n/2 -/+ 1.96 sqrt(n)/2 (956 and 1045).
    low, high = median_interval(list(range(1, 2001)))
    assert abs(low - 956) <= 1 and abs(high - 1045) <= 1
