"""Sets of half-open integer intervals: the algebra behind range derivation.

Endpoints are integers on one time axis (nanoseconds, or a column's own unit), with
``-inf`` / ``inf`` standing for "no bound on that side".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

Endpoint = int | float  # an int, or -math.inf / math.inf


@dataclass(frozen=True)
class IntervalSet:
    """A union of disjoint, sorted, non-empty half-open intervals ``[lo, hi)``."""

    pieces: tuple[tuple[Endpoint, Endpoint], ...]

    @classmethod
    def of(cls, pieces: Iterable[tuple[Endpoint, Endpoint]]) -> IntervalSet:
        merged: list[tuple[Endpoint, Endpoint]] = []
        for lo, hi in sorted(p for p in pieces if p[0] < p[1]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return cls(tuple(merged))

    @classmethod
    def everything(cls) -> IntervalSet:
        return cls(((-math.inf, math.inf),))

    @property
    def is_bounded(self) -> bool:
        return not self.pieces or (
            math.isfinite(self.pieces[0][0]) and math.isfinite(self.pieces[-1][1])
        )

    @property
    def lower_bounded(self) -> bool:
        return not self.pieces or math.isfinite(self.pieces[0][0])

    def union(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(self.pieces + other.pieces)

    def intersect(self, other: IntervalSet) -> IntervalSet:
        out = []
        for a_lo, a_hi in self.pieces:
            for b_lo, b_hi in other.pieces:
                out.append((max(a_lo, b_lo), min(a_hi, b_hi)))
        return IntervalSet.of(out)

    def rescale(self, unit: int) -> IntervalSet:
        """Map a set over integers ``x`` to the integers ``v`` with ``v * unit`` in it.

        Exact: ``v * unit >= lo`` iff ``v >= ceil(lo / unit)``, likewise for ``hi``.
        """
        return IntervalSet.of((_ceil_div(lo, unit), _ceil_div(hi, unit)) for lo, hi in self.pieces)

    def __iter__(self) -> Iterator[tuple[Endpoint, Endpoint]]:
        return iter(self.pieces)


def _ceil_div(x: Endpoint, unit: int) -> Endpoint:
    return x if not math.isfinite(x) else -((-int(x)) // unit)
