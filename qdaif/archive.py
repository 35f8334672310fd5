"""The MAP-Elites archive of texts: a pyribs GridArchive with explicit bin edges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ribs.archives import GridArchive

__all__ = ["EdgeGridArchive", "make_archive", "cells_of", "project_archive", "archive_state", "restore_archive"]


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


def archive_state(archive: EdgeGridArchive) -> dict:
    """The contents of an archive made by :func:`make_archive`, as checkpoint data.

    Returns:
        ``solution`` (a list of ``n`` texts), ``objective`` ``(n,)``, ``measures``
        ``(n, measure_dim)``, ``id`` ``(n,)``, ``iteration`` ``(n,)`` in the archive's own
        order, and ``objective_sum``, the running sum behind its QD score.

    Raises:
        TypeError: A solution is not a string.
    """
    d = archive.data()
    texts = [s for s in d["solution"]]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("archive solutions must be texts to be checkpointed")
    return {"solution": texts, "objective": d["objective"], "measures": d["measures"], "id": d["id"],
            "iteration": d["iteration"], "objective_sum": float(getattr(archive, "_objective_sum", archive.stats.qd_score))}


def restore_archive(archive: EdgeGridArchive, state: dict) -> None:
    """Refills an empty archive from :func:`archive_state` so that it behaves exactly as the saved one.

    Elites are added in runs of increasing cell index, which keeps pyribs' storage order
    (and so every later draw over ``archive.data()``); the running objective sum is
    restored so that QD scores continue bit for bit.

    Raises:
        ValueError: The state does not fit the archive (shapes, or an elite per cell).
    """
    texts = np.array(list(state["solution"]), dtype=object)
    objective = np.asarray(state["objective"], dtype=np.float64)
    measures = np.asarray(state["measures"], dtype=np.float64).reshape(len(texts), archive.measure_dim)
    ids = np.asarray(state["id"], dtype=np.int64)
    iterations = np.asarray(state["iteration"], dtype=np.int32)
    if not len(objective) == len(ids) == len(iterations) == len(texts):
        raise ValueError("archive fields of different lengths")
    index = archive.index_of(measures) if len(texts) else np.zeros(0, dtype=np.int64)
    if len(np.unique(index)) != len(index):
        raise ValueError("two elites in one cell")
    breaks = np.flatnonzero(np.diff(index) <= 0) + 1
    for part in np.split(np.arange(len(index)), breaks):
        if len(part):
            archive.add(solution=texts[part], objective=objective[part], measures=measures[part], id=ids[part],
                        iteration=iterations[part])
    if len(archive) != len(texts):
        raise ValueError("the saved elites do not fill distinct cells of this archive")
    total = np.asarray(state["objective_sum"], dtype=archive.dtypes["objective"])
    # pyribs keeps QD score as a running sum (0.12: _objective_sum); summing the elites
    # again can differ in the last bit, so the saved sum is put back when possible.
    if len(texts) and hasattr(archive, "_objective_sum") and hasattr(archive, "_stats_update"):
        archive._stats_update(total, int(index[np.argmax(objective)]))
