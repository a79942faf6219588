"""Which types a ``.skops`` file may contain without ``--trust``.

skops rebuilds objects from a JSON schema; a type it does not trust by
default can be any importable callable (``numpy.testing`` has one that calls
``exec``). We add only the exact type names below, each reviewed: they are
scikit-learn's Cython data structures that skops restores from their
``__getstate__`` arrays, and plain containers. Never a prefix: a prefix such
as ``sklearn.`` or ``numpy.`` also admits testing helpers that run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zeroserve.errors import UntrustedArtifact, require

_DIST_METRICS = (
    "Euclidean",
    "SEuclidean",
    "Manhattan",
    "Chebyshev",
    "Minkowski",
    "Mahalanobis",
    "Hamming",
    "Canberra",
    "BrayCurtis",
    "Jaccard",
    "Matching",
    "Dice",
    "Kulsinski",
    "RogersTanimoto",
    "RussellRao",
    "SokalMichener",
    "SokalSneath",
    "Haversine",
)

REVIEWED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.utils._bunch.Bunch",
        *(
            f"sklearn.metrics._dist_metrics.{name}Distance{bits}"
            for name in _DIST_METRICS
            for bits in ("32", "64")
        ),
    }
)
"""Type names a skops file may hold beyond skops' own defaults, without --trust."""


def untrusted_types(path: Path) -> list[str]:
    """Types in the file that neither skops' defaults nor our reviewed list trust."""
    sio = require("skops.io", "sklearn")
    found: list[str] = sio.get_untrusted_types(file=str(path))
    return sorted(t for t in found if t not in REVIEWED_TYPES)


def load_skops(path: Path, trusted: bool) -> Any:
    """Load a skops file; types outside the trusted set need ``trusted``."""
    sio = require("skops.io", "sklearn")
    found: list[str] = sio.get_untrusted_types(file=str(path))
    foreign = sorted(t for t in found if t not in REVIEWED_TYPES)
    if foreign and not trusted:
        raise UntrustedArtifact(
            f"{path.name} contains types zeroserve does not trust: {', '.join(foreign)}. "
            "Loading them can run code from the file; review them and register with "
            "--trust only if you produced the file yourself",
            untrusted_types=foreign,
        )
    allowed = [t for t in found if t in REVIEWED_TYPES or trusted]
    return sio.load(str(path), trusted=allowed or None)
