"""Reading a run directory's plain files: the one run reader of every analysis module.

``plot``, ``report``, ``compare``, ``human_eval`` and the rewrites plugin's ``tta`` read
runs through here, from ``config.yaml``, ``elites.jsonl``, ``metrics.jsonl`` and
``history.jsonl``, never from the checkpoint, so that any finished, interrupted or copied
run can be read without the engine.

A measure in ``config.yaml`` has either ``edges`` (bin boundaries of a value in
[0, 1], possibly non-uniform) or ``categories`` (one name per cell: cell ``k`` holds
category ``k``); a ``kind: categorical`` judge without ``categories`` names its cells
by its labels, as :func:`qdaif.domain.domain_from_config` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import RunDirError
from qdaif.run_dir import CONFIG, ELITES, HISTORY, METRICS, RunDir, read_jsonl

__all__ = ["Axis", "RunData", "axes_from_config", "read_jsonl", "quality_grid", "load_run", "as_run", "drawable"]


@dataclasses.dataclass(frozen=True)
class Axis:
    """One measure of an archive, as it is drawn and labelled.

    Exactly one of ``edges`` and ``categories`` is set.

    Attributes:
        name: The measure's name (its judge's name).
        label: Axis label for plots.
        edges: Bin boundaries, shape ``(bins + 1,)``, increasing; None for a categorical axis.
        categories: One name per bin; None for a numeric axis.
        labels: The judge's label words, stripped (e.g. ``("positive", "negative")``).
    """

    name: str
    label: str
    edges: tuple[float, ...] | None = None
    categories: tuple[str, ...] | None = None
    labels: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.categories is not None

    @property
    def bins(self) -> int:
        return len(self.categories) if self.categories is not None else len(self.edges) - 1

    def bin_names(self) -> list[str]:
        """Returns one readable name per bin: the category, or ``[lo, hi)`` of the edges."""
        if self.categories is not None:
            return list(self.categories)
        e = self.edges
        return [f"[{e[k]:g}, {e[k + 1]:g}{']' if k == len(e) - 2 else ')'}" for k in range(len(e) - 1)]

    def edge_labels(self) -> list[str]:
        """Returns the edges as short strings, shape ``(bins + 1,)``; empty for a categorical axis."""
        return [] if self.edges is None else [f"{e:g}" for e in self.edges]


def axes_from_config(config: Mapping[str, Any], *, where: str = CONFIG) -> list[Axis]:
    """Reads the measures of a run's resolved config.

    Args:
        config: The run's config (``config.yaml`` as a mapping).
        where: Names the source in error messages.

    Returns:
        One :class:`Axis` per measure, in cell-index order.

    Raises:
        RunDirError: The config has no ``domain.measures``, or a measure has neither (or
            both) ``edges`` and ``categories``, or invalid ones.
    """
    measures = (config.get("domain") or {}).get("measures") if isinstance(config, Mapping) else None
    if not measures:
        raise RunDirError(f"{where} has no domain.measures; is this a qdaif run directory?")
    axes = []
    for i, m in enumerate(measures):
        at = f"{where}: domain.measures[{i}]"
        if not isinstance(m, Mapping) or not m.get("name"):
            raise RunDirError(f"{at} has no name")
        if m.get("kind") == "categorical" and m.get("categories") is None and m.get("edges") is None and m.get("labels"):
            # A categorical judge without categories: names its bins by its labels, as the run did.
            m = {**m, "categories": [str(x).strip() for x in m["labels"]]}
        has_edges, has_cats = m.get("edges") is not None, m.get("categories") is not None
        if has_edges == has_cats:
            raise RunDirError(f"{at} ({m['name']}) needs exactly one of 'edges' and 'categories'")
        labels = tuple(str(x).strip() for x in (m.get("labels") or ()))
        label = str(m.get("axis_label") or m["name"])
        if has_cats:
            cats = tuple(str(c) for c in m["categories"])
            if not cats or len(set(cats)) != len(cats):
                raise RunDirError(f"{at}.categories must be distinct names, got {list(cats)}")
            axes.append(Axis(name=str(m["name"]), label=label, categories=cats, labels=labels))
            continue
        try:
            edges = np.asarray(m["edges"], dtype=float)
        except (TypeError, ValueError):
            raise RunDirError(f"{at}.edges must be numbers") from None
        if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
            raise RunDirError(f"{at}.edges must be an increasing list of at least 2 numbers")
        axes.append(Axis(name=str(m["name"]), label=label, edges=tuple(edges.tolist()), labels=labels))
    return axes


def quality_grid(rows: Sequence[Mapping[str, Any]], dims: Sequence[int]) -> np.ndarray:
    """Returns the best quality per cell of ``rows`` (elites or history rows).

    Args:
        rows: Mappings with ``cell`` (one bin index per measure) and ``quality``.
        dims: Bins per measure.

    Returns:
        Array of shape ``dims``, NaN where no row falls.
    """
    grid = np.full(tuple(dims), np.nan)
    for r in rows:
        c = tuple(r["cell"])
        q = float(r["quality"])
        if not q <= grid[c]:  # also true where grid is NaN
            grid[c] = q
    return grid


@dataclasses.dataclass
class RunData:
    """The plain files of one run directory, read once.

    Attributes:
        path: The run directory.
        config: ``config.yaml`` as a dict.
        axes: One :class:`Axis` per measure.
        elites: Rows of ``elites.jsonl``.
        metrics: Rows of ``metrics.jsonl``.
        history: Rows of ``history.jsonl``.
    """

    path: Path
    config: dict[str, Any]
    axes: list[Axis]
    elites: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    history: list[dict[str, Any]]

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(a.bins for a in self.axes)

    @property
    def cells(self) -> int:
        return int(np.prod(self.dims))

    @property
    def domain_name(self) -> str:
        return str((self.config.get("domain") or {}).get("name") or self.path.name)

    def grid(self) -> np.ndarray:
        """Elite quality per cell, shape ``dims``, NaN where empty."""
        return quality_grid(self.elites, self.dims)

    def summary(self) -> dict[str, float]:
        """QD score (sum of elite qualities), coverage, best quality and elite count of ``elites.jsonl``."""
        q = [float(e["quality"]) for e in self.elites]
        return {
            "qd_score": float(sum(q)),
            "coverage": len(q) / self.cells,
            "max_quality": max(q) if q else float("nan"),
            "num_elites": len(q),
        }


def _check_cells(rows: list[dict[str, Any]], dims: tuple[int, ...], path: Path) -> None:
    for n, r in enumerate(rows, 1):
        c = r.get("cell")
        if (not isinstance(c, list) or len(c) != len(dims)
                or not all(isinstance(k, int) and 0 <= k < d for k, d in zip(c, dims))
                or not isinstance(r.get("quality"), (int, float))):
            raise RunDirError(f"{path} row {n}: cell {c!r} does not fit the archive's bins {list(dims)} "
                              "or the row has no numeric quality")


def load_run(path: str | Path) -> RunData:
    """Reads a run directory's config and JSONL files.

    Args:
        path: A qdaif run directory.

    Returns:
        The run's data.

    Raises:
        RunDirError: ``path`` is missing, has no ``config.yaml`` or ``elites.jsonl``, or a
            file is damaged or does not fit the config's measures.
    """
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"run directory {str(p)!r} does not exist")
    if not (p / CONFIG).is_file():
        raise RunDirError(f"{str(p)!r} is not a qdaif run directory (no {CONFIG})")
    if not (p / ELITES).is_file():
        raise RunDirError(f"{str(p)!r} has no {ELITES} yet: the run has not finished an iteration")
    config = RunDir(p).read_config()
    axes = axes_from_config(config, where=str(p / CONFIG))
    run = RunData(path=p, config=config, axes=axes, elites=read_jsonl(p / ELITES),
                  metrics=read_jsonl(p / METRICS), history=read_jsonl(p / HISTORY))
    _check_cells(run.elites, run.dims, p / ELITES)
    _check_cells(run.history, run.dims, p / HISTORY)
    return run


def as_run(run: RunData | str | Path) -> RunData:
    """Returns ``run`` if it is loaded, else loads the run directory it names (see :func:`load_run`)."""
    return run if isinstance(run, RunData) else load_run(run)


# ------------------------------------------------------------------ drawing
def drawable(run: RunData) -> RunData:
    """Returns ``run`` itself if it has 1 or 2 measures, else its projection on the last two.

    A run with more measures (e.g. the rewrites domain: one 2D archive per input text) is
    drawn as the best elite over the leading measures in each cell of the last two; the
    projection's ``config`` gets ``projected_over`` (the leading measures' names).
    """
    if len(run.axes) <= 2:
        return run
    lead = len(run.axes) - 2
    best: dict[tuple, dict[str, Any]] = {}
    for e in run.elites:
        key = tuple(e["cell"][lead:])
        if key not in best or e["quality"] > best[key]["quality"]:
            best[key] = e

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        m = row.get("measures")
        return {**row, "cell": list(row["cell"][lead:]), "measures": list(m[lead:]) if isinstance(m, list) else m}

    config = {**run.config, "projected_over": [a.name for a in run.axes[:lead]]}
    return dataclasses.replace(run, config=config, axes=list(run.axes[lead:]), elites=[cut(e) for e in best.values()],
                               history=[cut(h) for h in run.history])
