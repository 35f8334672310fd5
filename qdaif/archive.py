"""The MAP-Elites archive of texts: a pyribs GridArchive with explicit bin edges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ribs.archives import GridArchive

__all__ = ["EdgeGridArchive", "make_archive", "cells_of", "project_archive"]


class EdgeGridArchive(GridArchive):
    """A GridArchive whose cells are given by explicit (possibly non-uniform) edges.

    Bin ``k`` of an axis holds values in ``[edges[k], edges[k+1])``; the last bin also
    holds ``edges[-1]``, and values outside the edges fall in the outer bins. This is
    ``np.digitize`` on the interior edges, the rule of the QDAIF paper.

    Args:
        edges: One increasing sequence of bin boundaries per measure.
        **kwargs: Passed to :class:`ribs.archives.GridArchive` (not ``dims``/``ranges``).
    """

    def __init__(self, *, edges: Sequence[Sequence[float]], **kwargs) -> None:
        edges = [np.asarray(e, dtype=np.float64) for e in edges]
        super().__init__(dims=[len(e) - 1 for e in edges], ranges=[(e[0], e[-1]) for e in edges], **kwargs)
        # ribs draws heatmaps and reports `boundaries` from this private attribute (ribs 0.12).
        self._boundaries = [e.astype(self.dtypes["measures"]) for e in edges]
        self._edges = edges

    @property
    def edges(self) -> list[np.ndarray]:
        """The bin boundaries of each measure, float64."""
        return self._edges

    def index_of(self, measures) -> np.ndarray:
        """Returns the integer cell index of each row of ``measures``, shape ``(batch,)``.

        Raises:
            ValueError: ``measures`` is not ``(batch, measure_dim)`` or not finite.
        """
        measures = np.asarray(measures, dtype=np.float64)
        if measures.ndim != 2 or measures.shape[1] != self.measure_dim:
            raise ValueError(f"measures must have shape (batch, {self.measure_dim}), got {measures.shape}")
        if not np.all(np.isfinite(measures)):
            raise ValueError("measures must be finite")
        grid = np.stack(
            [np.searchsorted(e[1:-1], measures[:, i], side="right") for i, e in enumerate(self._edges)], axis=1
        )
        return self.grid_to_int_index(grid)

    def retessellate(self, new_dims):  # the base class would silently reset to uniform edges
        raise NotImplementedError("EdgeGridArchive has fixed edges")


def make_archive(edges: Sequence[Sequence[float]], *, seed: int | None = None) -> EdgeGridArchive:
    """Builds an empty archive of texts with the given bin edges.

    Each elite carries its candidate ``id`` and the ``iteration`` that produced it.
    """
    return EdgeGridArchive(
        edges=edges,
        solution_dim=(),
        solution_dtype=object,
        extra_fields={"id": ((), np.int64), "iteration": ((), np.int32)},
        seed=seed,
    )


def cells_of(archive: GridArchive, measures) -> np.ndarray:
    """Returns the grid cell (one bin index per measure) of each row, shape ``(batch, measure_dim)``."""
    return archive.int_to_grid_index(archive.index_of(measures))


def project_archive(archive: EdgeGridArchive, axes: Sequence[int]) -> EdgeGridArchive:
    """Returns a new archive over the measures ``axes`` holding, per cell, the best elite of ``archive`` there.

    Args:
        archive: An archive made by :func:`make_archive`.
        axes: Indices of the measures to keep, e.g. ``[1, 2]``.
    """
    out = make_archive([archive.edges[a] for a in axes], seed=0)
    d = archive.data()
    if len(d["index"]):
        out.add(solution=d["solution"], objective=d["objective"], measures=d["measures"][:, list(axes)],
                id=d["id"], iteration=d["iteration"])
    return out
